//! What integrators use: `events tail --durable` resumes without loss or repeats, and
//! `events export` writes the store as NDJSON envelopes.

use std::collections::HashSet;
use std::time::Duration;

use escrow_nats::{export, tail, Envelope, JetStreamSettings, TailOptions};
use escrow_tests::spawn_app;
use reqwest::StatusCode;

fn lines(buf: &[u8]) -> Vec<Envelope> {
    String::from_utf8_lossy(buf)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is an envelope"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_tail_resumes_without_loss_or_repeats() {
    let app = spawn_app().await;
    let (a, b) = (app.user().await, app.user().await);
    for i in 0..10 {
        assert_eq!(
            app.deposit(&a, &format!("{}", i + 1)).await.status,
            StatusCode::CREATED
        );
    }
    app.transfer(&a, &b.id, "1").await;
    assert!(
        app.wait_for_read_models(Duration::from_secs(20)).await,
        "everything published"
    );

    let settings = JetStreamSettings {
        url: app.nats_url.clone(),
        stream_name: app.stream.clone(),
        subject_prefix: app.prefix.clone(),
        ..Default::default()
    };
    let client = async_nats::connect(&app.nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let wallets = TailOptions {
        subject: Some("wallet.>".into()),
        durable: Some("it-test".into()),
        limit: Some(7),
        ..Default::default()
    };

    let mut first = Vec::new();
    assert_eq!(tail(&js, &settings, &wallets, &mut first).await.unwrap(), 7);
    let mut rest = Vec::new();
    let more = TailOptions {
        limit: None,
        idle_exit: Some(Duration::from_millis(800)),
        ..wallets.clone()
    };
    tail(&js, &settings, &more, &mut rest).await.unwrap();

    let (first, rest) = (lines(&first), lines(&rest));
    let wallet_events: i64 =
        sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM events WHERE stream_id LIKE 'wallet-%'")
            .fetch_one(&app.pool)
            .await
            .unwrap()
            .0;
    assert_eq!(
        (first.len() + rest.len()) as i64,
        wallet_events,
        "nothing lost"
    );
    let ids: HashSet<_> = first.iter().chain(&rest).map(|e| e.event_id).collect();
    assert_eq!(ids.len() as i64, wallet_events, "nothing repeated");
    assert!(
        first
            .iter()
            .chain(&rest)
            .all(|e| e.stream_id.starts_with("wallet-")),
        "the subject filter holds"
    );
    let positions: Vec<i64> = first.iter().chain(&rest).map(|e| e.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "feed order");

    // Republishing from position 1 sends everything again; JetStream drops the repeats.
    let before = js
        .get_stream(&app.stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    let relay = escrow_nats::Relay::new(
        event_store::EventStore::new(app.pool.clone()),
        js.clone(),
        settings.clone(),
        escrow_nats::RelaySettings::default(),
        std::sync::Arc::new(tokio::sync::Notify::new()),
    );
    assert_eq!(
        relay.republish_from(1).await.unwrap() as i64,
        app.event_count().await
    );
    let after = js
        .get_stream(&app.stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(
        after, before,
        "Nats-Msg-Id de-duplicates the re-sent events"
    );

    // Export from Postgres: every event, as the same envelopes.
    let mut all = Vec::new();
    let n = export(
        &event_store::EventStore::new(app.pool.clone()),
        None,
        &mut all,
    )
    .await
    .unwrap();
    assert_eq!(n as i64, app.event_count().await);
    let exported = lines(&all);
    let published = first
        .iter()
        .find(|e| e.event_type == "FundsDeposited")
        .unwrap();
    assert_eq!(
        exported.iter().find(|e| e.event_id == published.event_id),
        Some(published),
        "export and NATS agree"
    );
    let mut one = Vec::new();
    let stream = &published.stream_id;
    let n = export(
        &event_store::EventStore::new(app.pool.clone()),
        Some(stream),
        &mut one,
    )
    .await
    .unwrap();
    assert_eq!(
        lines(&one).iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=n as i64).collect::<Vec<_>>()
    );
}

/// `docs/asyncapi.json` describes what is really published: a flow producing every event
/// type is read back from JetStream, and each message's subject, headers, envelope, event
/// type, schema version and data fields are checked against the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncapi_document_matches_the_code() {
    use serde_json::{json, Value};
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/asyncapi.json"
        ))
        .expect("docs/asyncapi.json"),
    )
    .expect("the document is JSON");
    let clock = std::sync::Arc::new(api::clock::ManualClock::default());
    let app = escrow_tests::spawn_app_with(escrow_tests::AppOptions {
        clock: Some(clock.clone()),
        // A webhook endpoint nobody answers is disabled within a second.
        webhook_max_age_hours: Some(0.0003),
        webhook_retry_base_ms: Some(50),
        ..Default::default()
    })
    .await;
    let (buyer, seller) = (app.user().await, app.user().await);
    let arbiter = app.grant(&app.user().await, "arbiter").await;
    app.deposit(&buyer, "1000").await;
    app.post(
        "/wallets/withdraw",
        Some(&buyer.token),
        json!({"userId": buyer.id, "amount": "1"}),
    )
    .await;
    app.transfer(&buyer, &seller.id, "2").await;
    // A split fee, so that fundings, payments and refunds produce every fee event.
    let fee_admin = app.grant(&app.user().await, "admin").await;
    let schedule = app
        .request(
            reqwest::Method::PUT,
            "/admin/fee-schedule",
            Some(&fee_admin.token),
            Some(&json!({"currency": "USD", "percentBps": 250, "payer": "SPLIT"})),
            &[],
        )
        .await;
    assert_eq!(schedule.status, StatusCode::OK, "{:?}", schedule.body);
    let contract = |title: &str| json!({"sellerId": seller.id, "buyerId": buyer.id, "title": title, "amount": "10", "inspectionPeriodHours": 24});
    let mut ids = Vec::new();
    for title in ["released", "refunded", "cancelled", "settled"] {
        let c = app
            .post("/contracts", Some(&buyer.token), contract(title))
            .await;
        assert_eq!(c.status, StatusCode::CREATED, "{:?}", c.body);
        ids.push(c.str("id"));
    }
    let act = |id: &str, verb: &str| format!("/contracts/{id}/{verb}");
    for id in [&ids[0], &ids[1], &ids[3]] {
        let r = app
            .post(&act(id, "fund"), Some(&buyer.token), json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    app.post(&act(&ids[0], "deliver"), Some(&seller.token), json!({}))
        .await;
    app.post(&act(&ids[0], "release"), Some(&buyer.token), json!({}))
        .await;
    app.post(&act(&ids[1], "refund"), Some(&seller.token), json!({}))
        .await;
    app.post(&act(&ids[2], "cancel"), Some(&seller.token), json!({}))
        .await;
    let d = app
        .post(
            "/disputes",
            Some(&buyer.token),
            json!({"contractId": ids[3], "description": "late"}),
        )
        .await;
    let body = json!({"resolution": "halves", "outcome": "SPLIT", "sellerAmount": "5", "buyerAmount": "5"});
    let r = app
        .request(
            reqwest::Method::PUT,
            &format!("/disputes/{}/resolve", d.str("id")),
            Some(&arbiter.token),
            Some(&body),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // A contract of two milestones: its events name the milestone.
    let staged = app
        .post(
            "/contracts",
            Some(&buyer.token),
            json!({"sellerId": seller.id, "buyerId": buyer.id, "title": "staged",
                   "milestones": [{"title": "one", "amount": "4"}, {"title": "two", "amount": "6"}]}),
        )
        .await;
    assert_eq!(staged.status, StatusCode::CREATED, "{:?}", staged.body);
    let staged = staged.str("id");
    for (who, path) in [
        (&buyer, act(&staged, "fund")),
        (&seller, format!("/contracts/{staged}/milestones/1/deliver")),
        (&buyer, format!("/contracts/{staged}/milestones/1/release")),
        (&seller, format!("/contracts/{staged}/milestones/2/refund")),
    ] {
        let r = app.post(&path, Some(&who.token), json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
    }
    let admin = app.grant(&app.user().await, "admin").await;
    for (verb, body) in [
        ("freeze", json!({"reason": "chargeback review"})),
        ("unfreeze", json!({})),
    ] {
        let r = app
            .post(
                &format!("/admin/wallets/{}/{verb}", seller.id),
                Some(&admin.token),
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{verb}: {:?}", r.body);
    }
    let service = app.grant(&app.user().await, "service").await;
    for reference in ["in-1", "in-2"] {
        let p = app
            .post(
                "/payins",
                Some(&service.token),
                json!({"userId": buyer.id, "amount": "3", "reference": reference}),
            )
            .await;
        assert_eq!(p.status, StatusCode::CREATED, "{:?}", p.body);
        let (verb, body) = if reference == "in-1" {
            ("confirm", json!({}))
        } else {
            ("fail", json!({"reason": "declined"}))
        };
        let r = app
            .post(
                &format!("/payins/{}/{verb}", p.str("id")),
                Some(&service.token),
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{verb}: {:?}", r.body);
    }
    for (n, verb, body) in [
        ("1", "complete", json!({"providerReference": "po-1"})),
        ("2", "fail", json!({"reason": "account closed"})),
    ] {
        let p = app
            .post(
                "/payouts",
                Some(&buyer.token),
                json!({"amount": n, "destination": "IBAN DE00 1234"}),
            )
            .await;
        assert_eq!(p.status, StatusCode::CREATED, "{:?}", p.body);
        let r = app
            .post(
                &format!("/payouts/{}/{verb}", p.str("id")),
                Some(&service.token),
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{verb}: {:?}", r.body);
    }
    let suspended = app.user().await;
    for (verb, body) in [
        ("suspend", json!({"reason": "chargebacks"})),
        ("reactivate", json!({})),
    ] {
        let r = app
            .post(
                &format!("/admin/users/{}/{verb}", suspended.id),
                Some(&admin.token),
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{verb}: {:?}", r.body);
    }
    let logged = app
        .post(
            "/logs",
            Some(&buyer.token),
            json!({"action": "login", "details": {"ip": "127.0.0.1"}}),
        )
        .await;
    assert_eq!(logged.status, StatusCode::CREATED, "{:?}", logged.body);
    let withdrawn = app
        .post(
            "/platform/revenue/withdraw",
            Some(&fee_admin.token),
            json!({"amount": "0.01"}),
        )
        .await;
    assert_eq!(
        withdrawn.status,
        StatusCode::CREATED,
        "{:?}",
        withdrawn.body
    );
    let fund_by = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let unfunded = app
        .post(
            "/contracts",
            Some(&buyer.token),
            json!({"sellerId": seller.id, "buyerId": buyer.id, "title": "expired", "amount": "10", "fundBy": fund_by}),
        )
        .await;
    assert_eq!(unfunded.status, StatusCode::CREATED, "{:?}", unfunded.body);
    clock.advance(chrono::Duration::hours(1) + chrono::Duration::seconds(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app
        .get(
            &format!("/contracts/{}", unfunded.str("id")),
            Some(&buyer.token),
        )
        .await
        .str("status")
        != "EXPIRED"
    {
        assert!(tokio::time::Instant::now() < deadline, "the draft expires");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Webhook endpoints: one changed, rotated and deleted; one nobody answers, disabled.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let hook = |events: Value| json!({"url": format!("http://{closed}/hook"), "events": events});
    let kept = app
        .post(
            "/webhooks",
            Some(&admin.token),
            hook(json!(["FundsDeposited"])),
        )
        .await;
    assert_eq!(kept.status, StatusCode::CREATED, "{:?}", kept.body);
    let kept = kept.str("id");
    let r = app
        .request(
            reqwest::Method::PATCH,
            &format!("/webhooks/{kept}"),
            Some(&admin.token),
            Some(&json!({"status": "PAUSED", "description": "later"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .post(
            &format!("/webhooks/{kept}/rotate-secret"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .request(
            reqwest::Method::DELETE,
            &format!("/webhooks/{kept}"),
            Some(&admin.token),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let unanswered = app
        .post(
            "/webhooks",
            Some(&admin.token),
            hook(json!(["WalletOpened"])),
        )
        .await;
    assert_eq!(
        unanswered.status,
        StatusCode::CREATED,
        "{:?}",
        unanswered.body
    );
    app.user().await;
    app.deposit(&app.user().await, "1").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app
        .get(
            &format!("/webhooks/{}", unanswered.str("id")),
            Some(&admin.token),
        )
        .await
        .str("status")
        != "DISABLED"
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unanswered endpoint is disabled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app.wait_for_read_models(Duration::from_secs(20)).await);

    let schemas = &doc["components"]["schemas"];
    let documented: HashSet<String> = doc["channels"]["events"]["parameters"]["eventType"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let keys = |v: &Value| -> HashSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    let strings = |v: &Value| -> HashSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let envelope = &schemas["Envelope"];
    let client = async_nats::connect(&app.nats_url).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream(&app.stream)
        .await
        .unwrap();
    let published = app.event_count().await as u64;
    let mut seen = HashSet::new();
    for seq in 1..=published {
        let m = stream.get_raw_message(seq).await.unwrap();
        let e: Value = serde_json::from_slice(&m.payload).unwrap();
        let ty = e["type"].as_str().unwrap().to_owned();
        assert!(
            documented.contains(&ty),
            "{ty} is not in docs/asyncapi.json"
        );
        let k = keys(&e);
        assert!(strings(&envelope["required"]).is_subset(&k), "{ty}: {k:?}");
        assert!(
            k.is_subset(&keys(&envelope["properties"])),
            "{ty}: undocumented envelope field in {k:?}"
        );
        assert!(strings(&schemas["Metadata"]["required"]).is_subset(&keys(&e["metadata"])));
        let own = &schemas[format!("{ty}Envelope")]["allOf"][1]["properties"];
        assert_eq!(e["schemaVersion"], own["schemaVersion"]["const"], "{ty}");
        let data = &schemas[format!("{ty}Data")];
        let dk = keys(&e["data"]);
        assert!(
            strings(&data["required"]).is_subset(&dk),
            "{ty}: missing data fields, has {dk:?}"
        );
        assert!(
            dk.is_subset(&keys(&data["properties"])),
            "{ty}: undocumented data field in {dk:?}"
        );
        let stream_id = e["streamId"].as_str().unwrap();
        let (category, id) = stream_id.split_once('-').unwrap();
        assert_eq!(
            m.subject.as_str(),
            format!("{}.{category}.{id}.{ty}", app.prefix)
        );
        let header = |h: &str| m.headers.get(h).map(|v| v.as_str().to_owned());
        let msg_id = m.headers.get(async_nats::header::NATS_MESSAGE_ID);
        assert_eq!(msg_id.map(|v| v.as_str()), e["eventId"].as_str());
        assert_eq!(
            header("Escrow-Correlation-Id").as_deref(),
            e["metadata"]["correlationId"].as_str()
        );
        seen.insert(ty);
    }
    assert_eq!(
        seen, documented,
        "the flow produced every documented type and no other"
    );
}
