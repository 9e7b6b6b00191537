//! Platform fees end to end: an admin's schedule, the terms a contract copies, fees on
//! partial and automatic payments, prepaid buyer fees returned with refunds, split fees
//! through a dispute, the revenue account and its withdrawals, bad input, and `verify`
//! naming a tampered fee posting.

use std::time::Duration;

use escrow_tests::{spawn_app, TestApp, TestUser};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::contracts::{act, assert_conserved, create, expect, funded_pair, pos};

async fn set_schedule(app: &TestApp, admin: &TestUser, body: Value) -> escrow_tests::Resp {
    app.request(
        Method::PUT,
        "/admin/fee-schedule",
        Some(&admin.token),
        Some(&body),
        &[],
    )
    .await
}

async fn balance(app: &TestApp, u: &TestUser, position: i64) -> (String, String) {
    let w = app
        .get(
            &format!("/wallets/{}?minPosition={position}", u.id),
            Some(&u.token),
        )
        .await;
    (w.str("balance"), w.str("heldInEscrow"))
}

/// The kinds and amounts of a user's history, oldest first (a party's history shows every
/// movement of its contracts).
async fn history(app: &TestApp, u: &TestUser, position: i64) -> Vec<(String, String)> {
    let h = app
        .get(
            &format!("/wallets/{}/transactions?minPosition={position}", u.id),
            Some(&u.token),
        )
        .await;
    let mut rows: Vec<(String, String)> = h.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["type"].as_str().unwrap_or("").to_owned(),
                t["amount"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    rows.reverse();
    rows
}

#[tokio::test]
async fn a_seller_fee_comes_out_of_every_payment_into_revenue_an_admin_withdraws() {
    let app = spawn_app().await;
    let admin = app.grant(&app.user().await, "admin").await;
    let (buyer, seller) = funded_pair(&app, "1000").await;
    let set = set_schedule(
        &app,
        &admin,
        json!({"currency": "USD", "percentBps": 250, "payer": "SELLER"}),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.body);
    assert_eq!(
        (set.body["percentBps"].clone(), set.str("payer")),
        (json!(250), "SELLER".to_owned())
    );
    let listed = app
        .get(
            &format!("/admin/fee-schedule?minPosition={}", pos(&set)),
            Some(&admin.token),
        )
        .await;
    assert_eq!(listed.body[0]["currency"], "USD", "{:?}", listed.body);
    assert_eq!(listed.body[0]["percentBps"], 250);

    let c = create(&app, &buyer, &buyer, &seller, "1000", json!({})).await;
    assert_eq!(c.status, StatusCode::CREATED, "{:?}", c.body);
    assert_eq!(
        c.body["fee"],
        json!({"percentBps": 250, "minimum": null, "maximum": null, "payer": "SELLER"})
    );
    assert_eq!(c.str("feeCharged"), "0.00");
    let id = c.str("id");
    // A later schedule never alters an existing contract.
    let raised = set_schedule(
        &app,
        &admin,
        json!({"currency": "USD", "percentBps": 1000, "payer": "BUYER"}),
    )
    .await;
    assert_eq!(raised.status, StatusCode::OK);

    let funded = act(&app, &buyer, &id, "fund", None).await;
    assert_eq!(funded.status, StatusCode::OK, "{:?}", funded.body);
    assert_eq!(
        balance(&app, &buyer, pos(&funded)).await,
        ("0.00".into(), "1000.00".into()),
        "the seller's fee costs the buyer nothing"
    );
    let part = act(&app, &buyer, &id, "release", Some(json!({"amount": "400"}))).await;
    assert_eq!(part.status, StatusCode::OK, "{:?}", part.body);
    assert_eq!(part.str("feeCharged"), "10.00");
    let rest = act(&app, &buyer, &id, "release", None).await;
    assert_eq!(rest.str("status"), "COMPLETED");
    assert_eq!(rest.str("feeCharged"), "25.00");
    let p = pos(&rest);
    assert_eq!(balance(&app, &seller, p).await.0, "975.00");
    assert_eq!(
        history(&app, &seller, p).await,
        vec![
            ("ESCROW_HOLD".into(), "1000.00".into()),
            ("PAYMENT".into(), "400.00".into()),
            ("FEE".into(), "10.00".into()),
            ("PAYMENT".into(), "600.00".into()),
            ("FEE".into(), "15.00".into()),
        ]
    );
    let read = app
        .get(
            &format!("/contracts/{id}?minPosition={p}"),
            Some(&seller.token),
        )
        .await;
    assert_eq!(read.str("feeCharged"), "25.00");
    assert_eq!(read.body["fee"]["percentBps"], 250, "the copied terms");

    let revenue = app
        .get(
            &format!("/platform/revenue?minPosition={p}"),
            Some(&admin.token),
        )
        .await;
    assert_eq!(
        revenue.body,
        json!([{"currency": "USD", "balance": "25.00"}])
    );
    let moves = app
        .get("/platform/revenue/transactions", Some(&admin.token))
        .await;
    let kinds: Vec<(&str, &str)> = moves.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["type"].as_str().unwrap_or(""),
                t["amount"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(kinds, vec![("FEE", "15.00"), ("FEE", "10.00")]);
    assert_eq!(moves.body["items"][0]["contractId"], json!(id));

    let before = app.event_count().await;
    expect(
        &app.post(
            "/platform/revenue/withdraw",
            Some(&admin.token),
            json!({"amount": "25.01", "currency": "USD"}),
        )
        .await,
        StatusCode::CONFLICT,
        "INSUFFICIENT_FUNDS",
        "more than the revenue",
    );
    expect(
        &app.post(
            "/platform/revenue/withdraw",
            Some(&seller.token),
            json!({"amount": "1"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "a user withdraws revenue",
    );
    assert_eq!(app.event_count().await, before, "refusals write nothing");
    let out = app
        .post(
            "/platform/revenue/withdraw",
            Some(&admin.token),
            json!({"amount": "25", "currency": "USD"}),
        )
        .await;
    assert_eq!(out.status, StatusCode::CREATED, "{:?}", out.body);
    assert_eq!(
        (out.str("amount"), out.str("balance")),
        ("25.00".into(), "0.00".into())
    );
    assert_conserved(&app).await;
    let report = api::verify::verify(&app.pool).await.expect("verify runs");
    assert!(report.ok(), "{:?}", report.problems);
}

#[tokio::test]
async fn a_buyer_fee_is_prepaid_and_returned_with_a_refund_and_a_split_fee_settles_in_a_dispute() {
    let app = spawn_app().await;
    let admin = app.grant(&app.user().await, "admin").await;
    let arbiter = app.grant(&app.user().await, "arbiter").await;
    let (buyer, seller) = funded_pair(&app, "1025").await;
    let set = set_schedule(
        &app,
        &admin,
        json!({"currency": "USD", "percentBps": 250, "minimum": "1.00", "maximum": 100, "payer": "BUYER"}),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.body);
    let id = create(&app, &buyer, &buyer, &seller, "1000", json!({}))
        .await
        .str("id");
    let funded = act(&app, &buyer, &id, "fund", None).await;
    assert_eq!(funded.status, StatusCode::OK, "{:?}", funded.body);
    assert_eq!(
        balance(&app, &buyer, pos(&funded)).await,
        ("0.00".into(), "1025.00".into()),
        "price and prepaid fee are held"
    );
    let refunded = act(&app, &seller, &id, "refund", Some(json!({"amount": "500"}))).await;
    assert_eq!(refunded.status, StatusCode::OK, "{:?}", refunded.body);
    let released = act(&app, &buyer, &id, "release", None).await;
    assert_eq!(released.str("feeCharged"), "12.50");
    let p = pos(&released);
    assert_eq!(
        balance(&app, &buyer, p).await,
        ("512.50".into(), "0.00".into())
    );
    assert_eq!(
        balance(&app, &seller, p).await.0,
        "500.00",
        "the seller pays nothing"
    );
    assert_eq!(
        history(&app, &buyer, p).await[1..],
        [
            ("ESCROW_HOLD".into(), "1000.00".into()),
            ("FEE".into(), "25.00".into()),
            ("REFUND".into(), "500.00".into()),
            ("FEE_REFUND".into(), "12.50".into()),
            ("PAYMENT".into(), "500.00".into()),
        ]
    );

    // A split fee on 1.00: 2.5 % is 0.025, rounded half-up to 0.03; the buyer prepays 0.01,
    // the seller's payment carries 0.02.
    let set = set_schedule(
        &app,
        &admin,
        json!({"currency": "USD", "percentBps": 250, "payer": "SPLIT"}),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK);
    let small = create(&app, &buyer, &buyer, &seller, "1", json!({}))
        .await
        .str("id");
    assert_eq!(
        act(&app, &buyer, &small, "fund", None).await.status,
        StatusCode::OK
    );
    let d = app
        .post(
            "/disputes",
            Some(&buyer.token),
            json!({"contractId": small, "description": "late"}),
        )
        .await;
    assert_eq!(d.status, StatusCode::CREATED, "{:?}", d.body);
    let r = app
        .request(
            Method::PUT,
            &format!("/disputes/{}/resolve", d.str("id")),
            Some(&arbiter.token),
            Some(&json!({"resolution": "delivered", "outcome": "RELEASE"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let p = pos(&r);
    assert_eq!(
        balance(&app, &buyer, p).await,
        ("511.49".into(), "0.00".into())
    );
    assert_eq!(balance(&app, &seller, p).await.0, "500.98");
    let revenue = app
        .get(
            &format!("/platform/revenue?minPosition={p}"),
            Some(&admin.token),
        )
        .await;
    assert_eq!(
        revenue.body,
        json!([{"currency": "USD", "balance": "12.53"}])
    );
    assert_conserved(&app).await;
    let report = api::verify::verify(&app.pool).await.expect("verify runs");
    assert!(report.ok(), "{:?}", report.problems);
}

#[tokio::test]
async fn a_bad_schedule_or_withdrawal_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    let admin = app.grant(&app.user().await, "admin").await;
    let user = app.user().await;
    let before = app.event_count().await;
    let ok = json!({"currency": "USD", "percentBps": 250, "payer": "SELLER"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    for (body, status, code) in [
        (
            with("percentBps", json!(-1)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_BODY",
        ),
        (
            with("percentBps", json!(5001)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_FEE_SCHEDULE",
        ),
        (
            with("percentBps", json!(12.5)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_BODY",
        ),
        (
            with("payer", json!("PLATFORM")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_FEE_SCHEDULE",
        ),
        (
            with("currency", json!("XXX")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNKNOWN_CURRENCY",
        ),
        (
            with("minimum", json!("1.001")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AMOUNT_TOO_PRECISE",
        ),
        (
            json!({"currency": "USD", "percentBps": 250, "payer": "SELLER", "minimum": "5", "maximum": "4.99"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_FEE_SCHEDULE",
        ),
    ] {
        expect(
            &set_schedule(&app, &admin, body.clone()).await,
            status,
            code,
            &body.to_string(),
        );
    }
    expect(
        &set_schedule(&app, &user, ok.clone()).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "a user sets the schedule",
    );
    for path in [
        "/admin/fee-schedule",
        "/platform/revenue",
        "/platform/revenue/transactions",
    ] {
        expect(
            &app.get(path, Some(&user.token)).await,
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            path,
        );
    }
    for (body, code) in [
        (json!({"amount": "1.001"}), "AMOUNT_TOO_PRECISE"),
        (json!({"amount": "-1"}), "AMOUNT_NOT_POSITIVE"),
        (
            json!({"amount": "1", "currency": "XXX"}),
            "UNKNOWN_CURRENCY",
        ),
    ] {
        expect(
            &app.post(
                "/platform/revenue/withdraw",
                Some(&admin.token),
                body.clone(),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            &body.to_string(),
        );
    }
    assert_eq!(app.event_count().await, before, "nothing written");
    let none = app.get("/platform/revenue", Some(&admin.token)).await;
    assert_eq!(none.body, json!([]), "no revenue yet");
}

/// `verify` names a tampered fee posting: the revenue stream's chain, and the contract
/// whose fees no longer match what was collected.
///
/// Fails without the fee comparison in `verify` (seen: only the hash chain was named, not
/// the contract whose fee was changed).
#[tokio::test]
async fn verify_names_a_tampered_fee_posting() {
    let app = spawn_app().await;
    let admin = app.grant(&app.user().await, "admin").await;
    let (buyer, seller) = funded_pair(&app, "100").await;
    assert_eq!(
        set_schedule(
            &app,
            &admin,
            json!({"currency": "USD", "percentBps": 500, "payer": "SELLER"}),
        )
        .await
        .status,
        StatusCode::OK
    );
    let id = create(&app, &buyer, &buyer, &seller, "100", json!({}))
        .await
        .str("id");
    assert_eq!(
        act(&app, &buyer, &id, "fund", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        act(&app, &buyer, &id, "release", None).await.status,
        StatusCode::OK
    );
    assert!(app.wait_for_read_models(Duration::from_secs(20)).await);
    assert!(api::verify::verify(&app.pool).await.expect("verify").ok());

    sqlx::query(
        "UPDATE events SET data = jsonb_set(data, '{amount}', '\"1.00\"') WHERE event_type = 'FeeCollected'",
    )
    .execute(&app.pool)
    .await
    .expect("tampered");
    let report = api::verify::verify(&app.pool).await.expect("verify");
    let contract = format!("contract-{id}: the fee postings into revenue");
    for named in ["hash chain broken in revenue-", contract.as_str()] {
        assert!(
            report.problems.iter().any(|p| p.starts_with(named)),
            "{named} in {:?}",
            report.problems
        );
    }
}

/// The system's automatic release pays the seller less the seller's fee, as the buyer's
/// release does.
#[tokio::test]
async fn an_automatic_release_charges_the_fee() {
    let clock = std::sync::Arc::new(api::clock::ManualClock::default());
    let app = escrow_tests::spawn_app_with(escrow_tests::AppOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    let admin = app.grant(&app.user().await, "admin").await;
    let (buyer, seller) = funded_pair(&app, "200").await;
    assert_eq!(
        set_schedule(
            &app,
            &admin,
            json!({"currency": "USD", "percentBps": 100, "minimum": "3", "payer": "SELLER"}),
        )
        .await
        .status,
        StatusCode::OK
    );
    let id = create(
        &app,
        &buyer,
        &buyer,
        &seller,
        "200",
        json!({"inspectionPeriodHours": 1}),
    )
    .await
    .str("id");
    assert_eq!(
        act(&app, &buyer, &id, "fund", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        act(&app, &seller, &id, "deliver", None).await.status,
        StatusCode::OK
    );
    clock.advance(chrono::Duration::hours(1) + chrono::Duration::seconds(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let c = app
            .get(&format!("/contracts/{id}"), Some(&seller.token))
            .await;
        if c.str("status") == "COMPLETED" {
            // 1 % of 200 is 2.00, below the 3.00 minimum.
            assert_eq!(c.str("feeCharged"), "3.00");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "released by itself");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app.wait_for_read_models(Duration::from_secs(20)).await);
    assert_eq!(balance(&app, &seller, 0).await.0, "197.00");
    assert_conserved(&app).await;
}
