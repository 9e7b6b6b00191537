//! Hostile input: the authorization matrix, rate limits, and secrets that must never leak.

use escrow_tests::{spawn_app, spawn_app_with, AppOptions, Resp, TestApp, TestUser};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct Cast {
    buyer: TestUser,
    seller: TestUser,
    stranger: TestUser,
    arbiter: TestUser,
    admin: TestUser,
    contract: String,
    draft: String,
    dispute: String,
}

async fn cast(app: &TestApp) -> Cast {
    let (buyer, seller, stranger) = (app.user().await, app.user().await, app.user().await);
    let arbiter = app.grant(&app.user().await, "arbiter").await;
    let admin = app.grant(&app.user().await, "admin").await;
    app.deposit(&buyer, "1000").await;
    let new_contract = |title: &str| json!({"sellerId": seller.id, "buyerId": buyer.id, "title": title, "amount": "10"});
    let contract = app
        .post("/contracts", Some(&buyer.token), new_contract("disputed"))
        .await
        .str("id");
    app.request(
        Method::POST,
        &format!("/contracts/{contract}/fund"),
        Some(&buyer.token),
        None,
        &[],
    )
    .await;
    let dispute = app
        .post(
            "/disputes",
            Some(&buyer.token),
            json!({"contractId": contract, "description": "x"}),
        )
        .await
        .str("id");
    let draft = app
        .post("/contracts", Some(&buyer.token), new_contract("draft"))
        .await
        .str("id");
    assert!(
        app.wait_for_read_models(std::time::Duration::from_secs(10))
            .await
    );
    Cast {
        buyer,
        seller,
        stranger,
        arbiter,
        admin,
        contract,
        draft,
        dispute,
    }
}

