//! Escrow contracts and disputes end to end: the two stories, every rule, every role,
//! the races, and the inspection window across two server processes.

use std::time::Duration;

use escrow_tests::{
    folded_ledger, read_model_balances, spawn_app, two_servers_one_clock, Resp, TestApp, TestUser,
};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};

pub(crate) async fn funded_pair(app: &TestApp, buyer_funds: &str) -> (TestUser, TestUser) {
    let buyer = app.user().await;
    let seller = app.user().await;
    assert_eq!(
        app.deposit(&buyer, buyer_funds).await.status,
        StatusCode::CREATED
    );
    (buyer, seller)
}

pub(crate) async fn create(
    app: &TestApp,
    by: &TestUser,
    buyer: &TestUser,
    seller: &TestUser,
    amount: &str,
    extra: Value,
) -> Resp {
    let mut body = json!({"sellerId": seller.id, "buyerId": buyer.id, "title": "Web Development Contract", "amount": amount});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    app.post("/contracts", Some(&by.token), body).await
}

pub(crate) async fn act(
    app: &TestApp,
    who: &TestUser,
    contract: &str,
    action: &str,
    body: Option<Value>,
) -> Resp {
    app.request(
        Method::POST,
        &format!("/contracts/{contract}/{action}"),
        Some(&who.token),
        body.as_ref(),
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

pub(crate) fn pos(r: &Resp) -> i64 {
    r.body["position"]
        .as_i64()
        .unwrap_or_else(|| panic!("no position in {:?}", r.body))
}

pub(crate) async fn assert_conserved(app: &TestApp) {
    let (folded, sum) = folded_ledger(&app.pool).await;
    assert_eq!(sum, Decimal::ZERO, "wallets + escrow + world = 0");
    assert!(app.wait_for_read_models(Duration::from_secs(20)).await);
    assert_eq!(read_model_balances(&app.pool).await, folded);
}

#[tokio::test]
async fn create_fund_deliver_release() {
    let app = spawn_app().await;
    let (buyer, seller) = funded_pair(&app, "1500").await;
    let c = create(
        &app,
        &seller,
        &buyer,
        &seller,
        "1000.00",
        json!({"description": "Landing page", "inspectionPeriodHours": 72}),
    )
    .await;
    assert_eq!(c.status, StatusCode::CREATED, "{:?}", c.body);
    for (k, v) in [
        ("status", "DRAFT"),
        ("amount", "1000.00"),
        ("heldAmount", "0.00"),
        ("currency", "USD"),
        ("sellerId", seller.id.as_str()),
        ("buyerId", buyer.id.as_str()),
    ] {
        assert_eq!(c.str(k), v, "{k}");
    }
    assert_eq!(c.body["inspectionPeriodHours"], json!(72));
    assert!(c.body["deliveredAt"].is_null() && c.body["autoReleaseAt"].is_null());
    let id = c.str("id");

    let f = act(&app, &buyer, &id, "fund", None).await;
    assert_eq!(f.status, StatusCode::OK, "{:?}", f.body);
    assert_eq!(
        (f.str("status"), f.str("heldAmount")),
        ("ACTIVE".into(), "1000.00".into())
    );
    assert_eq!(
        balance(&app, &buyer, pos(&f)).await,
        ("500.00".into(), "1000.00".into())
    );

    let d = act(&app, &seller, &id, "deliver", Some(json!({}))).await;
    assert_eq!(d.status, StatusCode::OK, "{:?}", d.body);
    assert!(d.body["deliveredAt"].is_string() && d.body["autoReleaseAt"].is_string());

    let r = act(&app, &buyer, &id, "release", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        (r.str("status"), r.str("heldAmount")),
        ("COMPLETED".into(), "0.00".into())
    );
    assert_eq!(
        balance(&app, &seller, pos(&r)).await,
        ("1000.00".into(), "0.00".into())
    );
    assert_eq!(
        balance(&app, &buyer, pos(&r)).await,
        ("500.00".into(), "0.00".into())
    );

    let got = app
        .get(
            &format!("/contracts/{id}?minPosition={}", pos(&r)),
            Some(&buyer.token),
        )
        .await;
    assert_eq!(got.str("status"), "COMPLETED");
    assert_eq!(got.body["description"], json!("Landing page"));
    for who in [&buyer, &seller] {
        let h = app
            .get(
                &format!("/wallets/{}/transactions?minPosition={}", who.id, pos(&r)),
                Some(&who.token),
            )
            .await;
        let kinds: Vec<&str> = h.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["contractId"] == json!(id))
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            vec!["PAYMENT", "ESCROW_HOLD"],
            "both parties see the escrow movements"
        );
    }
    let mine = app
        .get(
            &format!("/contracts/user/{}?status=COMPLETED", seller.id),
            Some(&seller.token),
        )
        .await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);
    assert_conserved(&app).await;
}

