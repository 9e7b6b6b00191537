//! The audit trail per role: a user's events, a contract's history, the admin log.

use escrow_tests::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn types(r: &escrow_tests::Resp) -> Vec<String> {
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap().to_owned())
        .collect()
}

/// `seller` drafts a contract of `amount` with `buyer`, who funds it and disputes it; the
/// arbiter refunds it. The contract's and the dispute's ids.
async fn disputed_and_refunded(
    app: &escrow_tests::TestApp,
    buyer: &escrow_tests::TestUser,
    seller: &escrow_tests::TestUser,
    arbiter: &escrow_tests::TestUser,
    amount: &str,
) -> (String, String) {
    let c = app
        .post(
            "/contracts",
            Some(&seller.token),
            json!({"sellerId": seller.id, "buyerId": buyer.id, "title": "t", "amount": amount}),
        )
        .await;
    let id = c.str("id");
    let funded = app
        .request(
            Method::POST,
            &format!("/contracts/{id}/fund"),
            Some(&buyer.token),
            None,
            &[],
        )
        .await;
    assert_eq!(funded.status, StatusCode::OK);
    let x = app
        .post(
            "/disputes",
            Some(&buyer.token),
            json!({"contractId": id, "description": "late"}),
        )
        .await;
    let r = app
        .request(
            Method::PUT,
            &format!("/disputes/{}/resolve", x.str("id")),
            Some(&arbiter.token),
            Some(&json!({"resolution": "ok", "outcome": "REFUND"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    (id, x.str("id"))
}

#[tokio::test]
async fn audit_queries_per_role() {
    let app = spawn_app().await;
    let (a, b, stranger) = (app.user().await, app.user().await, app.user().await);
    let arbiter = app.grant(&app.user().await, "arbiter").await;
    let admin = app.grant(&app.user().await, "admin").await;
    app.deposit(&a, "300").await;
    app.transfer(&a, &b.id, "10").await;
    let (id, _) = disputed_and_refunded(&app, &a, &b, &arbiter, "100").await;
    assert!(
        app.wait_for_read_models(std::time::Duration::from_secs(10))
            .await
    );

    // The user's own trail: actor or party.
    let mine = app
        .get(&format!("/audit/logs/user/{}", a.id), Some(&a.token))
        .await;
    assert_eq!(mine.status, StatusCode::OK);
    let t = types(&mine);
    for expected in [
        "UserRegistered",
        "WalletOpened",
        "FundsDeposited",
        "TransferSent",
        "ContractCreated",
        "ContractFunded",
        "EscrowHeld",
        "DisputeRaised",
        "DisputeResolved",
        "ContractSettled",
        "EscrowRefundReceived",
    ] {
        assert!(t.contains(&expected.to_owned()), "{expected} in {t:?}");
    }
    // Exactly the events of the streams the read models say are A's (its own, its
    // wallets', its contracts' and their disputes'), and those it caused: the party index
    // the trigger keeps agrees with them.
    let expected: Vec<i64> = sqlx::query_scalar(
        "SELECT position FROM events WHERE stream_id IN ( \
           SELECT 'user-' || $1::text UNION ALL \
           SELECT 'wallet-' || id FROM rm_wallets WHERE user_id = $1 UNION ALL \
           SELECT 'contract-' || id FROM rm_contracts WHERE buyer_id = $1 OR seller_id = $1 \
           UNION ALL \
           SELECT 'dispute-' || id FROM rm_disputes WHERE buyer_id = $1 OR seller_id = $1) \
         OR metadata->>'actor' = $1::text ORDER BY position DESC",
    )
    .bind(uuid::Uuid::parse_str(&a.id).unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let listed: Vec<i64> = mine.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["position"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, expected);
    // B's trail has the transfer it received, not A's deposit.
    let theirs = types(
        &app.get(&format!("/audit/logs/user/{}", b.id), Some(&b.token))
            .await,
    );
    assert!(
        theirs.contains(&"TransferReceived".to_owned())
            && !theirs.contains(&"FundsDeposited".to_owned()),
        "{theirs:?}"
    );
    let first = &mine.body["items"][0];
    for k in [
        "position",
        "eventId",
        "streamId",
        "version",
        "type",
        "schemaVersion",
        "actor",
        "correlationId",
        "data",
        "recordedAt",
        "hash",
    ] {
        assert!(first.get(k).is_some(), "entry field {k}");
    }
    assert_eq!(first["hash"].as_str().unwrap().len(), 64);
    let positions: Vec<i64> = mine.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] > w[1]), "newest first");
    let resolved = mine.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == json!("DisputeResolved"))
        .unwrap();
    assert_eq!(
        resolved["actor"],
        json!(arbiter.id),
        "who: the arbiter, from the JWT"
    );

    assert_eq!(
        app.get(&format!("/audit/logs/user/{}", a.id), Some(&b.token))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&format!("/audit/logs/user/{}", a.id), Some(&arbiter.token))
            .await
            .status,
        StatusCode::OK
    );
    let paged = app
        .get(
            &format!("/audit/logs/user/{}?limit=3", a.id),
            Some(&a.token),
        )
        .await;
    assert_eq!(paged.body["items"].as_array().unwrap().len(), 3);
    let next = app
        .get(
            &format!(
                "/audit/logs/user/{}?limit=3&cursor={}",
                a.id,
                paged.str("nextCursor")
            ),
            Some(&a.token),
        )
        .await;
    assert_eq!(
        next.body["items"][0]["position"],
        mine.body["items"][3]["position"]
    );
    let bad = app
        .get(
            &format!("/audit/logs/user/{}?cursor=12", a.id),
            Some(&a.token),
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "INVALID_CURSOR")
    );

    // The contract's history: its stream and its dispute's, in order. Within one command's
    // transaction, streams are written in name order (contract-… before dispute-…).
    let h = app
        .get(&format!("/contracts/{id}/history"), Some(&b.token))
        .await;
    assert_eq!(
        types(&h),
        vec![
            "ContractCreated",
            "ContractFunded",
            "ContractDisputed",
            "DisputeRaised",
            "ContractSettled",
            "DisputeResolved"
        ]
    );
    assert_eq!(
        app.get(&format!("/contracts/{id}/history"), Some(&arbiter.token))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/contracts/{id}/history"), Some(&stranger.token))
            .await
            .code(),
        "CONTRACT_NOT_FOUND"
    );

    // The admin's log with filters.
    assert_eq!(
        app.get("/audit/logs", Some(&arbiter.token)).await.status,
        StatusCode::FORBIDDEN
    );
    let deposits = app
        .get("/audit/logs?type=FundsDeposited", Some(&admin.token))
        .await;
    assert_eq!(types(&deposits), vec!["FundsDeposited"]);
    let by_actor = app
        .get(
            &format!("/audit/logs?actor={}", arbiter.id),
            Some(&admin.token),
        )
        .await;
    assert!(
        types(&by_actor).iter().all(|t| [
            "DisputeResolved",
            "ContractSettled",
            "EscrowRefundReceived"
        ]
        .contains(&t.as_str())),
        "{:?}",
        types(&by_actor)
    );
    let stream = app
        .get(
            &format!("/audit/logs?stream=contract-{id}"),
            Some(&admin.token),
        )
        .await;
    assert_eq!(stream.body["items"].as_array().unwrap().len(), 4);
    let future = app
        .get("/audit/logs?from=2999-01-01T00:00:00Z", Some(&admin.token))
        .await;
    assert_eq!(future.body["items"], json!([]));
    let past: Value = app
        .get("/audit/logs?to=2000-01-01T00:00:00Z", Some(&admin.token))
        .await
        .body;
    assert_eq!(past["items"], json!([]));
    let unknown = app
        .get(
            &format!("/audit/logs?stream=wallet-{}", uuid::Uuid::nil()),
            Some(&admin.token),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "STREAM_NOT_FOUND")
    );
    for bad in ["from=yesterday", "type=a%20b", "limit=0", "colour=red"] {
        let r = app
            .get(&format!("/audit/logs?{bad}"), Some(&admin.token))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
    }
}

