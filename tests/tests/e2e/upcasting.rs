//! Old events stay readable: a deposit stored as schema version 1 (before `channel`
//! existed) is upcast by every reader — the write side, the projections, verify.

use std::time::Duration;

use escrow_tests::spawn_app;
use event_store::{append, NewEvent, StreamAppend};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_version_1_event_is_read_by_every_reader() {
    let app = spawn_app().await;
    let u = app.user().await;
    let first = app.deposit(&u, "10").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let stream = format!("wallet-{}", first.str("walletId"));
    let (version,): (i64,) = sqlx::query_as("SELECT max(version) FROM events WHERE stream_id = $1")
        .bind(&stream)
        .fetch_one(&app.pool)
        .await
        .unwrap();

    // The JSON exactly as version 1 stored it: no `channel`.
    let store = event_store::EventStore::new(app.pool.clone());
    let mut tx = store.begin().await.unwrap();
    append(
        &mut tx,
        &[StreamAppend {
            stream_id: stream.clone(),
            expected_version: version,
            events: vec![NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: "FundsDeposited".into(),
                schema_version: 1,
                data: json!({"transactionId": uuid::Uuid::now_v7(), "amount": "5.25"}),
                metadata: json!({"actor": "operator", "correlationId": uuid::Uuid::now_v7()}),
            }],
        }],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // The projection (via the relay and JetStream) applies it.
    assert!(app.wait_for_read_models(Duration::from_secs(20)).await);
    let w = app.get(&format!("/wallets/{}", u.id), Some(&u.token)).await;
    assert_eq!(w.str("balance"), "15.25");
    // The write side folds it: a withdrawal of everything succeeds.
    let all = app
        .post(
            "/wallets/withdraw",
            Some(&u.token),
            json!({"userId": u.id, "amount": "15.25"}),
        )
        .await;
    assert_eq!(all.status, StatusCode::CREATED, "{:?}", all.body);
    // Verify decodes and checks it.
    assert!(app.wait_for_read_models(Duration::from_secs(20)).await);
    let report = api::verify::verify(&app.pool).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    // New deposits are written at the current version.
    let (v,): (i32,) = sqlx::query_as(
        "SELECT max(schema_version) FROM events WHERE event_type = 'FundsDeposited'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(v, 2);
}