#[tokio::test]
async fn create_fund_dispute_split() {
    let app = spawn_app().await;
    let (buyer, seller) = funded_pair(&app, "1000").await;
    let arbiter = app.user().await;
    let arbiter = app.grant(&arbiter, "arbiter").await;
    let id = create(&app, &buyer, &buyer, &seller, "1000", json!({}))
        .await
        .str("id");
    assert_eq!(
        act(&app, &buyer, &id, "fund", None).await.status,
        StatusCode::OK
    );

    let x = app
        .post(
            "/disputes",
            Some(&buyer.token),
            json!({"contractId": id, "description": "only half the pages were delivered"}),
        )
        .await;
    assert_eq!(x.status, StatusCode::CREATED, "{:?}", x.body);
    assert_eq!(
        (x.str("status"), x.str("raisedBy"), x.str("contractId")),
        ("OPEN".into(), buyer.id.clone(), id.clone())
    );
    let dispute = x.str("id");
    let c = app
        .get(
            &format!("/contracts/{id}?minPosition={}", pos(&x)),
            Some(&seller.token),
        )
        .await;
    assert_eq!(
        (c.str("status"), c.str("disputeId")),
        ("DISPUTED".into(), dispute.clone()),
        "{} {:?} {}",
        c.status,
        c.headers.get("x-read-consistency"),
        c.body
    );

    let queue = app
        .get(
            &format!("/disputes?status=OPEN&minPosition={}", pos(&x)),
            Some(&arbiter.token),
        )
        .await;
    assert!(queue.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == json!(dispute)));
    let stranger = app.user().await;
    let theirs = app.get("/disputes", Some(&stranger.token)).await;
    assert_eq!(
        theirs.body["items"],
        json!([]),
        "a user sees only its own disputes"
    );
    for party in [&buyer, &seller] {
        let mine = app.get("/disputes", Some(&party.token)).await;
        let ids: Vec<&Value> = mine.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| &d["id"])
            .collect();
        assert_eq!(
            ids,
            vec![&json!(dispute)],
            "each party sees its dispute once"
        );
        let open = app
            .get("/disputes?status=RESOLVED", Some(&party.token))
            .await;
        assert_eq!(open.body["items"], json!([]), "not resolved yet");
    }

    let res = app
        .request(Method::PUT, &format!("/disputes/{dispute}/resolve"), Some(&arbiter.token),
            Some(&json!({"resolution": "half delivered, half paid", "outcome": "SPLIT", "sellerAmount": "600.00", "buyerAmount": 400})), &[])
        .await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    for (k, v) in [
        ("status", "RESOLVED"),
        ("outcome", "SPLIT"),
        ("sellerAmount", "600.00"),
        ("buyerAmount", "400.00"),
        ("resolvedBy", arbiter.id.as_str()),
        ("resolution", "half delivered, half paid"),
    ] {
        assert_eq!(res.str(k), v, "{k}");
    }
    assert!(res.body["resolvedAt"].is_string());
    let p = pos(&res);
    assert_eq!(
        balance(&app, &seller, p).await,
        ("600.00".into(), "0.00".into())
    );
    assert_eq!(
        balance(&app, &buyer, p).await,
        ("400.00".into(), "0.00".into())
    );
    let c = app
        .get(
            &format!("/contracts/{id}?minPosition={p}"),
            Some(&arbiter.token),
        )
        .await;
    assert_eq!(
        (c.str("status"), c.str("heldAmount")),
        ("SETTLED".into(), "0.00".into())
    );
    let d = app
        .get(
            &format!("/disputes/{dispute}?minPosition={p}"),
            Some(&seller.token),
        )
        .await;
    assert_eq!(d.str("status"), "RESOLVED");
    assert_eq!(
        app.get(&format!("/disputes/{dispute}"), Some(&stranger.token))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_conserved(&app).await;
}

