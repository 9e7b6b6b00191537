//! The event store against real Postgres: optimistic concurrency, atomic multi-stream
//! appends, the commit-safe feed, and the hash chain.

use escrow_tests::fresh_database;
use event_store::{
    append, verify_chain, EventStore, FeedCursor, NewEvent, StoreError, StreamAppend,
};
use serde_json::json;
use uuid::Uuid;

fn ev(n: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "Tested".into(),
        schema_version: 1,
        data: json!({"n": n, "text": "é\u{1F600}\"quoted\"", "nested": {"b": 1, "a": [true, null]}}),
        metadata: json!({"actor": "test"}),
    }
}

fn write(stream: &str, expected: i64, n: i64) -> StreamAppend {
    StreamAppend {
        stream_id: stream.into(),
        expected_version: expected,
        events: vec![ev(n)],
    }
}

#[tokio::test]
async fn racing_appends_on_one_stream_exactly_one_wins() {
    let (_, pool) = fresh_database().await;
    let store = EventStore::new(pool.clone());
    for round in 0..20i64 {
        let s1 = store.clone();
        let s2 = store.clone();
        let a = tokio::spawn(async move {
            let mut tx = s1.begin().await.unwrap();
            let r = append(&mut tx, &[write("race-1", round, 1)]).await;
            if r.is_ok() {
                tx.commit().await.map_err(StoreError::from)
            } else {
                r.map(|_| ())
            }
        });
        let b = tokio::spawn(async move {
            let mut tx = s2.begin().await.unwrap();
            let r = append(&mut tx, &[write("race-1", round, 2)]).await;
            if r.is_ok() {
                tx.commit().await.map_err(StoreError::from)
            } else {
                r.map(|_| ())
            }
        });
        let (ra, rb) = (a.await.unwrap(), b.await.unwrap());
        let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {ra:?} / {rb:?}");
        let loser = if ra.is_ok() { rb } else { ra };
        assert!(
            matches!(loser, Err(StoreError::Conflict { .. })),
            "the loser gets a typed conflict"
        );
    }
    let events = store.read_stream("race-1", 0).await.unwrap();
    assert_eq!(events.len(), 20);
    assert!(events
        .iter()
        .enumerate()
        .all(|(i, e)| e.version == i as i64 + 1));
}

#[tokio::test]
async fn multi_stream_append_is_all_or_nothing() {
    let (_, pool) = fresh_database().await;
    let store = EventStore::new(pool.clone());
    let mut tx = store.begin().await.unwrap();
    append(&mut tx, &[write("a-1", 0, 1)]).await.unwrap();
    tx.commit().await.unwrap();
    // b-1 is new (fine) but a-1 is not at version 0: the whole append fails.
    let mut tx = store.begin().await.unwrap();
    let r = append(&mut tx, &[write("b-1", 0, 1), write("a-1", 0, 2)]).await;
    assert!(matches!(r, Err(StoreError::Conflict { .. })), "{r:?}");
    drop(tx);
    assert!(
        store.read_stream("b-1", 0).await.unwrap().is_empty(),
        "no partial write"
    );
    // A stale expected version above the real one is a conflict too, never a gap.
    let mut tx = store.begin().await.unwrap();
    let r = append(&mut tx, &[write("a-1", 5, 3)]).await;
    assert!(matches!(r, Err(StoreError::Conflict { .. })));
}

