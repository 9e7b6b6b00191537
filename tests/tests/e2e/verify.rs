//! `escrow verify` catches tampered events, deleted events and wrong read models.

use std::time::Duration;

use escrow_tests::spawn_app;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn verify_passes_on_a_real_workload_and_names_every_tampering() {
    let app = spawn_app().await;
    let (a, b) = (app.user().await, app.user().await);
    assert_eq!(app.deposit(&a, "500").await.status, StatusCode::CREATED);
    assert_eq!(
        app.transfer(&a, &b.id, "20").await.status,
        StatusCode::CREATED
    );
    let c = app
        .post(
            "/contracts",
            Some(&a.token),
            json!({"sellerId": b.id, "buyerId": a.id, "title": "t", "amount": "100"}),
        )
        .await;
    let id = c.str("id");
    let f = app
        .request(
            reqwest::Method::POST,
            &format!("/contracts/{id}/fund"),
            Some(&a.token),
            None,
            &[],
        )
        .await;
    assert_eq!(f.status, StatusCode::OK);
    let r = app
        .request(
            reqwest::Method::POST,
            &format!("/contracts/{id}/release"),
            Some(&a.token),
            Some(&json!({"amount": "30"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(app.wait_for_read_models(Duration::from_secs(20)).await);

    let report = api::verify::verify(&app.pool).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert!(report.events >= 10 && report.lagging.is_empty());
    assert_eq!(
        report.totals.get("USD").copied(),
        Some(rust_decimal::Decimal::ZERO)
    );

    // A wrong read model.
    sqlx::query("UPDATE rm_wallets SET balance = balance + 1 WHERE user_id = $1::uuid")
        .bind(&b.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let report = api::verify::verify(&app.pool).await.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("read model differs") && p.contains("wallet-")),
        "{:?}",
        report.problems
    );
    sqlx::query("UPDATE rm_wallets SET balance = balance - 1 WHERE user_id = $1::uuid")
        .bind(&b.id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(api::verify::verify(&app.pool).await.unwrap().ok());

    // An edited event: someone turns the 500.00 deposit into 5000.00.
    let (stream, version, position): (String, i64, i64) = sqlx::query_as(
        "SELECT stream_id, version, position FROM events WHERE event_type = 'FundsDeposited'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE events SET data = jsonb_set(data, '{amount}', '\"5000.00\"') WHERE position = $1",
    )
    .bind(position)
    .execute(&app.pool)
    .await
    .unwrap();
    let report = api::verify::verify(&app.pool).await.unwrap();
    let named = format!("hash chain broken in {stream} at version {version} (position {position})");
    assert!(
        report.problems.iter().any(|p| p.starts_with(&named)),
        "{named} in {:?}",
        report.problems
    );
    // A deposit posts to the wallet and to the world, so the books still balance; the chain
    // and the read-model comparison are what give the edit away.
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("read model differs")),
        "{:?}",
        report.problems
    );

    // Putting the original back restores the chain: the hash covers the content.
    sqlx::query(
        "UPDATE events SET data = jsonb_set(data, '{amount}', '\"500.00\"') WHERE position = $1",
    )
    .bind(position)
    .execute(&app.pool)
    .await
    .unwrap();
    assert!(api::verify::verify(&app.pool).await.unwrap().ok());

    // A deleted event.
    let (stream2, version2): (String, i64) =
        sqlx::query_as("SELECT stream_id, version FROM events WHERE event_type = 'TransferSent'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    sqlx::query("DELETE FROM events WHERE event_type = 'TransferSent'")
        .execute(&app.pool)
        .await
        .unwrap();
    let report = api::verify::verify(&app.pool).await.unwrap();
    let named = format!("hash chain broken in {stream2} at version {version2}");
    assert!(
        report.problems.iter().any(|p| p.starts_with(&named)),
        "{named} in {:?}",
        report.problems
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("conservation broken in USD")),
        "{:?}",
        report.problems
    );
}

/// Appends `event` to `stream` through the event store, hash chain and all: a forgery
/// that only the books, not the chain, can give away.
async fn forge(pool: &sqlx::PgPool, stream: &str, event: &domain::Event) {
    let (expected_version,): (i64,) =
        sqlx::query_as("SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1")
            .bind(stream)
            .fetch_one(pool)
            .await
            .unwrap();
    let (event_type, schema_version, data) = domain::codec::encode(event);
    let store = event_store::EventStore::new(pool.clone());
    let mut tx = store.begin().await.unwrap();
    event_store::append(
        &mut tx,
        &[event_store::StreamAppend {
            stream_id: stream.into(),
            expected_version,
            events: vec![event_store::NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: event_type.into(),
                schema_version,
                data,
                metadata: json!({"actor": "forger"}),
            }],
        }],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

fn problems_with(report: &api::verify::VerifyReport, needle: &str) -> bool {
    report.problems.iter().any(|p| p.contains(needle))
}

/// `verify` names a contract's and a dispute's read model that drifted, a wallet below
/// zero, an escrow account that differs from its contract's held amount, and a deleted
/// last event — each on a store whose hash chains are intact.
#[tokio::test]
async fn verify_names_drifted_escrow_models_negative_wallets_and_deleted_last_events() {
    let app = spawn_app().await;
    let (buyer, seller) = (app.user().await, app.user().await);
    assert_eq!(app.deposit(&buyer, "100").await.status, StatusCode::CREATED);
    let c = app
        .post(
            "/contracts",
            Some(&buyer.token),
            json!({"sellerId": seller.id, "buyerId": buyer.id, "title": "t", "amount": "40"}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED);
    let contract = c.str("id");
    let f = app
        .request(
            reqwest::Method::POST,
            &format!("/contracts/{contract}/fund"),
            Some(&buyer.token),
            None,
            &[],
        )
        .await;
    assert_eq!(f.status, StatusCode::OK);
    let d = app
        .post(
            "/disputes",
            Some(&buyer.token),
            json!({"contractId": contract, "description": "late"}),
        )
        .await;
    assert_eq!(d.status, StatusCode::CREATED);
    let dispute = d.str("id");
    assert!(app.wait_for_read_models(Duration::from_secs(20)).await);
    assert!(api::verify::verify(&app.pool).await.unwrap().ok());

    // Read models that drifted from the events.
    for (sql, undo, stream) in [
        (
            "UPDATE rm_contracts SET status = 'COMPLETED' WHERE id = $1::uuid",
            "UPDATE rm_contracts SET status = 'DISPUTED' WHERE id = $1::uuid",
            format!("contract-{contract}"),
        ),
        (
            "UPDATE rm_disputes SET status = 'RESOLVED' WHERE id = $1::uuid",
            "UPDATE rm_disputes SET status = 'OPEN' WHERE id = $1::uuid",
            format!("dispute-{dispute}"),
        ),
    ] {
        let id = stream.split_once('-').unwrap().1.to_owned();
        sqlx::query(sql).bind(&id).execute(&app.pool).await.unwrap();
        let report = api::verify::verify(&app.pool).await.unwrap();
        assert!(
            problems_with(
                &report,
                &format!("read model differs from events for {stream}")
            ),
            "{:?}",
            report.problems
        );
        sqlx::query(undo)
            .bind(&id)
            .execute(&app.pool)
            .await
            .unwrap();
        assert!(api::verify::verify(&app.pool).await.unwrap().ok());
    }

    let wallet_of = |u: &escrow_tests::TestUser| {
        domain::WalletId::of(
            domain::UserId(uuid::Uuid::parse_str(&u.id).unwrap()),
            domain::Currency::USD,
        )
    };
    let usd = |s: &str| domain::Amount::parse(s, domain::Currency::USD).unwrap();

    // The seller's wallet paid from the contract's escrow without the contract knowing:
    // the books balance (escrow −10, wallet +10), the escrow account does not.
    let seller_wallet = wallet_of(&seller);
    forge(
        &app.pool,
        &format!("wallet-{}", seller_wallet.0),
        &domain::Event::EscrowPaymentReceived {
            transaction_id: domain::TransactionId::new_v7(),
            contract_id: domain::ContractId(uuid::Uuid::parse_str(&contract).unwrap()),
            amount: usd("10"),
        },
    )
    .await;
    let report = api::verify::verify(&app.pool).await.unwrap();
    assert!(
        problems_with(
            &report,
            &format!("contract-{contract}: escrow account holds 30.00 but the contract says 40.00")
        ),
        "{:?}",
        report.problems
    );
    assert!(
        !problems_with(&report, "hash chain"),
        "{:?}",
        report.problems
    );

    // A withdrawal the seller's wallet could not afford (10.00 of it).
    forge(
        &app.pool,
        &format!("wallet-{}", seller_wallet.0),
        &domain::Event::FundsWithdrawn {
            transaction_id: domain::TransactionId::new_v7(),
            amount: usd("25"),
            description: None,
        },
    )
    .await;
    let report = api::verify::verify(&app.pool).await.unwrap();
    assert!(
        problems_with(
            &report,
            &format!("wallet {} (USD) is negative: -15", seller_wallet.0)
        ),
        "{:?}",
        report.problems
    );
    assert!(
        !problems_with(&report, "hash chain"),
        "{:?}",
        report.problems
    );

    // The buyer's last event (projected before the forgeries) deleted: the chain of what
    // is left is intact.
    let buyer_stream = format!("wallet-{}", wallet_of(&buyer).0);
    let (last,): (i64,) =
        sqlx::query_as("DELETE FROM events WHERE stream_id = $1 AND version = (SELECT max(version) FROM events WHERE stream_id = $1) RETURNING version")
            .bind(&buyer_stream)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let report = api::verify::verify(&app.pool).await.unwrap();
    assert!(
        problems_with(
            &report,
            &format!(
                "{buyer_stream}: the read models applied version {last} but the store ends at version {}",
                last - 1
            )
        ),
        "{:?}",
        report.problems
    );
    assert!(
        !problems_with(&report, &format!("hash chain broken in {buyer_stream}")),
        "{:?}",
        report.problems
    );
}