/// Every endpoint × {anonymous, stranger, buyer, seller, arbiter, admin} → the status a
/// caller gets, from one table. Requests are chosen so the role is the only variable:
/// bodies are valid, and commands that would change state for an allowed role are aimed
/// where the rule under test decides (e.g. funding an already-funded contract is 409 for
/// the buyer and 403 for everyone else).
#[tokio::test]
async fn authorization_matrix() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let (b, s) = (c.buyer.id.clone(), c.seller.id.clone());
    type Row = (Method, String, Option<Value>, [u16; 6]);
    // Columns: anonymous, stranger, buyer, seller, arbiter, admin.
    let rows: Vec<Row> = vec![
        (
            Method::GET,
            "/health".into(),
            None,
            [200, 200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            "/openapi.json".into(),
            None,
            [200, 200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            "/users/me".into(),
            None,
            [401, 200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/users/{b}"),
            None,
            [401, 403, 200, 403, 200, 200],
        ),
        (
            Method::POST,
            format!("/admin/users/{b}/reactivate"),
            None,
            [401, 403, 403, 403, 403, 409],
        ),
        (
            Method::POST,
            format!("/admin/users/{}/suspend", uuid::Uuid::now_v7()),
            Some(json!({"reason": "fraud"})),
            [401, 403, 403, 403, 403, 404],
        ),
        (
            Method::GET,
            format!("/wallets/{b}"),
            None,
            [401, 403, 200, 403, 200, 200],
        ),
        (
            Method::GET,
            format!("/wallets/{b}/transactions"),
            None,
            [401, 403, 200, 403, 200, 200],
        ),
        (
            Method::POST,
            "/wallets/withdraw".into(),
            Some(json!({"userId": b, "amount": "100000"})),
            [401, 403, 409, 403, 403, 409],
        ),
        (
            Method::POST,
            "/transfers".into(),
            Some(json!({"toUserId": b, "amount": "1"})),
            [401, 409, 422, 409, 409, 409],
        ),
        (
            Method::GET,
            format!("/contracts/{}", c.contract),
            None,
            [401, 404, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/contracts/user/{s}"),
            None,
            [401, 403, 403, 200, 200, 200],
        ),
        (
            Method::POST,
            format!("/contracts/{}/fund", c.contract),
            None,
            [401, 403, 409, 403, 403, 403],
        ),
        (
            Method::POST,
            format!("/contracts/{}/deliver", c.contract),
            None,
            [401, 403, 403, 409, 403, 403],
        ),
        (
            Method::POST,
            format!("/contracts/{}/release", c.contract),
            None,
            [401, 403, 409, 403, 403, 403],
        ),
        (
            Method::POST,
            format!("/contracts/{}/refund", c.contract),
            None,
            [401, 403, 403, 409, 403, 403],
        ),
        (
            Method::POST,
            format!("/contracts/{}/cancel", c.contract),
            None,
            [401, 403, 409, 409, 403, 403],
        ),
        (
            Method::GET,
            format!("/contracts/{}/history", c.contract),
            None,
            [401, 404, 200, 200, 200, 200],
        ),
        (
            Method::POST,
            "/disputes".into(),
            Some(json!({"contractId": c.draft, "description": "d"})),
            [401, 403, 409, 409, 403, 403],
        ),
        (
            Method::GET,
            format!("/disputes/{}", c.dispute),
            None,
            [401, 404, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            "/disputes?status=OPEN".into(),
            None,
            [401, 200, 200, 200, 200, 200],
        ),
        (
            Method::PUT,
            format!("/disputes/{}/resolve", c.dispute),
            Some(
                json!({"resolution": "r", "outcome": "SPLIT", "sellerAmount": "1", "buyerAmount": "1"}),
            ),
            [401, 403, 403, 403, 422, 422],
        ),
        (
            Method::GET,
            format!("/audit/logs/user/{b}"),
            None,
            [401, 403, 200, 403, 200, 200],
        ),
        (
            Method::GET,
            "/audit/logs".into(),
            None,
            [401, 403, 403, 403, 403, 200],
        ),
        (
            Method::POST,
            "/notifications".into(),
            Some(json!({"userId": b, "type": "t", "message": "m"})),
            [401, 403, 403, 403, 403, 202],
        ),
    ];
    let callers: [Option<&TestUser>; 6] = [
        None,
        Some(&c.stranger),
        Some(&c.buyer),
        Some(&c.seller),
        Some(&c.arbiter),
        Some(&c.admin),
    ];
    let names = [
        "anonymous",
        "stranger",
        "buyer",
        "seller",
        "arbiter",
        "admin",
    ];
    let mut failures = Vec::new();
    for (method, path, body, expected) in &rows {
        for (i, caller) in callers.iter().enumerate() {
            let r: Resp = app
                .request(
                    method.clone(),
                    path,
                    caller.map(|u| u.token.as_str()),
                    body.as_ref(),
                    &[],
                )
                .await;
            if r.status.as_u16() != expected[i] {
                failures.push(format!(
                    "{method} {path} as {}: {} (expected {}) {}",
                    names[i],
                    r.status,
                    expected[i],
                    r.code()
                ));
            }
            if !r.status.is_success() {
                assert_eq!(
                    r.headers["content-type"], "application/problem+json",
                    "{method} {path}"
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Two processes with a budget of 4 requests a minute per user: kept by each, a user
/// alternating between them gets 8; shared through PostgreSQL (`RATE_LIMITS_SHARED`), 4 and
/// then 429 with `Retry-After`, from either process (fails with each process keeping its
/// own budget: seen, 8 of 8 allowed).
#[tokio::test]
async fn shared_rate_limits_hold_across_processes() {
    for shared in [false, true] {
        let one = spawn_app_with(AppOptions {
            rate_limits: Some((0, 4)),
            shared_rate_limits: Some(shared),
            ..Default::default()
        })
        .await;
        let two = spawn_app_with(AppOptions {
            share_with: Some(one.shared()),
            rate_limits: Some((0, 4)),
            shared_rate_limits: Some(shared),
            ..Default::default()
        })
        .await;
        let u = one.user().await;
        let mut answers = Vec::new();
        for n in 0..8 {
            let server = if n % 2 == 0 { &one } else { &two };
            answers.push(server.get("/users/me", Some(&u.token)).await);
        }
        let ok = answers
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .count();
        let statuses: Vec<StatusCode> = answers.iter().map(|r| r.status).collect();
        if shared {
            assert_eq!(ok, 4, "one budget across both processes: {statuses:?}");
            let limited = answers
                .iter()
                .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
                .expect("refused");
            assert_eq!(limited.code(), "RATE_LIMITED");
            let retry: u64 = limited.headers["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
        } else {
            assert_eq!(ok, 8, "each process its own budget: {statuses:?}");
        }
    }
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let app = spawn_app_with(AppOptions {
        rate_limits: Some((0, 5)),
        ..Default::default()
    })
    .await;
    let u = app.user().await;
    assert!(
        app.wait_for_read_models(std::time::Duration::from_secs(10))
            .await
    );
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(app.get(&format!("/wallets/{}", u.id), Some(&u.token)).await);
    }
    let limited: Vec<&Resp> = statuses
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        limited.len() >= 2,
        "{:?}",
        statuses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(limited[0].code(), "RATE_LIMITED");
    let retry: u64 = limited[0].headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    // Another user is not affected.
    let v = app.user().await;
    assert!(
        app.wait_for_read_models(std::time::Duration::from_secs(10))
            .await
    );
    assert_eq!(
        app.get(&format!("/wallets/{}", v.id), Some(&v.token))
            .await
            .status,
        StatusCode::OK
    );

    // The scheme in another case is the same token, and counts against the same budget.
    let w = app.user().await;
    let mut answers = Vec::new();
    for n in 0..8 {
        let scheme = ["bearer", "BEARER", "Bearer"][n % 3];
        let r = app
            .http
            .get(format!("{}/wallets/{}", app.base, w.id))
            .header("authorization", format!("{scheme} {}", w.token))
            .send()
            .await
            .unwrap();
        answers.push(r.status().as_u16());
    }
    assert!(
        answers.iter().filter(|s| **s == 200).count() <= 5 && answers.contains(&429),
        "every spelling of the scheme is counted: {answers:?}"
    );

    let by_ip = spawn_app_with(AppOptions {
        rate_limits: Some((3, 0)),
        ..Default::default()
    })
    .await;
    let codes: Vec<u16> = futures::future::join_all((0..6).map(|_| by_ip.get("/health", None)))
        .await
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    assert!(codes.contains(&429) && codes.contains(&200), "{codes:?}");
}

#[tokio::test]
async fn secrets_never_reach_events_messages_or_error_bodies() {
    let app = spawn_app().await;
    let password = "Very-Secret-Passw0rd-7731";
    let email = format!("s{}@example.com", uuid::Uuid::new_v4().simple());
    app.post(
        "/auth/register",
        None,
        json!({"email": email, "password": password}),
    )
    .await;
    let login = app
        .post(
            "/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await;
    let token = login.str("access_token");
    let wrong = app
        .post(
            "/auth/login",
            None,
            json!({"email": email, "password": format!("{password}x")}),
        )
        .await;
    let bad_body = app
        .raw_post(
            "/auth/login",
            None,
            "application/json",
            format!("{{\"email\": \"{email}\", \"password\": {password}}}").into_bytes(),
        )
        .await;
    let (hash,): (String,) =
        sqlx::query_as("SELECT password_hash FROM credentials WHERE email = $1")
            .bind(&email)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(hash.starts_with("$argon2id$"), "argon2id");
    assert!(
        app.wait_for_read_models(std::time::Duration::from_secs(10))
            .await
    );

    let (events,): (String,) = sqlx::query_as(
        "SELECT coalesce(string_agg(data::text || metadata::text, ' '), '') FROM events",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let mut exported = Vec::new();
    escrow_nats::export(
        &event_store::EventStore::new(app.pool.clone()),
        None,
        &mut exported,
    )
    .await
    .unwrap();
    let published = String::from_utf8(exported).unwrap();
    let bodies = format!("{} {} {}", login.body, wrong.body, bad_body.body);
    for (what, haystack) in [
        ("events", &events),
        ("NATS envelopes", &published),
        ("error bodies", &format!("{} {}", wrong.body, bad_body.body)),
    ] {
        for secret in [
            password,
            hash.as_str(),
            "$argon2",
            escrow_tests::TEST_JWT_SECRET,
            token.as_str(),
        ] {
            assert!(
                !haystack.contains(secret),
                "{what} contain a secret ({})",
                &secret[..8.min(secret.len())]
            );
        }
    }
    assert!(bodies.contains("invalid email or password"));
}

/// A client that trickles its headers (slow-loris) is cut off; an oversized head gets 431.
#[tokio::test]
async fn slow_and_oversized_request_heads_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let addr = app
        .base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    for _ in 0..40 {
        if stream.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(std::time::Duration::from_millis(250), stream.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                closed = true; // the server answered (408) and will close
                break;
            }
            Err(_) => {}
        }
    }
    assert!(closed, "a trickling client was not cut off");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "cut off after {:?}",
        started.elapsed()
    );

    let big = "a".repeat(64 * 1024);
    let r = app
        .http
        .get(format!("{}/health", app.base))
        .header("x-big", big)
        .send()
        .await;
    match r {
        Ok(res) => assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(e) => panic!("expected a 431, got {e}"),
    }
    // Normal requests still work.
    assert_eq!(app.get("/health", None).await.status, StatusCode::OK);
}

/// Behind a trusted reverse proxy each client has its own address budget; from anywhere
/// else, `X-Forwarded-For` buys nothing. (Fails when the header is believed from any peer:
/// seen answering four 200s to one client claiming four addresses.)
#[tokio::test]
async fn per_address_limits_believe_forwarded_addresses_only_from_trusted_proxies() {
    async fn health_from(app: &TestApp, forwarded_for: &str) -> u16 {
        app.http
            .get(format!("{}/health", app.base))
            .header("x-forwarded-for", forwarded_for)
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    }
    // Given a server behind a proxy on loopback, with 3 requests a minute per address
    let proxied = spawn_app_with(AppOptions {
        rate_limits: Some((3, 0)),
        trusted_proxies: vec!["127.0.0.0/8".into()],
        ..Default::default()
    })
    .await;
    // When one client spends its budget
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(health_from(&proxied, "203.0.113.1").await);
    }
    // Then it alone is limited: another client behind the same proxy is not, and a forged
    // entry left of the proxy's own does not change whose budget is spent
    assert_eq!(first, [200, 200, 200, 429], "one client's budget");
    assert_eq!(health_from(&proxied, "203.0.113.2").await, 200);
    assert_eq!(
        health_from(&proxied, "198.51.100.9, 203.0.113.1").await,
        429
    );

    // Given a server that trusts no proxy
    let direct = spawn_app_with(AppOptions {
        rate_limits: Some((3, 0)),
        ..Default::default()
    })
    .await;
    // When a client claims a new address with every request
    let mut codes = Vec::new();
    for i in 0..4 {
        codes.push(health_from(&direct, &format!("203.0.113.{}", 10 + i)).await);
    }
    // Then its own address is counted all the same
    assert_eq!(codes, [200, 200, 200, 429], "the header is ignored");
}