#[tokio::test]
async fn late_committing_lower_position_is_still_delivered_in_one_order() {
    let (_, pool) = fresh_database().await;
    let store = EventStore::new(pool.clone());
    // A takes the lower position and stays open; B takes a higher one and commits.
    let mut slow = store.begin().await.unwrap();
    let low = append(&mut slow, &[write("slow-1", 0, 1)]).await.unwrap();
    let mut fast = store.begin().await.unwrap();
    let high = append(&mut fast, &[write("fast-1", 0, 2)]).await.unwrap();
    fast.commit().await.unwrap();
    assert!(low[0].position < high[0].position);

    // A reader polling now must not move past the open transaction.
    let mut cursor = FeedCursor::START;
    let mut seen_by_poller = Vec::new();
    let batch = store.read_feed(cursor, 100).await.unwrap();
    for e in &batch {
        seen_by_poller.push(e.position);
        cursor = e.cursor();
    }
    assert!(
        !seen_by_poller.contains(&high[0].position),
        "B is held back while A (lower position) is open"
    );

    slow.commit().await.unwrap();
    // The horizon is cluster-wide (other databases' transactions count too), so keep
    // polling as a real reader would; never give up on a "gap".
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen_by_poller.len() < 2 && tokio::time::Instant::now() < deadline {
        for e in store.read_feed(cursor, 100).await.unwrap() {
            seen_by_poller.push(e.position);
            cursor = e.cursor();
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let all_at_once: Vec<i64> = store
        .read_feed(FeedCursor::START, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(
        seen_by_poller.len(),
        2,
        "nothing skipped: {seen_by_poller:?}"
    );
    assert_eq!(seen_by_poller, all_at_once, "every reader sees one order");
}

#[tokio::test]
async fn feed_under_concurrent_writers_misses_nothing() {
    let (_, pool) = fresh_database().await;
    let store = EventStore::new(pool.clone());
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let s = store.clone();
            tokio::spawn(async move {
                for i in 0..50i64 {
                    let mut tx = s.begin().await.unwrap();
                    append(&mut tx, &[write(&format!("w-{w}"), i, i)])
                        .await
                        .unwrap();
                    if i % 7 == 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    }
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    let reader_store = store.clone();
    let reader = tokio::spawn(async move {
        let mut cursor = FeedCursor::START;
        let mut seen = Vec::new();
        while seen.len() < 400 {
            for e in reader_store.read_feed(cursor, 64).await.unwrap() {
                seen.push(e.position);
                cursor = e.cursor();
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        seen
    });
    for w in writers {
        w.await.unwrap();
    }
    let seen = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 400, "every event seen exactly once");
    assert_eq!(seen.len(), 400);
}

#[tokio::test]
async fn hash_chain_detects_edits_and_deletions() {
    let (_, pool) = fresh_database().await;
    let store = EventStore::new(pool.clone());
    for i in 0..3 {
        let mut tx = store.begin().await.unwrap();
        append(&mut tx, &[write("chain-1", i, i)]).await.unwrap();
        tx.commit().await.unwrap();
    }
    let events = store.read_stream("chain-1", 0).await.unwrap();
    assert_eq!(
        verify_chain(&events),
        Ok(()),
        "a stored stream verifies after the JSONB round trip"
    );
    sqlx::query("UPDATE events SET data = jsonb_set(data, '{n}', '99') WHERE stream_id = 'chain-1' AND version = 2")
        .execute(&pool)
        .await
        .unwrap();
    let brk = verify_chain(&store.read_stream("chain-1", 0).await.unwrap()).unwrap_err();
    assert_eq!(brk.version, 2);
    sqlx::query("DELETE FROM events WHERE stream_id = 'chain-1' AND version = 2")
        .execute(&pool)
        .await
        .unwrap();
    let brk = verify_chain(&store.read_stream("chain-1", 0).await.unwrap()).unwrap_err();
    assert_eq!(brk.version, 2, "{brk:?}");
}

/// The group commit's statement: it writes everything or nothing, refuses (writing
/// nothing) when a stream it only read moved or a key is taken, gives each stored response
/// its command's highest position, and fails as a whole on a taken stream version.
#[tokio::test]
async fn a_batch_statement_checks_its_reads_and_keys_and_writes_all_or_nothing() {
    use event_store::{
        read_heads, write_batch, BatchKey, BatchOutcome, BatchWrite, IdempotencyRecord,
        IdempotencyRow,
    };
    use std::collections::HashMap;

    let (_, pool) = fresh_database().await;
    let store = EventStore::new(pool.clone());
    let mut tx = store.begin().await.unwrap();
    append(&mut tx, &[write("read-1", 0, 1)]).await.unwrap();
    tx.commit().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let count = |pool: sqlx::PgPool| async move {
        let (events, keys): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM idempotency_keys)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (events, keys)
    };
    let key = |k: &str, command: i32| BatchKey {
        row: IdempotencyRow {
            record: IdempotencyRecord {
                scope: "user|POST /test".into(),
                key: k.into(),
                request_hash: vec![command as u8],
            },
            answer: json!({"command": command}),
        },
        command,
    };
    // Two commands: the first writes a-1 twice, the second b-1 once.
    let writes = [
        StreamAppend {
            stream_id: "a-1".into(),
            expected_version: 0,
            events: vec![ev(1), ev(2)],
        },
        write("b-1", 0, 3),
    ];
    let batch = BatchWrite::lay_out(&writes, &HashMap::new()).unwrap();
    let commands: Vec<i32> = batch
        .events()
        .map(|(_, s, _)| i32::from(s == "b-1"))
        .collect();
    let keys = [key("k-0", 0), key("k-1", 1)];

    // read-1 is at version 1, not 0: nothing is written.
    match write_batch(&mut conn, &batch, &commands, &keys, &[("read-1", 0)])
        .await
        .unwrap()
    {
        BatchOutcome::Refused { moved, taken } => {
            assert_eq!(moved, vec![("read-1".to_owned(), 1)]);
            assert!(taken.is_empty());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        count(pool.clone()).await,
        (1, 0),
        "a refusal writes nothing"
    );

    // At the version read, everything is written; each key gets its command's position.
    let positions = match write_batch(&mut conn, &batch, &commands, &keys, &[("read-1", 1)])
        .await
        .unwrap()
    {
        BatchOutcome::Written(p) => p,
        other => panic!("expected a write, got {other:?}"),
    };
    assert_eq!(positions.len(), 3);
    assert_eq!(count(pool.clone()).await, (4, 2));
    let stored: Vec<(serde_json::Value, i64)> =
        sqlx::query_as("SELECT answer, position FROM idempotency_keys ORDER BY key")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (command, (answer, position)) in stored.iter().enumerate() {
        let highest = batch
            .events()
            .filter(|(_, s, _)| i32::from(*s == "b-1") == command as i32)
            .filter_map(|(id, _, _)| positions.get(&id).copied())
            .max()
            .unwrap();
        assert_eq!(answer, &json!({"command": command}));
        assert_eq!(
            *position, highest,
            "command {command}'s key carries its position"
        );
    }
    let heads = read_heads(&mut conn, &["a-1", "b-1", "none"])
        .await
        .unwrap();
    assert_eq!(heads.len(), 2, "a stream without events has no head");
    assert_eq!(heads["a-1"], batch.tips()["a-1"]);
    assert_eq!(heads["a-1"].0, 2);

    // A used key refuses the next batch and hands back what it holds.
    let next = BatchWrite::lay_out(&[write("c-1", 0, 4)], &HashMap::new()).unwrap();
    match write_batch(&mut conn, &next, &[0], &[key("k-1", 0)], &[])
        .await
        .unwrap()
    {
        BatchOutcome::Refused { moved, taken } => {
            assert!(moved.is_empty());
            assert_eq!(taken.len(), 1);
            assert_eq!(taken[0].1.request_hash, vec![1]);
            let b1 = batch
                .events()
                .find(|(_, s, _)| *s == "b-1")
                .map(|(id, _, _)| positions[&id]);
            assert_eq!(taken[0].1.position, b1);
            assert_eq!(taken[0].1.answer, json!({"command": 1}));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A taken version (a head someone else moved) fails the whole statement.
    let stale =
        BatchWrite::lay_out(&[write("c-1", 0, 5), write("b-1", 0, 6)], &HashMap::new()).unwrap();
    let r = write_batch(&mut conn, &stale, &[0, 0], &[key("k-2", 0)], &[]).await;
    assert!(matches!(r, Err(StoreError::Conflict { .. })), "{r:?}");
    assert_eq!(
        count(pool.clone()).await,
        (4, 2),
        "a collision writes nothing"
    );
    drop(conn);
    assert!(verify_chain(&store.read_stream("a-1", 0).await.unwrap()).is_ok());
}
