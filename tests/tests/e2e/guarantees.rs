//! Guarantees that had no test of their own: a projection that ignores redeliveries and
//! fills gaps, a relay that keeps its checkpoint before a publish JetStream refused,
//! idempotency keys scoped to the route, readiness, hidden internals and timeouts.

use std::time::{Duration, Instant};

use api::WorkerRole;
use async_nats::jetstream::{self, stream};
use escrow_nats::{Envelope, JetStreamSettings};
use escrow_tests::{fresh_database, spawn_app_with, AppOptions, OwnNats, OwnPostgres, TestApp};
use event_store::{EventStore, FeedCursor};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Publishes `events` to the app's JetStream stream by hand, each under a message id of
/// its own, so that JetStream's de-duplication cannot hide a repeat from the consumer.
async fn publish_by_hand(js: &jetstream::Context, app: &TestApp, events: &[&Envelope]) {
    for e in events {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            uuid::Uuid::new_v4().to_string().as_str(),
        );
        let subject = escrow_nats::subject_for(&app.prefix, &e.stream_id, &e.event_type);
        js.publish_with_headers(subject, headers, serde_json::to_vec(e).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// Waits until the durable consumer `name` has been handed every message of the stream and
/// has acknowledged each (at most 20 s).
async fn until_consumed(js: &jetstream::Context, app: &TestApp, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stream = js.get_stream(&app.stream).await.unwrap();
        let last = stream.get_info().await.unwrap().state.last_sequence;
        // The worker creates its durable consumer once it holds its lease.
        let (delivered, unacked, pending) = match stream.consumer_info(name).await {
            Ok(c) => (
                c.delivered.stream_sequence,
                c.num_ack_pending,
                c.num_pending,
            ),
            Err(_) => (0, 0, 1),
        };
        if delivered >= last && unacked == 0 && pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "consumer {name}: delivered {delivered} of {last}, {unacked} unacknowledged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A wallet's read model: balance, history rows, and the stream version applied.
async fn wallet_rows(app: &TestApp, stream: &str) -> (String, i64, i64) {
    let wallet = uuid::Uuid::parse_str(stream.trim_start_matches("wallet-")).unwrap();
    let (balance,): (rust_decimal::Decimal,) =
        sqlx::query_as("SELECT balance FROM rm_wallets WHERE id = $1")
            .bind(wallet)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let (rows,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM rm_transactions WHERE $1 IN (from_wallet_id, to_wallet_id)",
    )
    .bind(wallet)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let version = projections::stream_version(&app.pool, stream)
        .await
        .unwrap();
    (balance.to_string(), rows, version)
}

/// The live projection worker, fed by hand: an event delivered ahead of its predecessors
/// is applied after them, filled in from the event store; events delivered again — the
/// same stream version, past JetStream's de-duplication — change nothing.
///
/// Fails when the worker applies an event whose version equals the one it recorded
/// (`projections/src/apply.rs`: `env.version <= current` made `<`, and the gap test
/// `env.version != current + 1` made `>`): the balance counts the redelivered deposit
/// twice. Fails without `fill_gaps` (`projections/src/worker.rs`: the call replaced by
/// an error): the ahead-of-its-turn deposit is never applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_ignores_redeliveries_and_fills_gaps() {
    // Commands are stored, but nothing publishes or projects them: the test does.
    let app = spawn_app_with(AppOptions {
        role: Some(WorkerRole::Api),
        ..Default::default()
    })
    .await;
    let u = app.user().await;
    for amount in ["1.00", "2.00", "4.00"] {
        assert_eq!(app.deposit(&u, amount).await.status, StatusCode::CREATED);
    }
    let (stream_id,): (String,) =
        sqlx::query_as("SELECT DISTINCT stream_id FROM events WHERE stream_id LIKE 'wallet-%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let events: Vec<Envelope> = EventStore::new(app.pool.clone())
        .read_stream(&stream_id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(Envelope::from)
        .collect();
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4], "opened, then three deposits");

    let js = jetstream::new(async_nats::connect(&app.nats_url).await.unwrap());
    let settings = JetStreamSettings {
        url: app.nats_url.clone(),
        stream_name: app.stream.clone(),
        subject_prefix: app.prefix.clone(),
        ..Default::default()
    };
    escrow_nats::ensure_stream(&js, &settings).await.unwrap();
    let durable = "by-hand";
    let worker = projections::ProjectionWorker::new(
        app.pool.clone(),
        js.clone(),
        settings,
        projections::WorkerSettings {
            durable_name: durable.into(),
            ..Default::default()
        },
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(stopped));

    // Version 4 alone: versions 1 to 3 were never delivered.
    publish_by_hand(&js, &app, &[&events[3]]).await;
    until_consumed(&js, &app, durable).await;
    assert_eq!(
        wallet_rows(&app, &stream_id).await,
        ("7.00".into(), 3, 4),
        "the gap was filled from the store and the stream applied in order"
    );

    // Delivered again: the last version applied, an older one, and the first.
    publish_by_hand(&js, &app, &[&events[3], &events[1], &events[0]]).await;
    until_consumed(&js, &app, durable).await;
    assert_eq!(
        wallet_rows(&app, &stream_id).await,
        ("7.00".into(), 3, 4),
        "redeliveries change no read model"
    );
    let (messages,) = (js
        .get_stream(&app.stream)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap()
        .state
        .messages,);
    assert_eq!(messages, 4, "the consumer was handed all four deliveries");

    stop.send(true).unwrap();
    running.await.unwrap();
}

/// The cursor of the `n`-th event (from 1) in feed order.
async fn nth_in_feed(app: &TestApp, n: i64) -> FeedCursor {
    let (tx_id, position): (i64, i64) = sqlx::query_as(
        "SELECT tx_id, position FROM events ORDER BY tx_id, position OFFSET $1 LIMIT 1",
    )
    .bind(n - 1)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    FeedCursor { tx_id, position }
}

/// JetStream refuses publishes (the stream is at its message limit): commands still
/// succeed, the relay's checkpoint stays before the first refused event, and once the
/// limit is lifted every event reaches JetStream once, in feed order.
///
/// Fails when the relay takes a refused acknowledgement for success (`nats/src/relay.rs`,
/// `publish_batch`: the `Ok(Err(err))` arm made `{}`): the checkpoint moves past the
/// refused events and they never reach JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_jetstream_refuses_is_retried_and_never_skipped() {
    let (db_url, _) = fresh_database().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (stream_name, prefix) = (format!("T_{id}"), format!("t{id}.escrow.events"));
    let nats_url = std::env::var("NATS_URL").unwrap();
    let js = jetstream::new(async_nats::connect(&nats_url).await.unwrap());
    // Room for four messages, then new ones are refused.
    let limited = stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{prefix}.>")],
        storage: stream::StorageType::File,
        duplicate_window: escrow_nats::DUPLICATE_WINDOW,
        max_messages: 4,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.create_stream(limited.clone()).await.unwrap();
    let app = spawn_app_with(AppOptions {
        share_with: Some((db_url, stream_name.clone(), prefix)),
        ..Default::default()
    })
    .await;
    let errors_before = escrow_nats::publish_errors();
    // Two registrations (a user and a wallet each) fill the stream; the rest is refused.
    let (a, b) = (app.user().await, app.user().await);
    assert_eq!(app.deposit(&a, "10").await.status, StatusCode::CREATED);
    assert_eq!(
        app.transfer(&a, &b.id, "3").await.status,
        StatusCode::CREATED,
        "commands do not depend on JetStream"
    );
    let events = app.event_count().await;
    assert_eq!(events, 7);
    let fifth = nth_in_feed(&app, 5).await;
    // Long enough for the relay to try the refused events several times (it goes back to
    // its checkpoint 500 ms after a failed round), and for one that skipped them to have
    // saved a checkpoint past them (it saves every 250 ms).
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let saved = nats_checkpoint(&app).await;
        assert!(
            key(saved) < key(fifth),
            "the checkpoint {saved:?} stays before the first refused event {fifth:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The relay did meet the refusal.
    let deadline = Instant::now() + Duration::from_secs(20);
    while escrow_nats::publish_errors() == errors_before {
        assert!(Instant::now() < deadline, "the relay never met a refusal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut s = js.get_stream(&stream_name).await.unwrap();
    assert_eq!(s.info().await.unwrap().state.messages, 4);

    js.update_stream(stream::Config {
        max_messages: -1,
        ..limited
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.info().await.unwrap().state.messages < events as u64 {
        assert!(
            Instant::now() < deadline,
            "the refused events reached JetStream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (feed,): (Vec<i64>,) =
        sqlx::query_as("SELECT array_agg(position ORDER BY tx_id, position) FROM events")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let mut published = Vec::new();
    for seq in 1..=events as u64 {
        let m = s.get_raw_message(seq).await.unwrap();
        let env: Envelope = serde_json::from_slice(&m.payload).unwrap();
        published.push(env.position);
    }
    assert_eq!(published, feed, "every event once, in feed order");
    assert!(app.wait_for_read_models(Duration::from_secs(10)).await);
    assert!(api::verify::verify(&app.pool).await.unwrap().ok());
}

async fn nats_checkpoint(app: &TestApp) -> FeedCursor {
    EventStore::new(app.pool.clone())
        .load_checkpoint(&escrow_nats::relay_lease_name(&app.stream))
        .await
        .unwrap()
}

fn key(c: FeedCursor) -> (i64, i64) {
    (c.tx_id, c.position)
}

/// One Idempotency-Key on three routes, and by a second caller: four commands, each
/// taking effect once and each replaying its own answer.
///
/// Fails when the scope leaves out the route (`api/src/routes/mod.rs`, `command_context`:
/// the scope made `{scope_owner}` alone): the transfer then answers 422
/// `IDEMPOTENCY_KEY_REUSED`.
#[tokio::test]
async fn idempotency_keys_are_scoped_to_the_caller_and_the_route() {
    let app = escrow_tests::spawn_app().await;
    let (a, b) = (app.user().await, app.user().await);
    let key = [("Idempotency-Key", "one-key-for-everything")];
    let calls = [
        (
            &a,
            "/wallets/deposit",
            json!({"userId": a.id, "amount": "50"}),
        ),
        (&a, "/transfers", json!({"toUserId": b.id, "amount": "20"})),
        (
            &a,
            "/wallets/withdraw",
            json!({"userId": a.id, "amount": "5"}),
        ),
        (
            &b,
            "/wallets/deposit",
            json!({"userId": b.id, "amount": "1"}),
        ),
    ];
    let mut first = Vec::new();
    for (who, path, body) in &calls {
        let r = app
            .request(Method::POST, path, Some(&who.token), Some(body), &key)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{path}: {:?}", r.body);
        assert!(r.headers.get("idempotent-replayed").is_none(), "{path}");
        first.push(r.body);
    }
    let ids: std::collections::HashSet<&str> = first
        .iter()
        .map(|b| b["transaction"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "four movements");
    for ((who, path, body), answered) in calls.iter().zip(&first) {
        let again = app
            .request(Method::POST, path, Some(&who.token), Some(body), &key)
            .await;
        assert_eq!(again.headers["idempotent-replayed"], "true", "{path}");
        assert_eq!(&again.body, answered, "{path} replays its own answer");
    }
    let p = first
        .iter()
        .filter_map(|b| b["position"].as_i64())
        .max()
        .unwrap();
    let wa = app
        .get(
            &format!("/wallets/{}?minPosition={p}", a.id),
            Some(&a.token),
        )
        .await;
    let wb = app
        .get(
            &format!("/wallets/{}?minPosition={p}", b.id),
            Some(&b.token),
        )
        .await;
    assert_eq!(
        (wa.str("balance"), wb.str("balance")),
        ("25.00".into(), "21.00".into())
    );
    let (movements,): (i64,) = sqlx::query_as(
        "SELECT count(DISTINCT data->>'transactionId') FROM events WHERE data ? 'transactionId'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(movements, 4, "each command took effect once");
}

/// Polls `/ready` until it answers `status` (at most 15 s) and returns the body.
async fn ready_becomes(app: &TestApp, status: StatusCode) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = app.get("/ready", None).await;
        if r.status == status {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "/ready still answers {}: {:?}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/ready` answers 503 `NOT_READY` naming what is down while PostgreSQL, then NATS, is
/// stopped, and 200 again once each is back.
///
/// Fails when readiness does not ask PostgreSQL (`api/src/routes/health.rs`: `pg` made
/// `true`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_503_while_postgres_or_nats_is_down() {
    let pg = OwnPostgres::start();
    let db = pg.database("escrow").await;
    let mut nats = OwnNats::start().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let app = spawn_app_with(AppOptions {
        share_with: Some((db, format!("T_{id}"), format!("t{id}.escrow.events"))),
        nats_url: Some(nats.url.clone()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        ready_becomes(&app, StatusCode::OK).await,
        json!({"postgres": "ok", "nats": "ok"})
    );

    tokio::task::block_in_place(|| pg.stop("fast"));
    let down = ready_becomes(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(down["code"], "NOT_READY");
    assert_eq!(down["detail"], "postgres: unavailable, nats: ok");
    tokio::task::block_in_place(|| pg.start_again());
    ready_becomes(&app, StatusCode::OK).await;

    nats.kill().await;
    let down = ready_becomes(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(down["detail"], "postgres: ok, nats: unavailable");
    nats.restart().await;
    ready_becomes(&app, StatusCode::OK).await;
}

/// A failure inside the server is a 500 problem+json that names no table, statement or
/// error of the database; the cause goes to the log only.
///
/// Fails when `ApiError::internal` (`api/src/error.rs`) puts its cause in the detail.
#[tokio::test]
async fn a_500_shows_no_internals() {
    let app = escrow_tests::spawn_app().await;
    let u = app.user().await;
    sqlx::query("ALTER TABLE rm_wallets RENAME TO rm_wallets_away")
        .execute(&app.pool)
        .await
        .unwrap();
    let r = app.get(&format!("/wallets/{}", u.id), Some(&u.token)).await;
    sqlx::query("ALTER TABLE rm_wallets_away RENAME TO rm_wallets")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{:?}", r.body);
    assert_eq!(
        r.headers["content-type"], "application/problem+json",
        "{:?}",
        r.body
    );
    let text = r.body.to_string().to_lowercase();
    for leak in [
        "rm_wallets",
        "relation",
        "does not exist",
        "select",
        "sqlx",
        "error returned",
    ] {
        assert!(!text.contains(leak), "{leak:?} in {text}");
    }
    assert_eq!(
        app.get(&format!("/wallets/{}", u.id), Some(&u.token))
            .await
            .status,
        StatusCode::OK
    );
}

/// A request held up past `REQUEST_TIMEOUT_MS` (here by a lock on the table it reads) is
/// answered 503 `TIMEOUT` with `Retry-After`, when the timeout runs out.
///
/// Fails without the timeout around the handlers (`api/src/limits.rs`, `enforce`: the
/// `tokio::time::timeout` removed): the read then waits for the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_is_answered_503_timeout() {
    let app = spawn_app_with(AppOptions {
        request_timeout_ms: Some(500),
        ..Default::default()
    })
    .await;
    let u = app.user().await;
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE rm_wallets IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = Instant::now();
    let r = app.get(&format!("/wallets/{}", u.id), Some(&u.token)).await;
    let took = started.elapsed();
    blocker.rollback().await.unwrap();
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "TIMEOUT"),
        "{:?}",
        r.body
    );
    assert_eq!(r.headers["retry-after"], "1");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    assert_eq!(
        app.get(&format!("/wallets/{}", u.id), Some(&u.token))
            .await
            .status,
        StatusCode::OK
    );
}
