//! The outbox relay and the projection worker across a NATS outage.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream;
use escrow_tests::{folded_ledger, read_model_balances, spawn_app_with, AppOptions, OwnNats};
use futures::StreamExt;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_outage_loses_nothing_and_duplicates_nothing() {
    let mut nats = OwnNats::start().await;
    let app = spawn_app_with(AppOptions {
        nats_url: Some(nats.url.clone()),
        ..Default::default()
    })
    .await;
    let a = app.user().await;
    let b = app.user().await;
    assert_eq!(app.deposit(&a, "1000").await.status, StatusCode::CREATED);

    let commands = if std::env::var("ESCROW_LONG_TESTS").is_ok() {
        240
    } else {
        60
    };
    let writer = async {
        let mut ok = 0;
        for i in 0..commands {
            let r = if i % 2 == 0 {
                app.transfer(&a, &b.id, "1.00").await
            } else {
                app.deposit(&b, "0.50").await
            };
            assert_eq!(
                r.status,
                StatusCode::CREATED,
                "commands succeed while NATS is down: {:?}",
                r.body
            );
            ok += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ok
    };
    // The normal run stops NATS for 2 s; ESCROW_LONG_TESTS=1 for 10 s (the writer then
    // keeps going for as long).
    let outage_secs = if std::env::var("ESCROW_LONG_TESTS").is_ok() {
        10
    } else {
        2
    };
    let outage = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        nats.kill().await;
        tokio::time::sleep(Duration::from_secs(outage_secs)).await;
        nats.restart().await;
    };
    let (ok, ()) = tokio::join!(writer, outage);
    assert_eq!(ok, commands);

    assert!(
        app.wait_for_read_models(Duration::from_secs(60)).await,
        "read models converge after the outage"
    );
    let (folded, sum) = folded_ledger(&app.pool).await;
    assert_eq!(sum, rust_decimal::Decimal::ZERO);
    assert_eq!(
        read_model_balances(&app.pool).await,
        folded,
        "nothing applied twice or missed"
    );

    // JetStream holds each event exactly once.
    let events = app.event_count().await;
    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream(&app.stream).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info = stream.info().await.unwrap();
        if info.state.messages as i64 >= events || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.state.messages as i64, events,
        "one JetStream message per event"
    );
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    let mut ids = HashSet::new();
    let mut positions = Vec::new();
    while ids.len() < events as usize {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.to_string())
            .unwrap_or_else(|| panic!("no msg id: {:?}", m.headers));
        let env: escrow_nats::Envelope = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(id, env.event_id.to_string());
        assert!(ids.insert(id), "no event published twice");
        positions.push(env.position);
    }
    let (rm_tx,): (i64,) = sqlx::query_as("SELECT count(*) FROM rm_transactions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        rm_tx,
        commands as i64 + 1,
        "1 funding deposit + the commands, each once"
    );
}
