//! The ledger on a JetStream cluster of three with its events stream replicated three
//! times: losing a member, the stream's leader among them, loses and stops nothing.

use std::time::Duration;

use async_nats::jetstream;
use escrow_tests::{
    folded_ledger, read_model_balances, spawn_app_with, AppOptions, OwnNatsCluster,
};
use reqwest::StatusCode;

/// The leader of `stream` as the cluster reports it, once one is elected.
async fn leader(js: &jetstream::Context, stream: &str) -> Option<String> {
    let mut s = js.get_stream(stream).await.ok()?;
    s.info().await.ok()?.cluster.as_ref()?.leader.clone()
}

/// Fails with `NATS_STREAM_REPLICAS` not applied to the stream (seen: one copy, on the
/// killed member, and the projection never caught up).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_stream_leader_loses_and_stops_nothing() {
    let mut cluster = OwnNatsCluster::start().await;
    let client = async_nats::connect(escrow_nats::server_addrs(&cluster.url).unwrap())
        .await
        .unwrap();
    let js = jetstream::new(client);
    // JetStream creates replicated streams once the members have elected their leader.
    let mut ready = Err(String::new());
    for _ in 0..200 {
        ready = js
            .get_or_create_stream(jetstream::stream::Config {
                name: "PROBE".into(),
                subjects: vec!["probe.>".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        if ready.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready.is_ok(), "the cluster's JetStream came up: {ready:?}");
    let app = spawn_app_with(AppOptions {
        nats_url: Some(cluster.url.clone()),
        nats_stream_replicas: Some(3),
        ..Default::default()
    })
    .await;
    let stream = app.shared().1;
    let (alice, bob) = (app.user().await, app.user().await);
    app.deposit(&alice, "100").await;
    app.transfer(&alice, &bob.id, "1").await;
    assert!(app.wait_for_read_models(Duration::from_secs(30)).await);
    let mut s = js.get_stream(&stream).await.unwrap();
    let info = s.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3, "the stream has three copies");
    let before = leader(&js, &stream).await.expect("a stream leader");
    cluster.kill(&before).await;

    // Commands need only PostgreSQL; the relay and the projections ride out the election.
    for i in 0..30 {
        let (from, to) = if i % 2 == 0 {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        let r = app.transfer(from, &to.id, "1").await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    assert!(
        app.wait_for_read_models(Duration::from_secs(60)).await,
        "the projections caught up after the leader's loss"
    );
    let mut after = None;
    for _ in 0..100 {
        after = leader(&js, &stream).await;
        if after.as_deref().is_some_and(|l| l != before) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        after.as_deref().is_some_and(|l| l != before),
        "a new leader: {after:?}, was {before}"
    );
    // Each event on the stream once, none lost.
    let events = app.event_count().await;
    let mut messages = 0;
    for _ in 0..100 {
        messages = js
            .get_stream(&stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages;
        if messages as i64 >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(messages as i64, events);
    let (folded, total) = folded_ledger(&app.pool).await;
    assert_eq!(total, rust_decimal::Decimal::ZERO);
    assert_eq!(read_model_balances(&app.pool).await, folded);
    let report = api::verify::verify(&app.pool).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}
