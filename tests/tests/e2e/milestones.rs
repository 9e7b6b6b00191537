//! Milestones end to end: a contract paid in stages with a seller fee, every bad input
//! refused without a write, contracts without milestones reading as one, and two servers
//! releasing many contracts' milestones (and expiring drafts) exactly once.

use std::time::Duration;

use escrow_tests::{spawn_app, two_servers_one_clock, Resp, TestApp, TestUser};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::contracts::{act, assert_conserved, create, expect, funded_pair, pos};

async fn on_milestone(app: &TestApp, who: &TestUser, id: &str, n: &str, action: &str) -> Resp {
    app.request(
        Method::POST,
        &format!("/contracts/{id}/milestones/{n}/{action}"),
        Some(&who.token),
        None,
        &[],
    )
    .await
}

async fn create_staged(
    app: &TestApp,
    buyer: &TestUser,
    seller: &TestUser,
    milestones: Value,
    extra: Value,
) -> Resp {
    let mut body = json!({"sellerId": seller.id, "buyerId": buyer.id, "title": "Website", "milestones": milestones});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    app.post("/contracts", Some(&buyer.token), body).await
}

fn statuses(c: &Resp) -> Vec<(String, String)> {
    c.body["milestones"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["status"].as_str().unwrap_or("").to_owned(),
                m["heldAmount"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn balance(app: &TestApp, u: &TestUser, position: i64) -> String {
    app.get(
        &format!("/wallets/{}?minPosition={position}", u.id),
        Some(&u.token),
    )
    .await
    .str("balance")
}

/// The README's walkthrough: two milestones, a 2.5 % seller fee, each milestone delivered
/// and released on its own; then a second contract whose milestones end one released, one
/// refunded (`COMPLETED`, the amounts shown).
#[tokio::test]
async fn a_two_milestone_contract_with_a_seller_fee() {
    let app = spawn_app().await;
    let admin = app.grant(&app.user().await, "admin").await;
    let (buyer, seller) = funded_pair(&app, "2000").await;
    let fee = app
        .request(
            Method::PUT,
            "/admin/fee-schedule",
            Some(&admin.token),
            Some(&json!({"currency": "USD", "percentBps": 250, "payer": "SELLER"})),
            &[],
        )
        .await;
    assert_eq!(fee.status, StatusCode::OK, "{:?}", fee.body);

    let c = create_staged(
        &app,
        &buyer,
        &seller,
        json!([{"title": "Design", "amount": "400", "inspectionPeriodHours": 24},
               {"title": "Build", "amount": 600}]),
        json!({"inspectionPeriodHours": 72}),
    )
    .await;
    assert_eq!(c.status, StatusCode::CREATED, "{:?}", c.body);
    assert_eq!(c.str("amount"), "1000.00", "the price is the sum");
    assert_eq!(c.body["milestones"][0]["title"], "Design");
    assert_eq!(c.body["milestones"][1]["inspectionPeriodHours"], 72);
    let id = c.str("id");
    assert_eq!(
        act(&app, &buyer, &id, "fund", None).await.status,
        StatusCode::OK
    );

    let d1 = on_milestone(&app, &seller, &id, "1", "deliver").await;
    assert_eq!(d1.status, StatusCode::OK, "{:?}", d1.body);
    assert_eq!(
        statuses(&d1),
        vec![
            ("DELIVERED".into(), "400.00".into()),
            ("PENDING".into(), "600.00".into())
        ]
    );
    assert!(d1.body["milestones"][0]["autoReleaseAt"].is_string());
    assert_eq!(
        d1.body["autoReleaseAt"],
        d1.body["milestones"][0]["autoReleaseAt"]
    );
    let r1 = on_milestone(&app, &buyer, &id, "1", "release").await;
    assert_eq!(r1.status, StatusCode::OK, "{:?}", r1.body);
    assert_eq!(
        (r1.str("status"), r1.str("heldAmount")),
        ("ACTIVE".into(), "600.00".into())
    );
    assert_eq!(r1.str("feeCharged"), "10.00");
    assert_eq!(balance(&app, &seller, pos(&r1)).await, "390.00");

    assert_eq!(
        on_milestone(&app, &seller, &id, "2", "deliver")
            .await
            .status,
        StatusCode::OK
    );
    let r2 = on_milestone(&app, &buyer, &id, "2", "release").await;
    assert_eq!(r2.str("status"), "COMPLETED", "{:?}", r2.body);
    assert_eq!(r2.str("feeCharged"), "25.00");
    assert_eq!(balance(&app, &seller, pos(&r2)).await, "975.00");
    assert_eq!(balance(&app, &buyer, pos(&r2)).await, "1000.00");
    let revenue = app
        .get(
            &format!("/platform/revenue?minPosition={}", pos(&r2)),
            Some(&admin.token),
        )
        .await;
    assert_eq!(revenue.body[0]["balance"], "25.00", "{:?}", revenue.body);
    let read = app
        .get(
            &format!("/contracts/{id}?minPosition={}", pos(&r2)),
            Some(&buyer.token),
        )
        .await;
    assert_eq!(
        statuses(&read),
        vec![
            ("RELEASED".into(), "0.00".into()),
            ("RELEASED".into(), "0.00".into())
        ]
    );

    // One released, one refunded: COMPLETED, each milestone showing what became of it.
    let c = create_staged(
        &app,
        &buyer,
        &seller,
        json!([{"title": "A", "amount": "100"}, {"title": "B", "amount": "200"}]),
        json!({"amount": "300.00"}),
    )
    .await;
    let id = c.str("id");
    assert_eq!(
        act(&app, &buyer, &id, "fund", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        on_milestone(&app, &buyer, &id, "2", "release").await.status,
        StatusCode::OK
    );
    let refunded = on_milestone(&app, &seller, &id, "1", "refund").await;
    assert_eq!(refunded.str("status"), "COMPLETED", "{:?}", refunded.body);
    assert_eq!(
        statuses(&refunded),
        vec![
            ("REFUNDED".into(), "0.00".into()),
            ("RELEASED".into(), "0.00".into())
        ]
    );
    assert_eq!(balance(&app, &buyer, pos(&refunded)).await, "800.00");
    assert!(app.wait_for_read_models(Duration::from_secs(20)).await);
    assert!(api::verify::verify(&app.pool).await.expect("verify").ok());
    assert_conserved(&app).await;
}

/// Every bad milestone request gets its 4xx problem and writes nothing.
#[tokio::test]
async fn bad_milestone_requests_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (buyer, seller) = funded_pair(&app, "1000").await;
    let before = app.event_count().await;
    let stage = |amount: Value| json!({"title": "Stage", "amount": amount});
    for (milestones, extra, status, code) in [
        (
            json!([]),
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_MILESTONES",
        ),
        (
            Value::Array((0..51).map(|_| stage(json!("1"))).collect()),
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_MILESTONES",
        ),
        (
            json!([stage(json!("400")), stage(json!("500"))]),
            json!({"amount": "1000"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "MILESTONES_MISMATCH",
        ),
        (
            json!([stage(json!("0"))]),
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AMOUNT_NOT_POSITIVE",
        ),
        (
            json!([stage(json!("-5"))]),
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AMOUNT_NOT_POSITIVE",
        ),
        (
            json!([stage(json!("1.234"))]),
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AMOUNT_TOO_PRECISE",
        ),
        (
            json!([{"title": "", "amount": "1"}]),
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_TEXT",
        ),
        (
            json!([{"title": "A", "amount": "1", "inspectionPeriodHours": 0}]),
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_MILESTONES",
        ),
        (
            json!([{"title": "A", "amount": "1", "colour": "red"}]),
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_BODY",
        ),
    ] {
        let r = create_staged(&app, &buyer, &seller, milestones.clone(), extra).await;
        expect(&r, status, code, &format!("milestones {milestones}"));
    }
    // Neither an amount nor milestones.
    let r = app
        .post(
            "/contracts",
            Some(&buyer.token),
            json!({"sellerId": seller.id, "buyerId": buyer.id, "title": "t"}),
        )
        .await;
    expect(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "AMOUNT_REQUIRED",
        "no amount",
    );
    assert_eq!(
        app.event_count().await,
        before,
        "no refused creation wrote anything"
    );

    let c = create_staged(
        &app,
        &buyer,
        &seller,
        json!([stage(json!("400")), stage(json!("600"))]),
        json!({}),
    )
    .await;
    let id = c.str("id");
    expect(
        &on_milestone(&app, &seller, &id, "1", "deliver").await,
        StatusCode::CONFLICT,
        "CONTRACT_NOT_ACTIVE",
        "deliver a draft's milestone",
    );
    assert_eq!(
        act(&app, &buyer, &id, "fund", None).await.status,
        StatusCode::OK
    );
    let before = app.event_count().await;
    for (who, n, action, status, code) in [
        (
            &seller,
            "3",
            "deliver",
            StatusCode::NOT_FOUND,
            "MILESTONE_NOT_FOUND",
        ),
        (
            &seller,
            "0",
            "deliver",
            StatusCode::BAD_REQUEST,
            "INVALID_PATH",
        ),
        (
            &seller,
            "x",
            "release",
            StatusCode::BAD_REQUEST,
            "INVALID_PATH",
        ),
        (
            &seller,
            "51",
            "refund",
            StatusCode::BAD_REQUEST,
            "INVALID_PATH",
        ),
        (&buyer, "1", "deliver", StatusCode::FORBIDDEN, "FORBIDDEN"),
        (&seller, "1", "release", StatusCode::FORBIDDEN, "FORBIDDEN"),
        (&buyer, "1", "refund", StatusCode::FORBIDDEN, "FORBIDDEN"),
    ] {
        let r = on_milestone(&app, who, &id, n, action).await;
        expect(&r, status, code, &format!("{action} milestone {n}"));
    }
    let amount = app
        .request(
            Method::POST,
            &format!("/contracts/{id}/milestones/1/release"),
            Some(&buyer.token),
            Some(&json!({"amount": "1"})),
            &[],
        )
        .await;
    expect(
        &amount,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_BODY",
        "an amount",
    );
    assert_eq!(app.event_count().await, before);

    assert_eq!(
        on_milestone(&app, &seller, &id, "1", "deliver")
            .await
            .status,
        StatusCode::OK
    );
    expect(
        &on_milestone(&app, &seller, &id, "1", "deliver").await,
        StatusCode::CONFLICT,
        "ALREADY_DELIVERED",
        "deliver twice",
    );
    assert_eq!(
        on_milestone(&app, &buyer, &id, "1", "release").await.status,
        StatusCode::OK
    );
    let before = app.event_count().await;
    for (who, action) in [
        (&buyer, "release"),
        (&seller, "refund"),
        (&seller, "deliver"),
    ] {
        expect(
            &on_milestone(&app, who, &id, "1", action).await,
            StatusCode::CONFLICT,
            "MILESTONE_CLOSED",
            &format!("{action} a released milestone"),
        );
    }
    let raised = app
        .post(
            "/disputes",
            Some(&buyer.token),
            json!({"contractId": id, "description": "stage 2 is late"}),
        )
        .await;
    assert_eq!(raised.status, StatusCode::CREATED, "{:?}", raised.body);
    let before_frozen = app.event_count().await;
    expect(
        &on_milestone(&app, &buyer, &id, "2", "release").await,
        StatusCode::CONFLICT,
        "CONTRACT_DISPUTED",
        "release while disputed",
    );
    assert_eq!(app.event_count().await, before_frozen);
    assert!(before_frozen > before);
    assert_conserved(&app).await;
}

/// A contract created without milestones shows its one implicit milestone, which the
/// milestone endpoints act on as number 1.
#[tokio::test]
async fn a_contract_without_milestones_has_one() {
    let app = spawn_app().await;
    let (buyer, seller) = funded_pair(&app, "100").await;
    let c = create(
        &app,
        &buyer,
        &buyer,
        &seller,
        "100",
        json!({"inspectionPeriodHours": 24}),
    )
    .await;
    assert_eq!(
        c.body["milestones"],
        json!([{"number": 1, "title": "Web Development Contract", "amount": "100.00",
                "heldAmount": "0.00", "status": "PENDING", "inspectionPeriodHours": 24,
                "deliveredAt": null, "autoReleaseAt": null}])
    );
    let id = c.str("id");
    assert_eq!(
        act(&app, &buyer, &id, "fund", None).await.status,
        StatusCode::OK
    );
    let d = act(&app, &seller, &id, "deliver", None).await;
    assert_eq!(statuses(&d), vec![("DELIVERED".into(), "100.00".into())]);
    let r = on_milestone(&app, &buyer, &id, "1", "release").await;
    assert_eq!(r.str("status"), "COMPLETED", "{:?}", r.body);
    let (milestone,): (Option<Value>,) = sqlx::query_as(
        "SELECT data->'milestone' FROM events WHERE event_type = 'ContractReleased'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the release");
    assert_eq!(milestone, None, "its events name no milestone, as before");
}

/// Two servers' schedulers release many contracts' milestones, each when its own window
/// ends, and expire many drafts: every one exactly once, as `system`.
///
/// Fails with `Milestones::due` ignoring the time (seen: 8 releases at hour 25, where only
/// the 6 first milestones were due).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn milestones_release_and_drafts_expire_once_with_two_servers() {
    let (clock, app, second) = two_servers_one_clock().await;
    let (buyer, seller) = funded_pair(&app, "300").await;
    let staged = json!([{"title": "A", "amount": "20", "inspectionPeriodHours": 24},
                        {"title": "B", "amount": "30", "inspectionPeriodHours": 48}]);
    let mut ids = Vec::new();
    for i in 0..6 {
        let server = if i % 2 == 0 { &app } else { &second };
        let id = create_staged(server, &buyer, &seller, staged.clone(), json!({}))
            .await
            .str("id");
        assert_eq!(
            act(server, &buyer, &id, "fund", None).await.status,
            StatusCode::OK
        );
        let d = act(server, &seller, &id, "deliver", None).await;
        assert_eq!(d.status, StatusCode::OK, "{:?}", d.body);
        ids.push(id);
    }
    let fund_by = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut drafts = Vec::new();
    for _ in 0..6 {
        let c = create(
            &app,
            &buyer,
            &buyer,
            &seller,
            "5",
            json!({"fundBy": fund_by}),
        )
        .await;
        assert_eq!(c.status, StatusCode::CREATED, "{:?}", c.body);
        drafts.push(c.str("id"));
    }
    let count = |event_type: &'static str| {
        let pool = app.pool.clone();
        async move {
            let rows: Vec<(String, Value)> =
                sqlx::query_as("SELECT stream_id, metadata FROM events WHERE event_type = $1")
                    .bind(event_type)
                    .fetch_all(&pool)
                    .await
                    .expect("read the events");
            rows
        }
    };
    let settle = |want_released: usize| {
        let pool = app.pool.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM events WHERE event_type = 'ContractReleased'",
                )
                .fetch_one(&pool)
                .await
                .expect("count");
                if n as usize >= want_released || tokio::time::Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Both schedulers keep scanning: give the loser time to try again.
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    };

    // Hour 25: the drafts' deadline and every first milestone's window have passed.
    clock.advance(chrono::Duration::hours(25));
    settle(6).await;
    let released = count("ContractReleased").await;
    assert_eq!(
        released.len(),
        6,
        "only the first milestone of each contract"
    );
    let expired = count("ContractExpired").await;
    assert_eq!(expired.len(), 6, "each draft expired once");
    assert!(app.wait_for_read_models(Duration::from_secs(10)).await);
    let mid = second
        .get(&format!("/contracts/{}", ids[0]), Some(&seller.token))
        .await;
    assert_eq!(
        statuses(&mid),
        vec![
            ("RELEASED".into(), "0.00".into()),
            ("DELIVERED".into(), "30.00".into())
        ]
    );

    // Hour 49: the second milestones.
    clock.advance(chrono::Duration::hours(24));
    settle(12).await;
    let released = count("ContractReleased").await;
    assert!(released.iter().all(|(_, m)| m["actor"] == json!("system")));
    let mut streams: Vec<String> = released.into_iter().map(|(s, _)| s).collect();
    streams.sort();
    let mut want: Vec<String> = ids
        .iter()
        .flat_map(|id| [format!("contract-{id}"), format!("contract-{id}")])
        .collect();
    want.sort();
    assert_eq!(streams, want, "each milestone released exactly once");
    assert_eq!(count("ContractExpired").await.len(), 6);
    assert!(app.wait_for_read_models(Duration::from_secs(10)).await);
    for id in &ids {
        let c = app
            .get(&format!("/contracts/{id}"), Some(&seller.token))
            .await;
        assert_eq!(c.str("status"), "COMPLETED", "{:?}", c.body);
    }
    let w = app
        .get(&format!("/wallets/{}", seller.id), Some(&seller.token))
        .await;
    assert_eq!(w.str("balance"), "300.00");
    assert!(api::verify::verify(&app.pool).await.expect("verify").ok());
    assert_conserved(&app).await;
    drop(second);
}
