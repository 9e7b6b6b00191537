//! Money entering the ledger: who may deposit directly. Users credit their own wallets as
//! the seed does by default; with `SELF_DEPOSITS=false` only the `service` role (the
//! marketplace's backend or payment integration) and admins may, for anyone.

use escrow_tests::{spawn_app, spawn_app_with, AppOptions, TestApp, TestUser};
use reqwest::StatusCode;
use serde_json::json;

use crate::contracts::expect;

async fn deposit(app: &TestApp, by: &TestUser, to: &TestUser, amount: &str) -> escrow_tests::Resp {
    app.post(
        "/wallets/deposit",
        Some(&by.token),
        json!({"userId": to.id, "amount": amount}),
    )
    .await
}

/// The default keeps the seed's deposits; the service role credits anyone but moves no
/// one's money out.
#[tokio::test]
async fn by_default_users_deposit_for_themselves_and_the_service_for_anyone() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let service = app.grant(&app.user().await, "service").await;
    assert_eq!(
        deposit(&app, &alice, &alice, "10").await.status,
        StatusCode::CREATED
    );
    let credited = deposit(&app, &service, &bob, "7.50").await;
    assert_eq!(credited.status, StatusCode::CREATED, "{:?}", credited.body);
    assert_eq!(credited.str("balance"), "7.50");
    let before = app.event_count().await;
    expect(
        &deposit(&app, &alice, &bob, "1").await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "a user crediting someone else",
    );
    let out = app
        .post(
            "/wallets/withdraw",
            Some(&service.token),
            json!({"userId": bob.id, "amount": "1"}),
        )
        .await;
    expect(
        &out,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "the service withdrawing for a user",
    );
    assert_eq!(app.event_count().await, before, "nothing written");
}

/// With `SELF_DEPOSITS=false` a user's own deposit is refused and writes nothing; the
/// service and admins still credit anyone.
///
/// Fails without the `self_deposits` check in the deposit handler (seen: the user's own
/// deposit answered 201).
#[tokio::test]
async fn without_self_deposits_only_the_service_and_admins_credit_wallets() {
    let app = spawn_app_with(AppOptions {
        self_deposits: Some(false),
        ..Default::default()
    })
    .await;
    let alice = app.user().await;
    let service = app.grant(&app.user().await, "service").await;
    let admin = app.grant(&app.user().await, "admin").await;
    let before = app.event_count().await;
    let own = deposit(&app, &alice, &alice, "10").await;
    expect(
        &own,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "a user's own deposit",
    );
    assert!(
        own.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("SELF_DEPOSITS"),
        "{:?}",
        own.body
    );
    assert_eq!(app.event_count().await, before, "nothing written");
    assert_eq!(
        deposit(&app, &service, &alice, "10").await.status,
        StatusCode::CREATED
    );
    let by_admin = deposit(&app, &admin, &alice, "5").await;
    assert_eq!(by_admin.str("balance"), "15.00", "{:?}", by_admin.body);
}
