//! PostgreSQL streaming replication, on clusters of the test's own: a query node reading
//! from a synchronous hot standby, then the primary crashed and the standby promoted.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use escrow_tests::{spawn_app_with, AppOptions, OwnPostgres};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

/// Seen failing with the query node's refusal of writes removed (a deposit sent to it
/// reached the read-only standby: a 500). Without `synchronous_standby_names` it still
/// passed on loopback, where asynchronous replication is all but instant: the test shows
/// the procedure keeps every acknowledged command, not that asynchronous replication
/// would lose one.
#[tokio::test]
async fn a_query_node_reads_the_standby_and_a_promotion_loses_no_acknowledged_command() {
    let primary = OwnPostgres::start();
    let url = primary.database("ledger").await;
    let standby = OwnPostgres::standby_of(&primary);
    primary.require_a_synchronous_standby().await;
    let standby_url = url.replace(
        &format!(":{}/", primary.port),
        &format!(":{}/", standby.port),
    );
    let id = Uuid::new_v4().simple().to_string();
    let (stream, prefix) = (format!("T_{id}"), format!("t{id}.escrow.events"));
    let shared = |u: &str| Some((u.to_owned(), stream.clone(), prefix.clone()));
    let mut writer = spawn_app_with(AppOptions {
        share_with: shared(&url),
        ..Default::default()
    })
    .await;
    let origin = writer.base.trim_end_matches("/api/v1").to_owned();
    let query = spawn_app_with(AppOptions {
        share_with: shared(&standby_url),
        role: Some(api::WorkerRole::Query),
        primary_api_url: Some(origin.clone()),
        ..Default::default()
    })
    .await;

    // Reads on the query node, each at the position its command returned.
    let u = writer.user().await;
    for k in 1..=20 {
        let r = writer.deposit(&u, "1.00").await;
        assert!(r.status.is_success(), "{:?}", r.body);
        let at = r.body["position"].as_i64().expect("position");
        let q = query
            .get(
                &format!("/wallets/{}?minPosition={at}", u.id),
                Some(&u.token),
            )
            .await;
        assert_eq!(q.status, StatusCode::OK, "{:?}", q.body);
        assert_eq!(q.str("balance"), format!("{k}.00"));
        assert_eq!(q.headers["x-read-consistency"], "fresh");
    }
    let refused = query
        .post(
            "/wallets/deposit",
            Some(&u.token),
            json!({"userId": u.id, "amount": "1"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.code(), "READ_ONLY_NODE");
    assert_eq!(
        refused.headers["location"].to_str().expect("text"),
        format!("{origin}/api/v1/wallets/deposit")
    );

    // A load of deposits; the primary crashes under it.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let failures = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (acked, failures, stop) = (acked.clone(), failures.clone(), stop.clone());
        let base = writer.base.clone();
        let (user, token) = (u.id.clone(), u.token.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("client");
            while !stop.load(Ordering::SeqCst) {
                let r = http
                    .post(format!("{base}/wallets/deposit"))
                    .bearer_auth(&token)
                    .json(&json!({"userId": user, "amount": "1.00"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        if let Some(t) = body["transaction"]["id"].as_str() {
                            acked.lock().expect("lock").push(t.to_owned());
                        }
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("lock").len() < 30 {
        assert!(Instant::now() < deadline, "the load runs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    primary.stop("immediate");
    let deadline = Instant::now() + Duration::from_secs(30);
    while failures.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the load meets the crash");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    load.await.expect("load ends");
    let acked_before: Vec<String> = acked.lock().expect("lock").clone();
    standby.promote();
    let _ = tokio::time::timeout(Duration::from_secs(10), writer.stop()).await;

    // The relay's cursor from before the crash, as the promoted standby has it.
    let pool = sqlx::PgPool::connect(&standby_url).await.expect("promoted");
    let (cursor_tx,): (i64,) =
        sqlx::query_as("SELECT coalesce(max(tx_id), 0) FROM checkpoints WHERE name LIKE 'relay%'")
            .fetch_one(&pool)
            .await
            .expect("relay checkpoint");
    let after = spawn_app_with(AppOptions {
        share_with: shared(&standby_url),
        ..Default::default()
    })
    .await;
    let mut acked_after = Vec::new();
    for _ in 0..10 {
        let r = after.deposit(&u, "1.00").await;
        assert!(r.status.is_success(), "{:?}", r.body);
        acked_after.push(
            r.body["transaction"]["id"]
                .as_str()
                .expect("a transaction")
                .to_owned(),
        );
    }
    // Every acknowledged deposit is on the new primary, once.
    for t in acked_before.iter().chain(&acked_after) {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM events WHERE event_type = 'FundsDeposited' AND data->>'transactionId' = $1",
        )
        .bind(t)
        .fetch_one(&pool)
        .await
        .expect("count");
        assert_eq!(n, 1, "acknowledged deposit {t}");
    }
    assert_eq!(
        acked_before.iter().collect::<HashSet<_>>().len(),
        acked_before.len()
    );
    // Transaction ids continue on the promoted standby: the relay's cursor stays before
    // every new event, so its feed picks up where it was.
    let (newest_tx,): (i64,) = sqlx::query_as("SELECT max(tx_id) FROM events")
        .fetch_one(&pool)
        .await
        .expect("newest");
    assert!(
        cursor_tx > 0 && newest_tx > cursor_tx,
        "{cursor_tx} < {newest_tx}"
    );
    assert!(after.wait_for_read_models(Duration::from_secs(30)).await);
    let events = after.event_count().await;
    let client = async_nats::connect(&after.nats_url).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let mut messages = 0;
    for _ in 0..100 {
        let mut s = js.get_stream(&stream).await.expect("stream");
        messages = s.info().await.expect("info").state.messages;
        if messages as i64 >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(messages as i64, events, "every event on JetStream once");
    let report = api::verify::verify(&pool).await.expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
    println!(
        "standby promoted: {} deposits acknowledged before the crash, {} after; relay cursor tx {cursor_tx}, newest tx {newest_tx}",
        acked_before.len(),
        acked_after.len()
    );
}
