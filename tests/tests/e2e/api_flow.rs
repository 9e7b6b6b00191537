//! The happy paths of every endpoint, read-your-writes and idempotency.

use std::time::Duration;

use escrow_tests::{spawn_app, Resp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn position(r: &Resp) -> i64 {
    r.body["position"]
        .as_i64()
        .expect("command responses carry position")
}

#[tokio::test]
async fn register_login_deposit_balance_transfer_history() {
    let app = spawn_app().await;
    let health = app.get("/health", None).await;
    assert_eq!(
        (health.status, health.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let ready = app.get("/ready", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.body);

    let reg = app
        .post(
            "/auth/register",
            None,
            json!({"email": "  Alice@Example.COM ", "password": "password123"}),
        )
        .await;
    assert_eq!(reg.status, StatusCode::CREATED);
    assert_eq!(reg.str("email"), "alice@example.com");
    assert_eq!(reg.str("role"), "user");
    assert!(reg.body["createdAt"].as_str().unwrap().ends_with('Z'));
    let alice_id = reg.str("id");

    let login = app
        .post(
            "/auth/login",
            None,
            json!({"email": "alice@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.str("token_type"), "Bearer");
    assert_eq!(login.body["expires_in"], json!(900));
    assert_eq!(login.body["user"]["id"], json!(alice_id));
    let alice = login.str("access_token");

    let me = app
        .get(
            &format!("/users/me?minPosition={}", position(&reg)),
            Some(&alice),
        )
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.headers["x-read-consistency"], "fresh");
    assert_eq!(me.str("email"), "alice@example.com");
    let by_id = app.get(&format!("/users/{alice_id}"), Some(&alice)).await;
    assert_eq!(by_id.body, me.body);

    // The seed's deposit body, with a JSON number.
    let dep = app
        .post(
            "/wallets/deposit",
            Some(&alice),
            json!({"userId": alice_id, "amount": 500.00, "description": "Initial deposit"}),
        )
        .await;
    assert_eq!(dep.status, StatusCode::CREATED, "{:?}", dep.body);
    assert_eq!(dep.str("balance"), "500.00");
    assert_eq!(dep.body["transaction"]["type"], json!("DEPOSIT"));
    assert_eq!(dep.body["transaction"]["amount"], json!("500.00"));
    assert_eq!(
        dep.body["transaction"]["description"],
        json!("Initial deposit")
    );

    let wallet = app
        .get(
            &format!("/wallets/{alice_id}?minPosition={}", position(&dep)),
            Some(&alice),
        )
        .await;
    assert_eq!(wallet.status, StatusCode::OK);
    assert_eq!(wallet.str("balance"), "500.00");
    assert_eq!(wallet.str("currency"), "USD");
    assert_eq!(wallet.str("heldInEscrow"), "0.00");
    assert_eq!(wallet.str("userId"), alice_id);
    assert_eq!(wallet.str("id"), dep.str("walletId"));

    let bob = app.user().await;
    let tr = app
        .post(
            "/transfers",
            Some(&alice),
            json!({"toUserId": bob.id, "amount": "125.25", "description": "logo design"}),
        )
        .await;
    assert_eq!(tr.status, StatusCode::CREATED, "{:?}", tr.body);
    assert_eq!(tr.str("balance"), "374.75");
    let bob_wallet = app
        .get(
            &format!("/wallets/{}?minPosition={}", bob.id, position(&tr)),
            Some(&bob.token),
        )
        .await;
    assert_eq!(bob_wallet.str("balance"), "125.25");

    let wd = app
        .post(
            "/wallets/withdraw",
            Some(&bob.token),
            json!({"userId": bob.id, "amount": "25"}),
        )
        .await;
    assert_eq!(wd.status, StatusCode::CREATED);
    assert_eq!(wd.str("balance"), "100.25");
    assert_eq!(wd.body["transaction"]["type"], json!("WITHDRAWAL"));

    let hist = app
        .get(
            &format!(
                "/wallets/{alice_id}/transactions?minPosition={}",
                position(&tr)
            ),
            Some(&alice),
        )
        .await;
    assert_eq!(hist.status, StatusCode::OK);
    let items = hist.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["type"], json!("TRANSFER"), "newest first");
    assert_eq!(items[0]["amount"], json!("125.25"));
    assert_eq!(items[0]["fromWalletId"], json!(dep.str("walletId")));
    assert_eq!(items[1]["type"], json!("DEPOSIT"));
    assert!(items[1]["fromWalletId"].is_null());
    for key in [
        "id",
        "fromWalletId",
        "toWalletId",
        "amount",
        "type",
        "description",
        "createdAt",
    ] {
        assert!(items[0].get(key).is_some(), "seed field {key} present");
    }
    let bob_hist = app
        .get(
            &format!(
                "/wallets/{}/transactions?minPosition={}",
                bob.id,
                position(&wd)
            ),
            Some(&bob.token),
        )
        .await;
    let kinds: Vec<&Value> = bob_hist.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["type"])
        .collect();
    assert_eq!(kinds, vec![&json!("WITHDRAWAL"), &json!("TRANSFER")]);
}

#[tokio::test]
async fn history_is_cursor_paginated() {
    let app = spawn_app().await;
    let u = app.user().await;
    let mut last = None;
    for i in 1..=5 {
        last = Some(app.deposit(&u, &format!("{i}.00")).await);
    }
    let p = last.unwrap().body["position"].as_i64().unwrap();
    let page1 = app
        .get(
            &format!("/wallets/{}/transactions?limit=2&minPosition={p}", u.id),
            Some(&u.token),
        )
        .await;
    let amounts = |r: &Resp| {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["amount"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(amounts(&page1), vec!["5.00", "4.00"]);
    let c = page1.str("nextCursor");
    let page2 = app
        .get(
            &format!("/wallets/{}/transactions?limit=2&cursor={c}", u.id),
            Some(&u.token),
        )
        .await;
    assert_eq!(amounts(&page2), vec!["3.00", "2.00"]);
    let page3 = app
        .get(
            &format!(
                "/wallets/{}/transactions?limit=2&cursor={}",
                u.id,
                page2.str("nextCursor")
            ),
            Some(&u.token),
        )
        .await;
    assert_eq!(amounts(&page3), vec!["1.00"]);
    assert!(page3.body["nextCursor"].is_null());
}

#[tokio::test]
async fn deposit_in_new_currency_opens_that_wallet() {
    let app = spawn_app().await;
    let u = app.user().await;
    let r = app
        .post(
            "/wallets/deposit",
            Some(&u.token),
            json!({"userId": u.id, "amount": "10.5", "currency": "eur"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(
        (r.str("currency"), r.str("balance")),
        ("EUR".into(), "10.50".into())
    );
    let w = app
        .get(
            &format!(
                "/wallets/{}?currency=EUR&minPosition={}",
                u.id, r.body["position"]
            ),
            Some(&u.token),
        )
        .await;
    assert_eq!(w.str("balance"), "10.50");
    let usd = app.get(&format!("/wallets/{}", u.id), Some(&u.token)).await;
    assert_eq!(usd.str("balance"), "0.00");
    let gbp = app
        .get(&format!("/wallets/{}?currency=GBP", u.id), Some(&u.token))
        .await;
    assert_eq!(
        (gbp.status, gbp.code()),
        (StatusCode::NOT_FOUND, "WALLET_NOT_FOUND")
    );
}

#[tokio::test]
async fn idempotency_key_replays_and_rejects_a_different_body() {
    let app = spawn_app().await;
    let u = app.user().await;
    let body = json!({"userId": u.id, "amount": "40"});
    let key = [("Idempotency-Key", "dep-1")];
    let first = app
        .request(
            Method::POST,
            "/wallets/deposit",
            Some(&u.token),
            Some(&body),
            &key,
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let events = app.event_count().await;
    let again = app
        .request(
            Method::POST,
            "/wallets/deposit",
            Some(&u.token),
            Some(&body),
            &key,
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body, "the stored response is returned");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(
        app.event_count().await,
        events,
        "nothing appended by the replay"
    );

    let other = json!({"userId": u.id, "amount": "41"});
    let mismatch = app
        .request(
            Method::POST,
            "/wallets/deposit",
            Some(&u.token),
            Some(&other),
            &key,
        )
        .await;
    assert_eq!(
        (mismatch.status, mismatch.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
    );
    assert_eq!(app.event_count().await, events);

    // Another user may use the same key: keys are scoped to the caller.
    let v = app.user().await;
    let theirs = app
        .request(
            Method::POST,
            "/wallets/deposit",
            Some(&v.token),
            Some(&json!({"userId": v.id, "amount": "40"})),
            &key,
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert_ne!(
        theirs.body["transaction"]["id"],
        first.body["transaction"]["id"]
    );
}

#[tokio::test]
async fn a_refused_command_does_not_burn_its_idempotency_key() {
    let app = spawn_app().await;
    let u = app.user().await;
    let body = json!({"userId": u.id, "amount": "100"});
    let key = [("Idempotency-Key", "wd-1")];
    let refused = app
        .request(
            Method::POST,
            "/wallets/withdraw",
            Some(&u.token),
            Some(&body),
            &key,
        )
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "INSUFFICIENT_FUNDS")
    );
    assert_eq!(app.deposit(&u, "100").await.status, StatusCode::CREATED);
    let retried = app
        .request(
            Method::POST,
            "/wallets/withdraw",
            Some(&u.token),
            Some(&body),
            &key,
        )
        .await;
    assert_eq!(retried.status, StatusCode::CREATED, "{:?}", retried.body);
    assert_eq!(retried.str("balance"), "0.00");
}

/// Ten requests with one Idempotency-Key at once: one deposit, ten identical answers.
///
/// Fails only when all three key checks are gone: the committer's within a batch
/// (`command-handlers/src/committer/batch.rs`, `keys_in_batch`), the batch statement's `taken` guard
/// (`event-store/src/batch.rs`) and the primary key of `idempotency_keys`. Without the
/// primary key alone, or with the committer's check, it still passes.
#[tokio::test]
async fn concurrent_requests_with_one_key_take_effect_once() {
    let app = spawn_app().await;
    let u = app.user().await;
    let body = json!({"userId": u.id, "amount": "7"});
    let futs = (0..10).map(|_| {
        app.request(
            Method::POST,
            "/wallets/deposit",
            Some(&u.token),
            Some(&body),
            &[("Idempotency-Key", "same")],
        )
    });
    let results = futures::future::join_all(futs).await;
    let ids: std::collections::HashSet<String> = results
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
            r.body["transaction"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one deposit, ten identical answers");
    let p = results[0].body["position"].as_i64().unwrap();
    let w = app
        .get(
            &format!("/wallets/{}?minPosition={p}", u.id),
            Some(&u.token),
        )
        .await;
    assert_eq!(w.str("balance"), "7.00");
}

#[tokio::test]
async fn openapi_document_lists_every_endpoint() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc.body["paths"].as_object().unwrap();
    for p in [
        "/api/v1/health",
        "/api/v1/ready",
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/users/me",
        "/api/v1/users/{id}",
        "/api/v1/wallets/{userId}",
        "/api/v1/wallets/deposit",
        "/api/v1/wallets/withdraw",
        "/api/v1/transfers",
        "/api/v1/wallets/{userId}/transactions",
    ] {
        assert!(paths.contains_key(p), "{p} documented");
    }
}

#[tokio::test]
async fn min_position_not_reached_says_stale() {
    let app = escrow_tests::spawn_app_with(escrow_tests::AppOptions {
        read_wait_ms: Some(300),
        ..Default::default()
    })
    .await;
    let u = app.user().await;
    let r = app
        .get(
            &format!("/wallets/{}?minPosition=999999999", u.id),
            Some(&u.token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-read-consistency"], "stale");
}

/// The statements reads waiting for `minPosition` have run, from the metrics.
async fn read_wait_statements(app: &escrow_tests::TestApp) -> u64 {
    let text = app
        .http
        .get(&app.metrics_url)
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("escrow_read_wait_statements_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("escrow_read_wait_statements_total reported")
}

/// Readers waiting for an event this server committed, while its own worker projects but
/// is held up, wait for the worker's batches rather than polling the database: a projection
/// a few seconds behind once stayed behind because every waiting reader polled ten times a
/// second. They still answer `stale` at the deadline, and `fresh` once the batch lands.
#[tokio::test]
async fn readers_waiting_on_a_held_up_projection_do_not_poll_the_database() {
    let app = escrow_tests::spawn_app_with(escrow_tests::AppOptions {
        read_wait_ms: Some(2_000),
        ..Default::default()
    })
    .await;
    let u = app.user().await;
    let first = app.deposit(&u, "10.00").await;
    let w = app
        .get(
            &format!("/wallets/{}?minPosition={}", u.id, position(&first)),
            Some(&u.token),
        )
        .await;
    assert_eq!(w.headers["x-read-consistency"], "fresh");

    // Hold the projection's checkpoint row: the worker's next batch waits on it.
    let mut hold = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM projection_checkpoints WHERE projection = 'read_models' FOR UPDATE")
        .execute(&mut *hold)
        .await
        .expect("lock the checkpoint");
    let second = app.deposit(&u, "1.00").await;
    let p = position(&second);
    let before = read_wait_statements(&app).await;
    let readers = 8;
    let path = format!("/wallets/{}?minPosition={p}", u.id);
    let reads = (0..readers).map(|_| app.get(&path, Some(&u.token)));
    for r in futures::future::join_all(reads).await {
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["x-read-consistency"], "stale");
        assert_eq!(r.str("balance"), "10.00");
    }
    let statements = read_wait_statements(&app).await - before;
    // One safety poll a second at most; polling backed off to 100 ms asked ~18 times each.
    assert!(
        statements <= 2 * readers,
        "{readers} readers waiting 2 s ran {statements} statements"
    );

    hold.rollback().await.expect("release the checkpoint");
    let w = app
        .get(
            &format!("/wallets/{}?minPosition={p}", u.id),
            Some(&u.token),
        )
        .await;
    assert_eq!(w.headers["x-read-consistency"], "fresh");
    assert_eq!(w.str("balance"), "11.00");
}

#[tokio::test]
async fn admin_may_deposit_for_anyone_and_arbiter_may_read() {
    let app = spawn_app().await;
    let u = app.user().await;
    let staff = app.user().await;
    for (role, deposit_status) in [
        ("admin", StatusCode::CREATED),
        ("arbiter", StatusCode::FORBIDDEN),
    ] {
        let staff_id = uuid::Uuid::parse_str(&staff.id).unwrap();
        let ledger = command_handlers::Ledger::new(event_store::EventStore::new(app.pool.clone()));
        let role = domain::Role::parse(role).unwrap();
        let ctx = command_handlers::CommandContext::internal(command_handlers::Actor::Operator);
        // Staff start as users; an operator grants the role (as `escrow users grant-role` will).
        ledger
            .execute(
                &ctx,
                command_handlers::Command::GrantRole {
                    user_id: domain::UserId(staff_id),
                    role,
                },
            )
            .await
            .unwrap();
        let login = app
            .post(
                "/auth/login",
                None,
                json!({"email": staff.email, "password": "password123"}),
            )
            .await;
        assert_eq!(login.body["user"]["role"], json!(role.as_str()));
        let token = login.str("access_token");
        let read = app.get(&format!("/wallets/{}", u.id), Some(&token)).await;
        assert_eq!(read.status, StatusCode::OK);
        let dep = app
            .post(
                "/wallets/deposit",
                Some(&token),
                json!({"userId": u.id, "amount": "1"}),
            )
            .await;
        assert_eq!(dep.status, deposit_status, "{role:?}: {:?}", dep.body);
    }
}

/// The group committer keeps its connection between batches, and must hand it back when
/// no command comes: an operator command (`escrow users grant-role`) closes its pool when
/// done, which waits for every connection — it once waited forever.
#[tokio::test]
async fn the_committer_hands_its_connection_back_when_idle() {
    let app = spawn_app().await;
    let staff = app.user().await;
    for role in ["arbiter", "admin", "user"] {
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            api::admin::grant_role(&app.db_url, &staff.email, role),
        )
        .await
        .expect("grant-role finished, its pool closed")
        .expect("role granted");
    }
    // A ledger that stays alive: its committer's connection goes back after a second.
    let pool = event_store::connect(
        &app.db_url,
        &event_store::PoolSettings {
            max_connections: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ledger = command_handlers::Ledger::new(event_store::EventStore::new(pool.clone()));
    let ctx = command_handlers::CommandContext::internal(command_handlers::Actor::Operator);
    let staff_id = uuid::Uuid::parse_str(&staff.id).unwrap();
    ledger
        .execute(
            &ctx,
            command_handlers::Command::GrantRole {
                user_id: domain::UserId(staff_id),
                role: domain::Role::Arbiter,
            },
        )
        .await
        .unwrap();
    let conn = tokio::time::timeout(std::time::Duration::from_secs(5), pool.acquire()).await;
    assert!(
        matches!(conn, Ok(Ok(_))),
        "the only connection is still held by an idle committer"
    );
    drop(ledger);
}

/// An idempotency key is remembered for the retention and then forgotten: within it a
/// retry is answered from the record, after it the same key runs the command again (as
/// payment APIs document), and a younger key survives the pruning (fails with the prune's
/// age condition removed: seen, both keys were pruned).
#[tokio::test]
async fn idempotency_keys_expire_after_the_retention() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let deposit = |key: &'static str| {
        let body = json!({"userId": alice.id, "amount": "10"});
        let token = alice.token.clone();
        let app = &app;
        async move {
            app.request(
                reqwest::Method::POST,
                "/wallets/deposit",
                Some(&token),
                Some(&body),
                &[("Idempotency-Key", key)],
            )
            .await
        }
    };
    let old = deposit("old-key").await;
    let young = deposit("young-key").await;
    assert_eq!(
        (old.status, young.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    // The first key's record is eight days old; the retention is seven.
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '8 days' WHERE key = 'old-key'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let pruned = event_store::EventStore::new(app.pool.clone())
        .prune_idempotency_keys(Duration::from_secs(7 * 24 * 3600), 1)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let retried_young = deposit("young-key").await;
    assert_eq!(retried_young.headers["idempotent-replayed"], "true");
    assert_eq!(
        retried_young.body["transaction"]["id"],
        young.body["transaction"]["id"]
    );
    let reused_old = deposit("old-key").await;
    assert_eq!(reused_old.status, StatusCode::CREATED);
    assert!(reused_old.headers.get("idempotent-replayed").is_none());
    assert_ne!(
        reused_old.body["transaction"]["id"],
        old.body["transaction"]["id"]
    );
    assert_eq!(
        reused_old.str("balance"),
        "30.00",
        "the reused key deposited again"
    );
}
