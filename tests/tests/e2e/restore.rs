//! Backup and restore as docs/operations.md says: a logical dump of a store written on a
//! busy cluster, restored into a new cluster and served with a fresh JetStream stream.

use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use escrow_tests::{spawn_app, spawn_app_with, try_spawn_app_with, AppOptions, OwnPostgres};
use event_store::EventStore;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The newest installed PostgreSQL's program `name` (the version the test clusters run).
fn pg_program(name: &str) -> std::path::PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join(name).exists())
        .max()
        .expect("a PostgreSQL version with the program")
        .join(name)
}

/// Without the repair, the restored events' transaction ids (from the shared test cluster,
/// which has run thousands of transactions) sit above the new cluster's: the server refuses
/// to start, and `escrow restore` makes every event reach the fresh JetStream stream once
/// and in feed order, with fresh reads and a clean `verify` (fails without the
/// renumbering: seen, the replay found none of the restored events, all hidden below the
/// feed's horizon).
#[tokio::test]
async fn a_dump_restored_into_a_new_cluster_is_served_in_feed_order() {
    let mut source = spawn_app().await;
    let (alice, bob) = (source.user().await, source.user().await);
    source.deposit(&alice, "100").await;
    for amount in ["10", "20", "5.50"] {
        source.transfer(&alice, &bob.id, amount).await;
    }
    let c = source
        .post(
            "/contracts",
            Some(&alice.token),
            json!({"buyerId": alice.id, "sellerId": bob.id, "title": "restored", "amount": "30"}),
        )
        .await;
    source
        .post(
            &format!("/contracts/{}/fund", c.str("id")),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert!(source.wait_for_read_models(Duration::from_secs(20)).await);
    let stored = source.event_count().await;
    let (source_url, _, _) = source.shared();
    source.stop().await;

    let dump = std::env::temp_dir().join(format!("escrow-dump-{}", uuid::Uuid::new_v4()));
    let dumped = std::process::Command::new(pg_program("pg_dump"))
        .args(["-Fc", "--no-owner", "-d", &source_url, "-f"])
        .arg(&dump)
        .stderr(Stdio::inherit())
        .status()
        .expect("pg_dump runs");
    assert!(dumped.success());
    let cluster = OwnPostgres::start();
    let target = cluster.database("restored").await;
    let restored = std::process::Command::new(pg_program("pg_restore"))
        .args(["--no-owner", "-d", &target])
        .arg(&dump)
        .stderr(Stdio::inherit())
        .status()
        .expect("pg_restore runs");
    assert!(restored.success());
    let _ = std::fs::remove_file(&dump);

    let pool = sqlx::PgPool::connect(&target).await.unwrap();
    let store = EventStore::new(pool.clone());
    assert!(
        store.restored_ahead().await.unwrap().is_some(),
        "the restored ids are ahead of the new cluster's"
    );
    let id = uuid::Uuid::new_v4().simple().to_string();
    let fresh = || AppOptions {
        share_with: Some((
            target.clone(),
            format!("T_{id}"),
            format!("t{id}.escrow.events"),
        )),
        ..Default::default()
    };
    let refused = try_spawn_app_with(fresh())
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("escrow restore")),
        "{refused:?}"
    );

    let report = api::admin::restore(&target).await.unwrap();
    assert_eq!(report.renumbered as i64, stored);
    assert_eq!(report.replayed as i64, stored);
    assert!(store.restored_ahead().await.unwrap().is_none());

    let served = spawn_app_with(fresh()).await;
    let after = served
        .get(&format!("/wallets/{}", alice.id), Some(&alice.token))
        .await;
    assert_eq!(after.status, StatusCode::OK, "{:?}", after.body);
    assert_eq!(after.str("balance"), "34.50");
    assert_eq!(after.str("heldInEscrow"), "30.00");
    let deposit = served.deposit(&bob, "1").await;
    assert_eq!(deposit.status, StatusCode::CREATED, "{:?}", deposit.body);
    assert!(served.wait_for_read_models(Duration::from_secs(20)).await);
    let total = served.event_count().await;

    // Every event is on the fresh stream once, in feed order: the restored ones by
    // position, then the new command's.
    let nats = async_nats::connect(std::env::var("NATS_URL").unwrap())
        .await
        .unwrap();
    let js = jetstream::new(nats);
    let mut stream = js.get_stream(format!("T_{id}")).await.unwrap();
    let mut messages = 0;
    for _ in 0..100 {
        messages = stream.info().await.unwrap().state.messages;
        if messages as i64 >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(messages as i64, total, "each event once");
    let mut positions = Vec::new();
    for seq in 1..=messages {
        let m = stream.get_raw_message(seq).await.unwrap();
        let envelope: Value = serde_json::from_slice(&m.payload).unwrap();
        positions.push(envelope["position"].as_i64().unwrap());
    }
    let mut ordered = positions.clone();
    ordered.sort_unstable();
    assert_eq!(positions, ordered, "in feed order");
    let verify = api::verify::verify(&pool).await.unwrap();
    assert!(verify.ok(), "{:?}", verify.problems);
}