#[tokio::test]
async fn partial_release_then_refund_of_the_rest() {
    let app = spawn_app().await;
    let (buyer, seller) = funded_pair(&app, "100").await;
    let id = create(&app, &buyer, &buyer, &seller, "100", json!({}))
        .await
        .str("id");
    act(&app, &buyer, &id, "fund", None).await;
    let r = act(
        &app,
        &buyer,
        &id,
        "release",
        Some(json!({"amount": "30.50"})),
    )
    .await;
    assert_eq!(
        (r.str("status"), r.str("heldAmount")),
        ("ACTIVE".into(), "69.50".into())
    );
    let over = act(&app, &seller, &id, "refund", Some(json!({"amount": 69.51}))).await;
    assert_eq!(
        (over.status, over.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "AMOUNT_EXCEEDS_HELD")
    );
    let f = act(&app, &seller, &id, "refund", None).await;
    assert_eq!(
        (f.str("status"), f.str("heldAmount")),
        ("REFUNDED".into(), "0.00".into())
    );
    assert_eq!(
        balance(&app, &buyer, pos(&f)).await,
        ("69.50".into(), "0.00".into())
    );
    assert_eq!(
        balance(&app, &seller, pos(&f)).await,
        ("30.50".into(), "0.00".into())
    );
    assert_conserved(&app).await;
}

pub(crate) fn expect(r: &Resp, status: StatusCode, code: &str, what: &str) {
    assert_eq!((r.status, r.code()), (status, code), "{what}: {:?}", r.body);
    assert_eq!(r.headers["content-type"], "application/problem+json");
}