/// Every read accepts `minPosition`, the audit reads too: a user's trail (whose streams
/// come from the read models) waits for them and says `fresh`; a contract's history and
/// the admin log are read from the store and are fresh at any position. A position that
/// is not a non-negative integer is refused with 400.
#[tokio::test]
async fn audit_reads_accept_min_position() {
    let app = spawn_app().await;
    let (a, b) = (app.user().await, app.user().await);
    let admin = app.grant(&app.user().await, "admin").await;
    app.deposit(&a, "50").await;
    let c = app
        .post(
            "/contracts",
            Some(&b.token),
            json!({"sellerId": b.id, "buyerId": a.id, "title": "t", "amount": "20"}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED);
    let at = c.body["position"]
        .as_i64()
        .expect("commands answer their position");
    let id = c.str("id");
    for (path, token) in [
        (format!("/audit/logs/user/{}", a.id), &a.token),
        (format!("/contracts/{id}/history"), &a.token),
        ("/audit/logs".to_owned(), &admin.token),
    ] {
        let r = app
            .get(&format!("{path}?minPosition={at}"), Some(token))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
        assert_eq!(r.headers["x-read-consistency"], "fresh", "{path}");
        assert!(
            types(&r).iter().any(|t| t == "ContractCreated"),
            "{path}: {:?}",
            types(&r)
        );
        let bad = app
            .get(&format!("{path}?minPosition=-1"), Some(token))
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{path}");
    }
}

/// A store written before the party index gets it from the index's migration: its
/// backfill, run over the events, gives exactly the rows the trigger wrote as they were
/// appended (contracts' buyer and seller, disputes' the same as their contract's).
#[tokio::test]
async fn the_party_index_backfill_equals_what_the_trigger_wrote() {
    let app = spawn_app().await;
    let (a, b) = (app.user().await, app.user().await);
    let arbiter = app.grant(&app.user().await, "arbiter").await;
    app.deposit(&a, "100").await;
    disputed_and_refunded(&app, &a, &b, &arbiter, "10").await;
    for _ in 0..2 {
        let c = app
            .post(
                "/contracts",
                Some(&b.token),
                json!({"sellerId": b.id, "buyerId": a.id, "title": "t", "amount": "10"}),
            )
            .await;
        assert_eq!(c.status, StatusCode::CREATED);
    }

    type Rows = (Vec<(String, uuid::Uuid)>, Vec<(uuid::Uuid, i64)>);
    async fn rows(pool: &sqlx::PgPool) -> Rows {
        let parties = sqlx::query_as("SELECT stream_id, party FROM stream_parties ORDER BY 1, 2")
            .fetch_all(pool)
            .await
            .unwrap();
        let events = sqlx::query_as("SELECT party, position FROM party_events ORDER BY 1, 2")
            .fetch_all(pool)
            .await
            .unwrap();
        (parties, events)
    }
    let written = rows(&app.pool).await;
    // Three contracts and a dispute, two parties each; every event of theirs twice.
    assert_eq!(written.0.len(), 8, "{:?}", written.0);
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM events WHERE starts_with(stream_id, 'contract-') \
         OR starts_with(stream_id, 'dispute-')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(written.1.len() as i64, 2 * n);

    sqlx::query("TRUNCATE party_events, stream_parties")
        .execute(&app.pool)
        .await
        .unwrap();
    let migration = include_str!("../../../migrations/20261207000013_party_index.sql");
    let backfill = migration
        .split_once("-- The store as it stands")
        .and_then(|(_, rest)| rest.split_once("CREATE TRIGGER"))
        .map(|(b, _)| b)
        .expect("the migration's backfill section");
    for statement in backfill.split(';') {
        if let Some(at) = statement.find("INSERT") {
            sqlx::query(&statement[at..])
                .execute(&app.pool)
                .await
                .unwrap();
        }
    }
    assert_eq!(rows(&app.pool).await, written);
}
