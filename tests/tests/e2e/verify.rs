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
