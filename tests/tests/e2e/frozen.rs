//! Frozen wallets end to end: an admin freezes a wallet with a reason; it still receives
//! money but sends none (transfers, withdrawals, fundings: 409 `WALLET_FROZEN`, nothing
//! written) until it is unfrozen; the owner sees `frozen`, admins the reason too.

use escrow_tests::spawn_app;
use reqwest::StatusCode;
use serde_json::json;

use crate::contracts::{act, assert_conserved, create, expect, funded_pair};

#[tokio::test]
async fn a_frozen_wallet_receives_but_sends_nothing_until_unfrozen() {
    let app = spawn_app().await;
    let admin = app.grant(&app.user().await, "admin").await;
    let (alice, bob) = funded_pair(&app, "100").await;
    let draft = create(&app, &alice, &alice, &bob, "10", json!({}))
        .await
        .str("id");
    let path = |verb: &str| format!("/admin/wallets/{}/{verb}", alice.id);

    let before = app.event_count().await;
    for (who, body, status, code) in [
        (
            &alice,
            json!({"reason": "x"}),
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
        ),
        (
            &admin,
            json!({"reason": " "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_TEXT",
        ),
        (
            &admin,
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_BODY",
        ),
        (
            &admin,
            json!({"reason": "x", "currency": "EUR"}),
            StatusCode::NOT_FOUND,
            "WALLET_NOT_FOUND",
        ),
    ] {
        let r = app
            .post(&path("freeze"), Some(&who.token), body.clone())
            .await;
        expect(&r, status, code, &format!("freeze {body}"));
    }
    expect(
        &app.post(&path("unfreeze"), Some(&admin.token), json!({}))
            .await,
        StatusCode::CONFLICT,
        "WALLET_NOT_FROZEN",
        "unfreeze a wallet that is not frozen",
    );
    assert_eq!(app.event_count().await, before, "no refusal wrote anything");

    let frozen = app
        .post(
            &path("freeze"),
            Some(&admin.token),
            json!({"reason": "chargeback review"}),
        )
        .await;
    assert_eq!(frozen.status, StatusCode::OK, "{:?}", frozen.body);
    assert_eq!(frozen.body["frozen"], true);
    assert_eq!(frozen.str("frozenReason"), "chargeback review");
    expect(
        &app.post(
            &path("freeze"),
            Some(&admin.token),
            json!({"reason": "again"}),
        )
        .await,
        StatusCode::CONFLICT,
        "WALLET_ALREADY_FROZEN",
        "freeze twice",
    );

    let before = app.event_count().await;
    let refusals = [
        app.transfer(&alice, &bob.id, "1").await,
        app.post(
            "/wallets/withdraw",
            Some(&alice.token),
            json!({"userId": alice.id, "amount": "1"}),
        )
        .await,
        act(&app, &alice, &draft, "fund", None).await,
    ];
    for (r, what) in refusals.iter().zip(["transfer", "withdraw", "fund"]) {
        expect(r, StatusCode::CONFLICT, "WALLET_FROZEN", what);
    }
    assert_eq!(app.event_count().await, before, "no refusal wrote anything");
    // Money still comes in.
    let paid = app.deposit(&bob, "5").await;
    assert_eq!(paid.status, StatusCode::CREATED);
    assert_eq!(
        app.transfer(&bob, &alice.id, "5").await.status,
        StatusCode::CREATED
    );
    let own = app
        .get(&format!("/wallets/{}", alice.id), Some(&alice.token))
        .await;
    assert_eq!(
        (own.str("balance"), own.body["frozen"].clone()),
        ("105.00".into(), json!(true))
    );
    assert!(
        own.body.get("frozenReason").is_none(),
        "the reason is for admins: {:?}",
        own.body
    );
    let seen = app
        .get(&format!("/wallets/{}", alice.id), Some(&admin.token))
        .await;
    assert_eq!(seen.str("frozenReason"), "chargeback review");

    let unfrozen = app
        .post(&path("unfreeze"), Some(&admin.token), json!({}))
        .await;
    assert_eq!(unfrozen.status, StatusCode::OK, "{:?}", unfrozen.body);
    assert_eq!(unfrozen.body["frozen"], false);
    assert_eq!(
        act(&app, &alice, &draft, "fund", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.transfer(&alice, &bob.id, "1").await.status,
        StatusCode::CREATED
    );
    let own = app
        .get(&format!("/wallets/{}", alice.id), Some(&alice.token))
        .await;
    assert_eq!(own.body["frozen"], false);
    assert_conserved(&app).await;
}
