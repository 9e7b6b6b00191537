//! The seed's own README steps and paths answer as it describes: its curl bodies unchanged
//! apart from real ids and tokens, its audit service's `POST /logs` and
//! `GET /logs/user/{userId}`, and its notification service's `POST /notify`.

use escrow_tests::spawn_app;
use reqwest::StatusCode;
use serde_json::json;

use crate::contracts::expect;

#[tokio::test]
async fn the_seed_readme_steps_and_its_audit_and_notify_paths_answer() {
    let app = spawn_app().await;
    // 1. and 2. of the seed's "Testing the API": register and log in.
    let email = format!("u{}@example.com", uuid::Uuid::new_v4().simple());
    let registered = app
        .post(
            "/auth/register",
            None,
            json!({"email": email, "password": "password123"}),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{:?}",
        registered.body
    );
    let login = app
        .post(
            "/auth/login",
            None,
            json!({"email": email, "password": "password123"}),
        )
        .await;
    let token = login.str("access_token");
    let me = login.body["user"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let seller = app.user().await;
    // 3. Create a contract, with the seed's body.
    let contract = app
        .post(
            "/contracts",
            Some(&token),
            json!({"sellerId": seller.id, "buyerId": me, "title": "Web Development Contract", "amount": 1000.00}),
        )
        .await;
    assert_eq!(contract.status, StatusCode::CREATED, "{:?}", contract.body);
    // 4. Check the wallet balance; 5. make a deposit.
    let wallet = app.get(&format!("/wallets/{me}"), Some(&token)).await;
    assert_eq!(wallet.str("balance"), "0.00");
    let deposit = app
        .post(
            "/wallets/deposit",
            Some(&token),
            json!({"userId": me, "amount": 500.00, "description": "Initial deposit"}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::CREATED, "{:?}", deposit.body);

    // The audit service: an application's own entry, then the user's activity.
    let logged = app
        .post(
            "/logs",
            Some(&token),
            json!({"action": "contract.viewed", "resource": "contract", "resourceId": contract.str("id"), "details": {"via": "web"}}),
        )
        .await;
    assert_eq!(logged.status, StatusCode::CREATED, "{:?}", logged.body);
    assert_eq!(
        (
            logged.str("userId"),
            logged.str("recordedBy"),
            logged.str("action")
        ),
        (me.clone(), me.clone(), "contract.viewed".to_owned())
    );
    let trail = app.get(&format!("/logs/user/{me}"), Some(&token)).await;
    assert_eq!(trail.status, StatusCode::OK, "{:?}", trail.body);
    let newest = &trail.body["items"][0];
    assert_eq!(newest["type"], "ActivityRecorded", "{:?}", trail.body);
    assert_eq!(newest["data"]["details"], json!({"via": "web"}));
    assert_eq!(newest["actor"], json!(me));
    assert!(
        newest["hash"].as_str().is_some_and(|h| h.len() == 64),
        "hash-chained"
    );
    let same = app
        .get(&format!("/audit/logs/user/{me}"), Some(&token))
        .await;
    assert_eq!(same.body, trail.body, "the seed's path is an alias");

    // Bounds and who may record what; each refusal writes nothing.
    let before = app.event_count().await;
    for (body, status, code) in [
        (
            json!({"action": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_TEXT",
        ),
        (
            json!({"action": "a".repeat(101)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_TEXT",
        ),
        (
            json!({"action": "x", "details": {"blob": "b".repeat(4_100)}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_DETAILS",
        ),
        (
            json!({"action": "x", "extra": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_BODY",
        ),
        (
            json!({"action": "x", "details": {"k": "a\u{0}b"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_DETAILS",
        ),
        (
            json!({"action": "x", "details": "text"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_BODY",
        ),
        (
            json!({"action": "x", "userId": seller.id}),
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
        ),
    ] {
        expect(
            &app.post("/logs", Some(&token), body.clone()).await,
            status,
            code,
            &body.to_string(),
        );
    }
    assert_eq!(app.event_count().await, before, "refusals write nothing");
    let admin = app.grant(&app.user().await, "admin").await;
    let by_admin = app
        .post(
            "/logs",
            Some(&admin.token),
            json!({"action": "account.reviewed", "userId": seller.id}),
        )
        .await;
    assert_eq!(by_admin.status, StatusCode::CREATED, "{:?}", by_admin.body);
    assert_eq!(by_admin.str("recordedBy"), admin.id);
    expect(
        &app.post(
            "/logs",
            Some(&admin.token),
            json!({"action": "x", "userId": uuid::Uuid::now_v7()}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "USER_NOT_FOUND",
        "an unknown user",
    );

    // The notification service's path.
    let notified = app
        .post(
            "/notify",
            Some(&admin.token),
            json!({"userId": me, "type": "maintenance", "message": "back soon"}),
        )
        .await;
    assert_eq!(notified.status, StatusCode::ACCEPTED, "{:?}", notified.body);
    expect(
        &app.post(
            "/notify",
            Some(&token),
            json!({"userId": me, "type": "x", "message": "y"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "a user notifies",
    );
}
