//! Every bad input gets a 4xx problem+json with a stable code, and writes nothing.

use escrow_tests::{spawn_app, Resp, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn assert_problem(r: &Resp, status: StatusCode, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {:?}", r.body);
    assert_eq!(
        r.headers["content-type"], "application/problem+json",
        "{what}"
    );
    assert_eq!(r.code(), code, "{what}: {:?}", r.body);
    for k in ["type", "title", "status", "detail", "code"] {
        assert!(r.body.get(k).is_some(), "{what}: problem field {k}");
    }
    assert_eq!(r.body["status"], json!(status.as_u16()));
}

async fn unchanged<F: std::future::Future<Output = Resp>>(app: &TestApp, f: F) -> Resp {
    let before = app.event_count().await;
    let r = f.await;
    assert_eq!(
        app.event_count().await,
        before,
        "a refused request appended events: {:?}",
        r.body
    );
    r
}

#[tokio::test]
async fn money_inputs_are_validated() {
    let app = spawn_app().await;
    let u = app.user().await;
    assert_eq!(app.deposit(&u, "100").await.status, StatusCode::CREATED);
    let cases: Vec<(Value, &str)> = vec![
        (json!(0), "AMOUNT_NOT_POSITIVE"),
        (json!("0.00"), "AMOUNT_NOT_POSITIVE"),
        (json!(-5), "AMOUNT_NOT_POSITIVE"),
        (json!("NaN"), "INVALID_AMOUNT"),
        (json!("Infinity"), "INVALID_AMOUNT"),
        (json!("1.001"), "AMOUNT_TOO_PRECISE"),
        (json!(1.001), "AMOUNT_TOO_PRECISE"),
        (json!("1000000000.01"), "AMOUNT_TOO_LARGE"),
        (json!("ten"), "INVALID_AMOUNT"),
        (json!(""), "INVALID_AMOUNT"),
        (json!(null), "INVALID_AMOUNT"),
        (json!(true), "INVALID_AMOUNT"),
        (json!([1]), "INVALID_AMOUNT"),
    ];
    for (amount, code) in cases {
        for path in ["/wallets/deposit", "/wallets/withdraw"] {
            let r = unchanged(
                &app,
                app.post(
                    path,
                    Some(&u.token),
                    json!({"userId": u.id, "amount": amount}),
                ),
            )
            .await;
            assert_problem(
                &r,
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                &format!("{path} amount {amount}"),
            );
        }
        let r = unchanged(
            &app,
            app.post(
                "/transfers",
                Some(&u.token),
                json!({"toUserId": u.id, "amount": amount}),
            ),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "transfer amount {amount}"
        );
    }
    // Exponent syntax far beyond any decimal: refused, not parsed through a float.
    let r = unchanged(
        &app,
        app.raw_post(
            "/wallets/deposit",
            Some(&u.token),
            "application/json",
            format!(r#"{{"userId":"{}","amount":1e400}}"#, u.id).into_bytes(),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_AMOUNT",
        "1e400",
    );
    // Precision survives: a long exact decimal is not rounded through f64.
    let r = unchanged(
        &app,
        app.raw_post(
            "/wallets/deposit",
            Some(&u.token),
            "application/json",
            format!(r#"{{"userId":"{}","amount":0.1000000000000000055}}"#, u.id).into_bytes(),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "AMOUNT_TOO_PRECISE",
        "f64 artefact",
    );

    let r = unchanged(
        &app,
        app.post(
            "/wallets/deposit",
            Some(&u.token),
            json!({"userId": u.id, "amount": "1", "currency": "XYZ"}),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNKNOWN_CURRENCY",
        "currency",
    );
    let r = unchanged(
        &app,
        app.post(
            "/wallets/deposit",
            Some(&u.token),
            json!({"userId": u.id, "amount": "1.5", "currency": "JPY"}),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "AMOUNT_TOO_PRECISE",
        "JPY has no minor units",
    );
    let r = unchanged(
        &app,
        app.post(
            "/wallets/deposit",
            Some(&u.token),
            json!({"userId": u.id, "amount": "1", "description": "x".repeat(501)}),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_DESCRIPTION",
        "description",
    );
}

#[tokio::test]
async fn malformed_bodies_and_fields() {
    let app = spawn_app().await;
    let u = app.user().await;
    let t = Some(u.token.as_str());
    let r = unchanged(
        &app,
        app.raw_post(
            "/wallets/deposit",
            t,
            "application/json",
            b"{\"userId\": ".to_vec(),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "MALFORMED_JSON",
        "truncated JSON",
    );
    let r = unchanged(
        &app,
        app.raw_post("/wallets/deposit", t, "text/plain", b"{}".to_vec()),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
        "content type",
    );
    let r = unchanged(
        &app,
        app.post("/wallets/deposit", t, json!({"amount": "1"})),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_BODY",
        "missing userId",
    );
    let r = unchanged(
        &app,
        app.post("/wallets/deposit", t, json!({"userId": 42, "amount": "1"})),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_BODY",
        "userId of the wrong type",
    );
    let r = unchanged(
        &app,
        app.post(
            "/wallets/deposit",
            t,
            json!({"userId": u.id, "amount": "1", "ammount": "2"}),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_BODY",
        "unknown field",
    );
    let r = unchanged(&app, app.post("/wallets/deposit", t, json!([1, 2]))).await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_BODY",
        "array body",
    );
    let r = unchanged(
        &app,
        app.post(
            "/wallets/deposit",
            t,
            json!({"userId": "not-a-uuid", "amount": "1"}),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_ID",
        "non-UUID userId",
    );
    let r = unchanged(
        &app,
        app.post("/transfers", t, json!({"toUserId": "123", "amount": "1"})),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_ID",
        "non-UUID toUserId",
    );
    let r = app.get("/wallets/not-a-uuid", t).await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "INVALID_ID", "non-UUID path");
    let r = app.get("/users/42", t).await;
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "INVALID_ID",
        "non-UUID user path",
    );
    let r = app.get(&format!("/wallets/{}?currency=ABC", u.id), t).await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNKNOWN_CURRENCY",
        "query currency",
    );
    let r = app
        .get(&format!("/wallets/{}/transactions?limit=1000", u.id), t)
        .await;
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "INVALID_QUERY_PARAMETER",
        "limit",
    );
    let r = app
        .get(&format!("/wallets/{}/transactions?cursor=abc", u.id), t)
        .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "INVALID_CURSOR", "cursor");
    let r = app.get(&format!("/wallets/{}?colour=red", u.id), t).await;
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "UNKNOWN_QUERY_PARAMETER",
        "unknown parameter",
    );
    let r = app.get("/nowhere", t).await;
    assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND", "unknown route");
    let r = app
        .request(Method::DELETE, "/transfers", t, None, &[])
        .await;
    assert_problem(
        &r,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "wrong method",
    );
    let big = format!(
        r#"{{"userId":"{}","amount":"1","description":"{}"}}"#,
        u.id,
        "x".repeat(70 * 1024)
    );
    let r = unchanged(
        &app,
        app.raw_post("/wallets/deposit", t, "application/json", big.into_bytes()),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "BODY_TOO_LARGE",
        "body over the limit",
    );
    let r = unchanged(
        &app,
        app.request(
            Method::POST,
            "/wallets/deposit",
            t,
            Some(&json!({"userId": u.id, "amount": "1"})),
            &[("Idempotency-Key", "")],
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "INVALID_IDEMPOTENCY_KEY",
        "empty key",
    );
}

#[tokio::test]
async fn business_rules() {
    let app = spawn_app().await;
    let a = app.user().await;
    let b = app.user().await;
    assert_eq!(app.deposit(&a, "50").await.status, StatusCode::CREATED);
    let r = unchanged(&app, app.transfer(&a, &b.id, "50.01")).await;
    assert_problem(
        &r,
        StatusCode::CONFLICT,
        "INSUFFICIENT_FUNDS",
        "overdraft by transfer",
    );
    let r = unchanged(
        &app,
        app.post(
            "/wallets/withdraw",
            Some(&a.token),
            json!({"userId": a.id, "amount": "50.01"}),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::CONFLICT,
        "INSUFFICIENT_FUNDS",
        "overdraft by withdrawal",
    );
    let r = unchanged(&app, app.transfer(&a, &a.id, "1")).await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "SELF_TRANSFER",
        "transfer to self",
    );
    let ghost = uuid::Uuid::now_v7().to_string();
    let r = unchanged(&app, app.transfer(&a, &ghost, "1")).await;
    assert_problem(&r, StatusCode::NOT_FOUND, "USER_NOT_FOUND", "unknown payee");
    let r = unchanged(
        &app,
        app.post(
            "/transfers",
            Some(&a.token),
            json!({"toUserId": b.id, "amount": "1", "currency": "EUR"}),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::NOT_FOUND,
        "WALLET_NOT_FOUND",
        "no EUR wallet to pay from",
    );
    let r = unchanged(
        &app,
        app.post(
            "/wallets/deposit",
            Some(&a.token),
            json!({"userId": b.id, "amount": "1"}),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "deposit into another user's wallet",
    );
    let r = unchanged(
        &app,
        app.post(
            "/wallets/withdraw",
            Some(&a.token),
            json!({"userId": b.id, "amount": "1"}),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "withdraw from another user's wallet",
    );
    let r = app.get(&format!("/wallets/{}", b.id), Some(&a.token)).await;
    assert_problem(
        &r,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "read another user's wallet",
    );
    let r = app
        .get(&format!("/wallets/{}/transactions", b.id), Some(&a.token))
        .await;
    assert_problem(
        &r,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "read another user's history",
    );
    let r = app.get(&format!("/users/{}", b.id), Some(&a.token)).await;
    assert_problem(&r, StatusCode::FORBIDDEN, "FORBIDDEN", "read another user");
}

#[tokio::test]
async fn registration_and_login_rules() {
    let app = spawn_app().await;
    let r = unchanged(
        &app,
        app.post(
            "/auth/register",
            None,
            json!({"email": "not-an-email", "password": "password123"}),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_EMAIL",
        "email",
    );
    let r = unchanged(
        &app,
        app.post(
            "/auth/register",
            None,
            json!({"email": "a@example.com", "password": "short"}),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_PASSWORD",
        "short password",
    );
    let r = unchanged(
        &app,
        app.post(
            "/auth/register",
            None,
            json!({"email": "a@example.com", "password": "p".repeat(129)}),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_PASSWORD",
        "long password",
    );
    let r = unchanged(
        &app,
        app.post("/auth/register", None, json!({"email": "a@example.com"})),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_BODY",
        "missing password",
    );
    assert_eq!(
        app.post(
            "/auth/register",
            None,
            json!({"email": "a@example.com", "password": "password123"})
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let r = unchanged(
        &app,
        app.post(
            "/auth/register",
            None,
            json!({"email": " A@EXAMPLE.com", "password": "password456"}),
        ),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::CONFLICT,
        "EMAIL_TAKEN",
        "duplicate email after normalisation",
    );
    let wrong = app
        .post(
            "/auth/login",
            None,
            json!({"email": "a@example.com", "password": "password124"}),
        )
        .await;
    let unknown = app
        .post(
            "/auth/login",
            None,
            json!({"email": "nobody@example.com", "password": "password123"}),
        )
        .await;
    assert_problem(
        &wrong,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "wrong password",
    );
    assert_problem(
        &unknown,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "unknown email",
    );
    assert_eq!(
        wrong.body, unknown.body,
        "the two failures are indistinguishable"
    );
}

/// Registrations of one e-mail at once: one user.
///
/// Fails without `credentials_email_key` (`UNIQUE (email)` on `credentials`, migrations):
/// eight registrations of one e-mail all succeed.
#[tokio::test]
async fn concurrent_duplicate_registrations_create_one_user() {
    let app = spawn_app().await;
    let futs = (0..8).map(|_| {
        app.post(
            "/auth/register",
            None,
            json!({"email": "race@example.com", "password": "password123"}),
        )
    });
    let results = futures::future::join_all(futs).await;
    let created = results
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    let taken = results.iter().filter(|r| r.code() == "EMAIL_TAKEN").count();
    assert_eq!((created, taken), (1, 7));
    let (users,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'UserRegistered'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(users, 1);
}
