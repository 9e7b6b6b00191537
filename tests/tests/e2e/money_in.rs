//! Money entering the ledger: who may deposit directly, and pay-ins. Users credit their own wallets as
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

async fn announce(
    app: &TestApp,
    by: &TestUser,
    to: &TestUser,
    reference: &str,
) -> escrow_tests::Resp {
    app.post(
        "/payins",
        Some(&by.token),
        json!({"userId": to.id, "amount": "250.00", "reference": reference, "description": "Card top-up"}),
    )
    .await
}

/// A pay-in: announced by the service (nothing credited), confirmed (a `DEPOSIT`), each
/// step once; a failed one credits nothing; every refusal writes nothing.
#[tokio::test]
async fn a_pay_in_is_credited_when_the_service_confirms_it() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let service = app.grant(&app.user().await, "service").await;

    let before = app.event_count().await;
    for (by, body, status, code) in [
        (
            &alice,
            json!({"userId": alice.id, "amount": "1", "reference": "r"}),
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
        ),
        (
            &service,
            json!({"userId": alice.id, "amount": "1", "reference": " "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_TEXT",
        ),
        (
            &service,
            json!({"userId": alice.id, "amount": "1.234", "reference": "r"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AMOUNT_TOO_PRECISE",
        ),
        (
            &service,
            json!({"userId": alice.id, "amount": "0", "reference": "r"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AMOUNT_NOT_POSITIVE",
        ),
        (
            &service,
            json!({"userId": uuid::Uuid::now_v7(), "amount": "1", "reference": "r"}),
            StatusCode::NOT_FOUND,
            "USER_NOT_FOUND",
        ),
        (
            &service,
            json!({"userId": alice.id, "amount": "1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_BODY",
        ),
    ] {
        let r = app.post("/payins", Some(&by.token), body.clone()).await;
        expect(&r, status, code, &format!("pay-in {body}"));
    }
    assert_eq!(app.event_count().await, before, "no refusal wrote anything");

    let p = announce(&app, &service, &alice, "psp-1").await;
    assert_eq!(p.status, StatusCode::CREATED, "{:?}", p.body);
    assert_eq!(
        (p.str("status"), p.str("amount")),
        ("PENDING".into(), "250.00".into())
    );
    let id = p.str("id");
    let w = app
        .get(&format!("/wallets/{}", alice.id), Some(&alice.token))
        .await;
    assert_eq!(
        w.str("balance"),
        "0.00",
        "nothing credited before the confirmation"
    );
    let dup = announce(&app, &service, &bob, "psp-1").await;
    expect(
        &dup,
        StatusCode::CONFLICT,
        "PAYIN_EXISTS",
        "the same reference again",
    );
    assert!(
        dup.body["detail"].as_str().unwrap_or("").contains(&id),
        "{:?}",
        dup.body
    );

    // The user sees its own pay-in; another user does not.
    assert_eq!(
        app.get(&format!("/payins/{id}"), Some(&alice.token))
            .await
            .str("status"),
        "PENDING"
    );
    expect(
        &app.get(&format!("/payins/{id}"), Some(&bob.token)).await,
        StatusCode::NOT_FOUND,
        "PAYIN_NOT_FOUND",
        "someone else's pay-in",
    );
    expect(
        &app.post(
            &format!("/payins/{id}/confirm"),
            Some(&alice.token),
            json!({}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "a user confirming its own pay-in",
    );

    let confirmed = app
        .post(
            &format!("/payins/{id}/confirm"),
            Some(&service.token),
            json!({}),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{:?}", confirmed.body);
    assert_eq!(confirmed.str("status"), "CONFIRMED");
    let w = app
        .get(&format!("/wallets/{}", alice.id), Some(&alice.token))
        .await;
    assert_eq!(w.str("balance"), "250.00");
    let h = app
        .get(
            &format!("/wallets/{}/transactions", alice.id),
            Some(&alice.token),
        )
        .await;
    assert_eq!(h.body["items"][0]["type"], "DEPOSIT", "{:?}", h.body);
    assert_eq!(h.body["items"][0]["description"], "Card top-up");
    let before = app.event_count().await;
    for (verb, body) in [("confirm", json!({})), ("fail", json!({"reason": "late"}))] {
        expect(
            &app.post(&format!("/payins/{id}/{verb}"), Some(&service.token), body)
                .await,
            StatusCode::CONFLICT,
            "PAYIN_NOT_PENDING",
            &format!("{verb} a confirmed pay-in"),
        );
    }
    assert_eq!(app.event_count().await, before);

    let other = announce(&app, &service, &bob, "psp-2").await.str("id");
    let failed = app
        .post(
            &format!("/payins/{other}/fail"),
            Some(&service.token),
            json!({"reason": "card declined"}),
        )
        .await;
    assert_eq!(
        (failed.str("status"), failed.str("reason")),
        ("FAILED".into(), "card declined".into())
    );
    expect(
        &app.post(
            &format!("/payins/{other}/confirm"),
            Some(&service.token),
            json!({}),
        )
        .await,
        StatusCode::CONFLICT,
        "PAYIN_NOT_PENDING",
        "confirm a failed pay-in",
    );
    let b = app
        .get(&format!("/wallets/{}", bob.id), Some(&bob.token))
        .await;
    assert_eq!(b.str("balance"), "0.00", "nothing credited");

    let all = app
        .get("/payins?status=CONFIRMED", Some(&service.token))
        .await;
    assert_eq!(
        all.body["items"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        all.body
    );
    let mine = app.get("/payins", Some(&bob.token)).await;
    assert_eq!(mine.body["items"][0]["status"], "FAILED", "{:?}", mine.body);
    expect(
        &app.get(&format!("/payins?userId={}", alice.id), Some(&bob.token))
            .await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "listing someone else's pay-ins",
    );
    assert!(api::verify::verify(&app.pool).await.expect("verify").ok());
}

/// Twenty confirmations of one pay-in at once, across two servers: one credits it, the
/// others are refused; the wallet holds the amount once.
///
/// Fails without the pay-in's `PAYIN_NOT_PENDING` check in `domain::payin` (seen: twenty
/// confirmations, twenty credits: each was decided again on the state its predecessor left,
/// and a confirmed pay-in could be confirmed again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_confirmations_credit_a_pay_in_once() {
    let app = spawn_app().await;
    let second = spawn_app_with(AppOptions {
        share_with: Some(app.shared()),
        ..Default::default()
    })
    .await;
    let alice = app.user().await;
    let service = app.grant(&app.user().await, "service").await;
    let id = announce(&app, &service, &alice, "psp-race").await.str("id");
    let path = format!("/payins/{id}/confirm");
    let tries = (0..20).map(|i| {
        let server = if i % 2 == 0 { &app } else { &second };
        server.post(&path, Some(&service.token), json!({}))
    });
    let answers = futures::future::join_all(tries).await;
    let ok = answers
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let refused = answers
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT && r.code() == "PAYIN_NOT_PENDING")
        .count();
    assert_eq!(
        (ok, refused),
        (1, 19),
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let (deposits,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM events WHERE event_type = 'FundsDeposited' AND data->>'channel' = 'PAYIN'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(deposits, 1);
    let w = second
        .get(&format!("/wallets/{}", alice.id), Some(&alice.token))
        .await;
    assert_eq!(w.str("balance"), "250.00");
}
