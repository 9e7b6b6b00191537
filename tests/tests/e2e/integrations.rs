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
