//! The outbox relay and the projection worker across a NATS outage.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use escrow_tests::{folded_ledger, read_model_balances, spawn_app_with, AppOptions, OwnNats};
use futures::StreamExt;
use reqwest::StatusCode;

/// NATS stopped while commands go on, for longer than the relay waits for an
/// acknowledgement (so its round fails and it must go back to its checkpoint): every
/// command is answered, and afterwards every event is on JetStream once, in feed order,
/// and in the read models once.
///
/// Fails without the `Nats-Msg-Id` header on each publish (`nats/src/relay.rs`,
/// `publish_batch`): the round that failed in the outage had reached JetStream once the
/// client reconnected, and going back to the checkpoint publishes it again. A 2-second
/// outage did not fail with it: the NATS client holds what is published while it
/// reconnects, the acknowledgements arrive in time, and no round fails.
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

    // Stopped for 6 s, past the relay's 5 s wait for an acknowledgement;
    // ESCROW_LONG_TESTS=1 for 10 s.
    let outage_secs = if std::env::var("ESCROW_LONG_TESTS").is_ok() {
        10
    } else {
        6
    };
    let restarted = AtomicBool::new(false);
    let errors_before = escrow_nats::publish_errors();
    // Transfers, deposits and (every tenth step) a whole escrow flow, each command with its
    // own Idempotency-Key so it can be replayed afterwards.
    let answered_count = AtomicUsize::new(0);
    let writer = async {
        let mut answered: Vec<(String, String, serde_json::Value, serde_json::Value)> = Vec::new();
        let mut movements = 0i64;
        // Until ten steps after NATS is back.
        let mut after_restart = 0;
        for i in 0.. {
            if restarted.load(Ordering::SeqCst) {
                after_restart += 1;
                if after_restart > 10 {
                    break;
                }
            }
            let mut steps: Vec<(String, serde_json::Value, &escrow_tests::TestUser)> = Vec::new();
            if i % 10 == 9 {
                let c = app
                    .post("/contracts", Some(&a.token), serde_json::json!({"sellerId": b.id, "buyerId": a.id, "title": "job", "amount": "3"}))
                    .await;
                assert_eq!(c.status, StatusCode::CREATED, "{:?}", c.body);
                for step in ["fund", "release"] {
                    steps.push((
                        format!("/contracts/{}/{step}", c.str("id")),
                        serde_json::json!({}),
                        &a,
                    ));
                }
            } else if i % 2 == 0 {
                steps.push((
                    "/transfers".into(),
                    serde_json::json!({"toUserId": b.id, "amount": "1.00"}),
                    &a,
                ));
            } else {
                steps.push((
                    "/wallets/deposit".into(),
                    serde_json::json!({"userId": b.id, "amount": "0.50"}),
                    &b,
                ));
            }
            for (n, (path, body, who)) in steps.into_iter().enumerate() {
                let key = format!("nats-{i}-{n}");
                let r = app
                    .request(
                        reqwest::Method::POST,
                        &path,
                        Some(&who.token),
                        Some(&body),
                        &[("Idempotency-Key", &key)],
                    )
                    .await;
                assert!(
                    r.status.is_success(),
                    "commands succeed while NATS is down: {:?}",
                    r.body
                );
                movements += 1;
                answered.push((key, path, body, r.body));
                answered_count.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (movements, answered)
    };
    let outage = async {
        // After a few commands, not after a time.
        while answered_count.load(Ordering::SeqCst) < 8 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        nats.kill().await;
        let at_kill = answered_count.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(outage_secs)).await;
        let at_restart = answered_count.load(Ordering::SeqCst);
        nats.restart().await;
        restarted.store(true, Ordering::SeqCst);
        (at_kill, at_restart)
    };
    let ((movements, answered), (at_kill, at_restart)) = tokio::join!(writer, outage);
    assert!(
        at_restart > at_kill && answered.len() > at_restart,
        "commands were answered while NATS was down ({at_kill} → {at_restart}) and after ({})",
        answered.len()
    );
    // A retried key answers what it answered first, after the outage too.
    for (key, path, body, first) in answered.iter().step_by(7) {
        let who = if path == "/wallets/deposit" { &b } else { &a };
        let again = app
            .request(
                reqwest::Method::POST,
                path,
                Some(&who.token),
                Some(body),
                &[("Idempotency-Key", key)],
            )
            .await;
        assert_eq!(&again.body, first, "replay of {key}");
    }

    assert!(
        app.wait_for_read_models(Duration::from_secs(60)).await,
        "read models converge after the outage"
    );
    assert!(
        escrow_nats::publish_errors() > errors_before,
        "a relay round failed in the outage and was retried from the checkpoint"
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
    let (feed,): (Vec<i64>,) =
        sqlx::query_as("SELECT array_agg(position ORDER BY tx_id, position) FROM events")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        positions, feed,
        "JetStream holds every event of the store, in the feed's order"
    );
    let (rm_tx,): (i64,) = sqlx::query_as("SELECT count(*) FROM rm_transactions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        rm_tx,
        movements + 1,
        "1 funding deposit + every money movement, each once"
    );
    println!(
        "NATS down {outage_secs} s: {} commands answered ({} while NATS was down), {events} events, \
         each once on JetStream in feed order",
        answered.len(),
        at_restart - at_kill
    );
}
