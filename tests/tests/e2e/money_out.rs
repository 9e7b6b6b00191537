//! Money leaving the ledger through payouts: the owner asks (the amount waits in the
//! wallet's pending payouts), the marketplace's service completes or fails it.

use escrow_tests::{spawn_app, spawn_app_with, AppOptions, TestApp, TestUser};
use reqwest::StatusCode;
use serde_json::json;

async fn ask(app: &TestApp, who: &TestUser, amount: &str) -> escrow_tests::Resp {
    app.post(
        "/payouts",
        Some(&who.token),
        json!({"amount": amount, "destination": "IBAN DE89 3704 0044 0532 0130 00", "description": "weekly payout"}),
    )
    .await
}

async fn wallet(app: &TestApp, who: &TestUser) -> escrow_tests::Resp {
    app.get(&format!("/wallets/{}", who.id), Some(&who.token))
        .await
}

#[tokio::test]
async fn a_payout_waits_in_pending_then_leaves_or_returns() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let service = app.grant(&app.user().await, "service").await;
    app.deposit(&alice, "100").await;

    // Given 100, when Alice asks for 30, then 30 leaves her available balance at once.
    let first = ask(&app, &alice, "30").await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(first.str("status"), "PENDING");
    assert_eq!(first.str("amount"), "30.00");
    assert_eq!(first.str("userId"), alice.id);
    let w = wallet(&app, &alice).await;
    assert_eq!(
        (w.str("balance"), w.str("pendingPayouts")),
        ("70.00".into(), "30.00".into())
    );
    let history = app
        .get(
            &format!("/wallets/{}/transactions", alice.id),
            Some(&alice.token),
        )
        .await;
    let newest = &history.body["items"][0];
    assert_eq!(newest["type"], "PAYOUT");
    assert_eq!(newest["direction"], "OUT");
    assert_eq!(newest["balanceAfter"], "70.00");
    assert_eq!(newest["id"], first.body["transactionId"]);

    // Who sees it: its owner, the service; anyone else gets 404.
    let id = first.str("id");
    let path = format!("/payouts/{id}");
    assert_eq!(
        app.get(&path, Some(&alice.token)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&path, Some(&service.token)).await.status,
        StatusCode::OK
    );
    let hidden = app.get(&path, Some(&bob.token)).await;
    assert_eq!(
        (hidden.status, hidden.code()),
        (StatusCode::NOT_FOUND, "PAYOUT_NOT_FOUND")
    );

    // Completed by the service: the money has left the ledger.
    let done = app
        .post(
            &format!("{path}/complete"),
            Some(&service.token),
            json!({"providerReference": "po_123"}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    assert_eq!(done.str("status"), "COMPLETED");
    assert_eq!(done.str("providerReference"), "po_123");
    // The completion writes the payout's stream, not Alice's: she reads it at its position.
    let w = app
        .get(
            &format!(
                "/wallets/{}?minPosition={}",
                alice.id, done.body["position"]
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(
        (w.str("balance"), w.str("pendingPayouts")),
        ("70.00".into(), "0.00".into())
    );

    // A second one fails: its amount comes back (a PAYOUT_RETURN in the history).
    let second = ask(&app, &alice, "20").await;
    let failed = app
        .post(
            &format!("/payouts/{}/fail", second.str("id")),
            Some(&service.token),
            json!({"reason": "account closed"}),
        )
        .await;
    assert_eq!(failed.status, StatusCode::OK, "{:?}", failed.body);
    assert_eq!(
        (failed.str("status"), failed.str("reason")),
        ("FAILED".into(), "account closed".into())
    );
    let w = wallet(&app, &alice).await;
    assert_eq!(
        (w.str("balance"), w.str("pendingPayouts")),
        ("70.00".into(), "0.00".into())
    );
    let history = app
        .get(
            &format!("/wallets/{}/transactions", alice.id),
            Some(&alice.token),
        )
        .await;
    let newest = &history.body["items"][0];
    assert_eq!(
        (
            &newest["type"],
            &newest["direction"],
            &newest["balanceAfter"]
        ),
        (&json!("PAYOUT_RETURN"), &json!("IN"), &json!("70.00"))
    );

    // Lists: a user its own (naming another is 403), the service everyone's by status.
    let own = app.get("/payouts", Some(&alice.token)).await;
    assert_eq!(own.body["items"].as_array().map(Vec::len), Some(2));
    let other = app
        .get(&format!("/payouts?userId={}", alice.id), Some(&bob.token))
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    let failed_only = app
        .get("/payouts?status=FAILED", Some(&service.token))
        .await;
    let items = failed_only.body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], second.body["id"]);
    let paged = app.get("/payouts?limit=1", Some(&alice.token)).await;
    let cursor = paged.str("nextCursor");
    let rest = app
        .get(
            &format!("/payouts?limit=1&cursor={cursor}"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(rest.body["items"][0]["id"], first.body["id"]);

    assert!(
        app.wait_for_read_models(std::time::Duration::from_secs(10))
            .await
    );
    let report = api::verify::verify(&app.pool).await.expect("verify runs");
    assert!(report.ok(), "{:?}", report.problems);
}

#[tokio::test]
async fn bad_payouts_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let service = app.grant(&app.user().await, "service").await;
    let admin = app.grant(&app.user().await, "admin").await;
    app.deposit(&alice, "10").await;
    let pending = ask(&app, &alice, "4").await;
    let failed = ask(&app, &alice, "1").await;
    app.post(
        &format!("/payouts/{}/fail", failed.str("id")),
        Some(&service.token),
        json!({"reason": "bounced"}),
    )
    .await;
    let before = app.event_count().await;

    let cases: Vec<(escrow_tests::Resp, StatusCode, &str)> = vec![
        // Above the available balance (10 - 4 pending).
        (
            ask(&app, &alice, "6.01").await,
            StatusCode::CONFLICT,
            "INSUFFICIENT_FUNDS",
        ),
        // A user without a wallet in that currency.
        (
            app.post(
                "/payouts",
                Some(&bob.token),
                json!({"amount": "1", "currency": "EUR", "destination": "x"}),
            )
            .await,
            StatusCode::NOT_FOUND,
            "WALLET_NOT_FOUND",
        ),
        (
            app.post("/payouts", Some(&alice.token), json!({"amount": "1"}))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_BODY",
        ),
        (
            app.post(
                "/payouts",
                Some(&alice.token),
                json!({"amount": "1", "destination": " "}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_TEXT",
        ),
        (
            app.post(
                "/payouts",
                Some(&alice.token),
                json!({"amount": "-1", "destination": "x"}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "AMOUNT_NOT_POSITIVE",
        ),
        // Someone else completing or failing it: only the service role or an admin.
        (
            app.post(
                &format!("/payouts/{}/complete", pending.str("id")),
                Some(&alice.token),
                json!({"providerReference": "x"}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
        ),
        (
            app.post(
                &format!("/payouts/{}/fail", pending.str("id")),
                Some(&bob.token),
                json!({"reason": "x"}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
        ),
        // Completing a failed payout, failing it again.
        (
            app.post(
                &format!("/payouts/{}/complete", failed.str("id")),
                Some(&service.token),
                json!({"providerReference": "x"}),
            )
            .await,
            StatusCode::CONFLICT,
            "PAYOUT_NOT_PENDING",
        ),
        (
            app.post(
                &format!("/payouts/{}/fail", failed.str("id")),
                Some(&admin.token),
                json!({"reason": "x"}),
            )
            .await,
            StatusCode::CONFLICT,
            "PAYOUT_NOT_PENDING",
        ),
        (
            app.post(
                &format!("/payouts/{}/complete", uuid::Uuid::now_v7()),
                Some(&service.token),
                json!({"providerReference": "x"}),
            )
            .await,
            StatusCode::NOT_FOUND,
            "PAYOUT_NOT_FOUND",
        ),
        (
            app.post(
                &format!("/payouts/{}/complete", pending.str("id")),
                Some(&service.token),
                json!({}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_BODY",
        ),
        (
            app.get("/payouts?status=DONE", Some(&service.token)).await,
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_PARAMETER",
        ),
    ];
    for (i, (r, status, code)) in cases.iter().enumerate() {
        assert_eq!(
            (r.status, r.code()),
            (*status, *code),
            "case {i}: {:?}",
            r.body
        );
        assert_eq!(
            r.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "case {i}"
        );
    }
    // A frozen wallet pays nothing out.
    app.post(
        &format!("/admin/wallets/{}/freeze", alice.id),
        Some(&admin.token),
        json!({"reason": "review"}),
    )
    .await;
    let before_frozen = app.event_count().await;
    let frozen = ask(&app, &alice, "1").await;
    assert_eq!(
        (frozen.status, frozen.code()),
        (StatusCode::CONFLICT, "WALLET_FROZEN")
    );
    assert_eq!(app.event_count().await, before_frozen, "nothing written");
    assert_eq!(before + 1, before_frozen, "only the freeze was written");
}

/// Fails without the payout's `PAYOUT_NOT_PENDING` check in `domain::payout` (seen:
/// twenty answers of 200, a completed payout failed again and its amount returned).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_completions_and_failures_settle_a_payout_once() {
    let app = spawn_app().await;
    let second = spawn_app_with(AppOptions {
        share_with: Some(app.shared()),
        ..Default::default()
    })
    .await;
    let alice = app.user().await;
    let service = app.grant(&app.user().await, "service").await;
    app.deposit(&alice, "50").await;
    let id = ask(&app, &alice, "50").await.str("id");
    let tries = (0..20).map(|i| {
        let server = if i % 2 == 0 { &app } else { &second };
        let (verb, body) = if i % 4 < 2 {
            ("complete", json!({"providerReference": format!("po-{i}")}))
        } else {
            ("fail", json!({"reason": format!("try {i}")}))
        };
        let path = format!("/payouts/{id}/{verb}");
        let token = service.token.clone();
        async move { server.post(&path, Some(&token), body).await }
    });
    let answers = futures::future::join_all(tries).await;
    let ok = answers
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let refused = answers
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT && r.code() == "PAYOUT_NOT_PENDING")
        .count();
    assert_eq!(
        (ok, refused),
        (1, 19),
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let (settled,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM events WHERE event_type IN ('PayoutCompleted', 'PayoutFailed', 'PayoutFundsReturned')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    let won = answers
        .iter()
        .find(|r| r.status == StatusCode::OK)
        .expect("one settled it");
    let winner = won.str("status");
    // A completion is one event; a failure two (the payout's and the wallet's).
    assert_eq!(settled, if winner == "COMPLETED" { 1 } else { 2 });
    // The service settled it, not Alice: her read waits for the settlement's position,
    // not only for her own last write.
    let at = won.body["position"]
        .as_i64()
        .expect("commands answer their position");
    let w = second
        .get(
            &format!("/wallets/{}?minPosition={at}", alice.id),
            Some(&alice.token),
        )
        .await;
    let returned = if winner == "COMPLETED" {
        "0.00"
    } else {
        "50.00"
    };
    assert_eq!(
        (w.str("balance"), w.str("pendingPayouts")),
        (returned.into(), "0.00".into())
    );
}