#[tokio::test]
async fn every_rule_and_role() {
    let app = spawn_app().await;
    let (buyer, seller) = funded_pair(&app, "1000").await;
    let stranger = app.user().await;
    let admin = app.grant(&app.user().await, "admin").await;
    let ghost = uuid::Uuid::now_v7().to_string();

    // Creation.
    expect(
        &create(&app, &buyer, &buyer, &buyer, "1", json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "SAME_PARTIES",
        "buyer = seller",
    );
    expect(
        &create(&app, &stranger, &buyer, &seller, "1", json!({})).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "not a party",
    );
    let ghost_user = TestUser {
        id: ghost.clone(),
        email: String::new(),
        token: String::new(),
    };
    expect(
        &create(&app, &buyer, &buyer, &ghost_user, "1", json!({})).await,
        StatusCode::NOT_FOUND,
        "USER_NOT_FOUND",
        "unknown seller",
    );
    expect(
        &create(&app, &buyer, &buyer, &seller, "0", json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "AMOUNT_NOT_POSITIVE",
        "zero price",
    );
    expect(
        &create(&app, &buyer, &buyer, &seller, "1", json!({"title": ""})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_TEXT",
        "empty title",
    );
    expect(
        &create(
            &app,
            &buyer,
            &buyer,
            &seller,
            "1",
            json!({"inspectionPeriodHours": -1}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_BODY",
        "negative window",
    );
    for hours in [json!(24.5), json!(-1.0), json!(4294967296.0), json!("24")] {
        expect(
            &create(
                &app,
                &buyer,
                &buyer,
                &seller,
                "1",
                json!({"inspectionPeriodHours": hours}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_BODY",
            &format!("window {hours}"),
        );
    }
    // JSON Schema's `integer` counts 24.0 as a whole number, so the document allows it and
    // the server takes it (schemathesis found the refusal; fails with the field a bare u32).
    let whole = create(
        &app,
        &buyer,
        &buyer,
        &seller,
        "1",
        json!({"inspectionPeriodHours": 24.0}),
    )
    .await;
    assert_eq!(whole.status, StatusCode::CREATED, "{:?}", whole.body);
    assert_eq!(whole.body["inspectionPeriodHours"], json!(24));
    expect(
        &app.post(
            "/contracts",
            Some(&buyer.token),
            json!({"sellerId": "x", "buyerId": buyer.id, "title": "t", "amount": 1}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_ID",
        "bad id",
    );

    let big = create(&app, &buyer, &buyer, &seller, "1000.01", json!({}))
        .await
        .str("id");
    expect(
        &act(&app, &buyer, &big, "fund", None).await,
        StatusCode::CONFLICT,
        "INSUFFICIENT_FUNDS",
        "buyer cannot afford",
    );

    let id = create(&app, &buyer, &buyer, &seller, "400", json!({}))
        .await
        .str("id");
    expect(
        &act(&app, &buyer, &id, "release", None).await,
        StatusCode::CONFLICT,
        "CONTRACT_NOT_ACTIVE",
        "release a DRAFT",
    );
    expect(
        &act(&app, &seller, &id, "fund", None).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "seller funds",
    );
    expect(
        &act(&app, &buyer, &id, "fund", Some(json!({"extra": 1}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_BODY",
        "unknown field",
    );
    assert_eq!(
        act(&app, &buyer, &id, "fund", None).await.status,
        StatusCode::OK
    );
    expect(
        &act(&app, &buyer, &id, "fund", None).await,
        StatusCode::CONFLICT,
        "CONTRACT_NOT_DRAFT",
        "fund twice",
    );
    expect(
        &act(&app, &buyer, &id, "cancel", None).await,
        StatusCode::CONFLICT,
        "CONTRACT_NOT_DRAFT",
        "cancel an ACTIVE",
    );
    expect(
        &act(&app, &buyer, &id, "refund", None).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "buyer refunds",
    );
    expect(
        &act(&app, &seller, &id, "release", None).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "seller releases",
    );
    expect(
        &act(&app, &buyer, &id, "deliver", None).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "buyer delivers",
    );
    expect(
        &act(
            &app,
            &buyer,
            &id,
            "release",
            Some(json!({"amount": "400.01"})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "AMOUNT_EXCEEDS_HELD",
        "over-release",
    );
    expect(
        &act(
            &app,
            &buyer,
            &id,
            "release",
            Some(json!({"amount": "1.001"})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "AMOUNT_TOO_PRECISE",
        "precision",
    );
    expect(
        &act(&app, &buyer, &ghost, "fund", None).await,
        StatusCode::NOT_FOUND,
        "CONTRACT_NOT_FOUND",
        "unknown contract",
    );
    expect(
        &act(&app, &buyer, "nope", "fund", None).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ID",
        "bad contract id",
    );
    assert!(app.wait_for_read_models(Duration::from_secs(10)).await);
    expect(
        &app.get(&format!("/contracts/{id}"), Some(&stranger.token))
            .await,
        StatusCode::NOT_FOUND,
        "CONTRACT_NOT_FOUND",
        "stranger reads",
    );
    expect(
        &app.get(
            &format!("/contracts/user/{}", buyer.id),
            Some(&stranger.token),
        )
        .await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "stranger lists",
    );
    assert_eq!(
        app.get(&format!("/contracts/{id}"), Some(&admin.token))
            .await
            .status,
        StatusCode::OK,
        "admin reads"
    );

    expect(
        &app.post(
            "/disputes",
            Some(&stranger.token),
            json!({"contractId": id, "description": "x"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "stranger disputes",
    );
    let x = app
        .post(
            "/disputes",
            Some(&seller.token),
            json!({"contractId": id, "description": "buyer unresponsive"}),
        )
        .await;
    assert_eq!(x.status, StatusCode::CREATED);
    let dispute = x.str("id");
    expect(
        &app.post(
            "/disputes",
            Some(&buyer.token),
            json!({"contractId": id, "description": "again"}),
        )
        .await,
        StatusCode::CONFLICT,
        "DISPUTE_ALREADY_OPEN",
        "second dispute",
    );
    expect(
        &act(&app, &seller, &id, "refund", None).await,
        StatusCode::CONFLICT,
        "CONTRACT_DISPUTED",
        "refund a DISPUTED",
    );
    expect(
        &act(&app, &buyer, &id, "release", None).await,
        StatusCode::CONFLICT,
        "CONTRACT_DISPUTED",
        "release a DISPUTED",
    );

    let resolve = |who: &TestUser, body: Value| {
        let token = who.token.clone();
        let path = format!("/disputes/{dispute}/resolve");
        let app = &app;
        async move {
            app.request(Method::PUT, &path, Some(&token), Some(&body), &[])
                .await
        }
    };
    expect(
        &resolve(&buyer, json!({"resolution": "mine", "outcome": "REFUND"})).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "a party resolves",
    );
    let seller_admin = app.grant(&seller, "admin").await;
    expect(
        &resolve(
            &seller_admin,
            json!({"resolution": "mine", "outcome": "RELEASE"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "a party who is admin resolves",
    );
    expect(&resolve(&admin, json!({"resolution": "r", "outcome": "SPLIT", "sellerAmount": "100", "buyerAmount": "299.99"})).await, StatusCode::UNPROCESSABLE_ENTITY, "SPLIT_MISMATCH", "split not summing");
    expect(
        &resolve(
            &admin,
            json!({"resolution": "r", "outcome": "SPLIT", "sellerAmount": "100"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "SPLIT_MISMATCH",
        "split missing a side",
    );
    expect(
        &resolve(&admin, json!({"resolution": "r", "outcome": "HALF"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_OUTCOME",
        "unknown outcome",
    );
    let ok = resolve(
        &admin,
        json!({"resolution": "seller delivered", "outcome": "RELEASE"}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    expect(
        &resolve(&admin, json!({"resolution": "again", "outcome": "REFUND"})).await,
        StatusCode::CONFLICT,
        "DISPUTE_ALREADY_RESOLVED",
        "resolve twice",
    );

    let draft = create(&app, &seller, &buyer, &seller, "5", json!({}))
        .await
        .str("id");
    let cancelled = act(&app, &seller, &draft, "cancel", None).await;
    assert_eq!(cancelled.str("status"), "CANCELLED");
    expect(
        &act(&app, &buyer, &draft, "fund", None).await,
        StatusCode::CONFLICT,
        "CONTRACT_NOT_DRAFT",
        "fund a cancelled contract",
    );
    assert_conserved(&app).await;
}

/// Twenty fundings of one contract at once: one wins, nineteen are refused.
///
/// Fails only when all three of the write side's version checks are gone: the committer's
/// (`command-handlers/src/committer/batch.rs`, `still_valid`), the batch layout's head check
/// (`event-store/src/append.rs`, `Rows::lay_out`) and `UNIQUE (stream_id, version)` on
/// `events` (checked with the three removed; with `still_valid` alone removed it passes:
/// they are layers, and one process's racing commands meet the first two before the third).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_fundings_fund_once() {
    let app = spawn_app().await;
    let (buyer, seller) = funded_pair(&app, "1000").await;
    let id = create(&app, &buyer, &buyer, &seller, "600", json!({}))
        .await
        .str("id");
    let results =
        futures::future::join_all((0..20).map(|_| act(&app, &buyer, &id, "fund", None))).await;
    let ok = results
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let refused = results
        .iter()
        .filter(|r| r.code() == "CONTRACT_NOT_DRAFT")
        .count();
    assert_eq!(
        (ok, refused),
        (1, 19),
        "{:?}",
        results.iter().map(|r| r.code()).collect::<Vec<_>>()
    );
    let p = results
        .iter()
        .filter_map(|r| r.body["position"].as_i64())
        .max()
        .unwrap();
    assert_eq!(
        balance(&app, &buyer, p).await,
        ("400.00".into(), "600.00".into()),
        "debited once"
    );
    assert_conserved(&app).await;
}

/// A release, a refund and a dispute of one contract at once: exactly one wins, the others
/// get 409; two arbiters' decisions race the same way.
///
/// Fails only when all three of the write side's version checks are gone: the committer's
/// (`command-handlers/src/committer/batch.rs`, `still_valid`), the batch layout's head check
/// (`event-store/src/append.rs`, `Rows::lay_out`) and `UNIQUE (stream_id, version)` on
/// `events` (checked with the three removed; with `still_valid` alone removed it passes:
/// they are layers, and one process's racing commands meet the first two before the third).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_refund_and_dispute_race_one_wins_each_step() {
    let app = spawn_app().await;
    let arbiter = app.grant(&app.user().await, "arbiter").await;
    for round in 0..5 {
        let (buyer, seller) = funded_pair(&app, "100").await;
        let created = create(&app, &buyer, &buyer, &seller, "100", json!({})).await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let id = created.str("id");
        let funded = act(&app, &buyer, &id, "fund", None).await;
        assert_eq!(funded.status, StatusCode::OK, "{:?}", funded.body);
        let (rel, refd, disp) = tokio::join!(
            act(&app, &buyer, &id, "release", None),
            act(&app, &seller, &id, "refund", None),
            app.post(
                "/disputes",
                Some(&buyer.token),
                json!({"contractId": id, "description": "race"})
            ),
        );
        let winners = [
            rel.status == StatusCode::OK,
            refd.status == StatusCode::OK,
            disp.status == StatusCode::CREATED,
        ];
        assert_eq!(
            winners.iter().filter(|w| **w).count(),
            1,
            "round {round}: {:?} {:?} {:?}",
            rel.body,
            refd.body,
            disp.body
        );
        for r in [&rel, &refd, &disp] {
            assert!(
                r.status.is_success() || r.status == StatusCode::CONFLICT,
                "losers get 409: {:?}",
                r.body
            );
        }
        if disp.status == StatusCode::CREATED {
            // Two arbiters' decisions race too: one resolves, the other is refused.
            let path = format!("/disputes/{}/resolve", disp.str("id"));
            let (body_a, body_b) = (
                json!({"resolution": "a", "outcome": "RELEASE"}),
                json!({"resolution": "b", "outcome": "REFUND"}),
            );
            let (a, b) = tokio::join!(
                app.request(Method::PUT, &path, Some(&arbiter.token), Some(&body_a), &[]),
                app.request(Method::PUT, &path, Some(&arbiter.token), Some(&body_b), &[]),
            );
            assert_eq!(
                [a.status, b.status]
                    .iter()
                    .filter(|s| **s == StatusCode::OK)
                    .count(),
                1
            );
        }
    }
    assert_conserved(&app).await;
}

/// Two servers' schedulers release the same expired inspection windows: each once.
///
/// Fails without `UNIQUE (stream_id, version)` on `events` (migrations): both servers'
/// releases are written (9 releases of 5 contracts in the run that checked it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inspection_window_releases_once_with_two_servers() {
    let (clock, app, second) = two_servers_one_clock().await;
    let (buyer, seller) = funded_pair(&app, "250").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = create(
            &app,
            &buyer,
            &buyer,
            &seller,
            "50",
            json!({"inspectionPeriodHours": 24}),
        )
        .await
        .str("id");
        assert_eq!(
            act(&second, &buyer, &id, "fund", None).await.status,
            StatusCode::OK
        );
        let d = act(&app, &seller, &id, "deliver", None).await;
        assert_eq!(d.status, StatusCode::OK);
        ids.push(id);
    }
    // Not due yet: nothing moves.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (none,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'ContractReleased'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(none, 0);

    clock.advance(chrono::Duration::hours(24) + chrono::Duration::seconds(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (done,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM rm_contracts WHERE status = 'COMPLETED'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if done == 5 || tokio::time::Instant::now() > deadline {
            assert_eq!(done, 5, "every expired window released");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released: Vec<(String, Value)> = sqlx::query_as(
        "SELECT stream_id, metadata FROM events WHERE event_type = 'ContractReleased'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        released.len(),
        5,
        "released exactly once each, with two schedulers running"
    );
    assert!(released.iter().all(|(_, m)| m["actor"] == json!("system")));
    let (payments,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'EscrowPaymentReceived'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(payments, 5);
    let mut released_streams: Vec<String> = released.into_iter().map(|(s, _)| s).collect();
    released_streams.sort();
    let mut expected: Vec<String> = ids.iter().map(|id| format!("contract-{id}")).collect();
    expected.sort();
    assert_eq!(released_streams, expected, "each contract released once");
    assert!(app.wait_for_read_models(Duration::from_secs(10)).await);
    let w = app
        .get(&format!("/wallets/{}", seller.id), Some(&seller.token))
        .await;
    assert_eq!(w.str("balance"), "250.00");
    for id in &ids {
        let c = second
            .get(&format!("/contracts/{id}"), Some(&seller.token))
            .await;
        assert_eq!(
            (c.str("status"), c.str("heldAmount")),
            ("COMPLETED".into(), "0.00".into())
        );
    }
    assert_conserved(&app).await;
    drop(second);
}

/// Every page (`limit` rows before a cursor) is the newest of each part of a user's
/// history — sent and received transfers, escrow rows of their own wallet and of their
/// counterparties — and of their contracts as buyer and as seller: walking the pages two
/// or one at a time gives exactly the one-page list, newest first.
#[tokio::test]
async fn pages_are_the_newest_of_every_part_of_a_history() {
    let app = spawn_app().await;
    let (a, b) = funded_pair(&app, "500").await;
    assert_eq!(app.deposit(&b, "500").await.status, StatusCode::CREATED);
    let mut last = 0;
    for (from, to, amount) in [(&a, &b, "1"), (&b, &a, "2"), (&a, &b, "3"), (&b, &a, "4")] {
        let t = app.transfer(from, &to.id, amount).await;
        assert_eq!(t.status, StatusCode::CREATED, "{:?}", t.body);
    }
    // a buys from b twice and sells to b twice; one of each is funded, b's is released.
    let mut contracts = Vec::new();
    for (buyer, seller) in [(&a, &b), (&b, &a), (&a, &b), (&b, &a)] {
        let c = create(&app, buyer, buyer, seller, "10", json!({})).await;
        assert_eq!(c.status, StatusCode::CREATED, "{:?}", c.body);
        contracts.push(c.str("id"));
    }
    assert_eq!(
        act(&app, &a, &contracts[0], "fund", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        act(&app, &b, &contracts[1], "fund", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        act(&app, &a, &contracts[1], "deliver", Some(json!({})))
            .await
            .status,
        StatusCode::OK
    );
    let r = act(&app, &b, &contracts[1], "release", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    if let Some(p) = r.body["position"].as_i64() {
        last = p;
    }
    let t = app.transfer(&a, &b.id, "5").await;
    last = last.max(t.body["position"].as_i64().unwrap());

    let walk = |path: String, limit: usize| {
        let (app, a) = (&app, &a);
        async move {
            let mut items: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                // The audit trail reads the events themselves: no position to wait for.
                let mut url = if path.starts_with("/audit") {
                    format!("{path}?limit={limit}")
                } else {
                    format!("{path}?limit={limit}&minPosition={last}")
                };
                if let Some(c) = &cursor {
                    url.push_str(&format!("&cursor={c}"));
                }
                let page = app.get(&url, Some(&a.token)).await;
                assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
                let got = page.body["items"].as_array().unwrap().clone();
                assert!(got.len() <= limit);
                items.extend(got);
                match page.body["nextCursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => return items,
                }
            }
        }
    };
    let ids = |items: &[Value]| items.iter().map(|i| i["id"].clone()).collect::<Vec<_>>();

    let history = format!("/wallets/{}/transactions", a.id);
    let whole = walk(history.clone(), 100).await;
    let kinds: std::collections::HashSet<&str> =
        whole.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["DEPOSIT", "TRANSFER", "ESCROW_HOLD", "PAYMENT"]
            .into_iter()
            .collect(),
        "{whole:?}"
    );
    // A deposit, five transfers, a's own hold, b's hold (a sells) and the payment to a.
    assert_eq!(whole.len(), 9, "{whole:?}");
    assert_eq!(ids(&walk(history.clone(), 2).await), ids(&whole));
    assert_eq!(ids(&walk(history, 1).await), ids(&whole));

    let listed = format!("/contracts/user/{}", a.id);
    let all = walk(listed.clone(), 100).await;
    let mut expected = contracts.clone();
    expected.reverse();
    assert_eq!(
        all.iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        expected,
        "newest first, as buyer and as seller"
    );
    assert_eq!(ids(&walk(listed, 1).await), ids(&all));

    // The audit trail: the events of a's streams (user, wallet, contracts) and of a's
    // commands (b's streams too, such as the transfers' receiving side).
    let trail = format!("/audit/logs/user/{}", a.id);
    let events = walk(trail.clone(), 100).await;
    let positions: Vec<i64> = events
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] > w[1]), "{positions:?}");
    assert!(events.len() > 20, "{events:?}");
    let pos = |items: &[Value]| {
        items
            .iter()
            .map(|i| i["position"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(pos(&walk(trail.clone(), 3).await), pos(&events));
    assert_eq!(pos(&walk(trail, 1).await), pos(&events));
}

/// The OpenAPI document lets the optional bodies of contract actions be JSON `null`, and
/// the server takes `null` as it takes an absent body: a funding sent as `null` funds.
///
/// Fails when `JsonBody::parse` (`api/src/extract.rs`) reads `null` as it is: 422
/// `INVALID_BODY`.
#[tokio::test]
async fn a_null_body_is_an_absent_body() {
    let app = spawn_app().await;
    let (buyer, seller) = (app.user().await, app.user().await);
    app.deposit(&buyer, "100").await;
    let c = app
        .post(
            "/contracts",
            Some(&buyer.token),
            serde_json::json!({"sellerId": seller.id, "buyerId": buyer.id, "title": "t", "amount": "40"}),
        )
        .await;
    let funded = app
        .raw_post(
            &format!("/contracts/{}/fund", c.str("id")),
            Some(&buyer.token),
            "application/json",
            b"null".to_vec(),
        )
        .await;
    assert_eq!(funded.status, reqwest::StatusCode::OK, "{:?}", funded.body);
    assert_eq!(funded.body["status"], "ACTIVE");
}
