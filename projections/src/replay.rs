//! Rebuilding the read models from the Postgres event store, aside from the live ones.
//!
//! The rebuild writes into a shadow schema (`replay_read_models`) through the same apply
//! function the live worker uses (the connection's `search_path` puts the shadow tables
//! first), committing every batch with its feed cursor, so an interrupted replay resumes
//! where it stopped. When it has caught up, one transaction locks the live tables, applies
//! the last events, and swaps the shadow tables in: readers see the old read models until
//! that commit and the new ones after it, never a mix.
//!
//! The shadow tables get the live tables' primary-key and unique constraints (the apply
//! function's upserts and lookups need them) but not their other indexes: those are built
//! once, under their live names and definitions, when the rebuild has caught up and
//! before the swap — one sorted build per index instead of maintaining it row by row.
//!
//! The per-stream versions (`projection_streams`) are recorded the same way: the feed
//! gives each event once and in order, so its batches neither look them up nor upsert
//! them; once caught up, one grouped read of the store records them all, after checking
//! that no stream has a gap and that the rebuild applied as many events as the store holds.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::apply::Incoming;
use domain::codec::decode_text;
use domain::Event;
use event_store::{EventStore, FeedCursor, FeedData, RecordedEvent};
use futures::TryStreamExt;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};

use crate::apply::{apply, Source};

/// The projections this build knows (all rebuilt together: they share one version table).
pub const PROJECTIONS: &[&str] = &[crate::PROJECTION];

const SHADOW: &str = "replay_read_models";
/// The read models and the projection's own bookkeeping.
fn tables() -> impl Iterator<Item = &'static str> {
    crate::apply::READ_MODEL_TABLES
        .iter()
        .copied()
        .chain(["projection_streams", "projection_checkpoints"])
}

/// Tuning and test hooks.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Events applied per transaction: large enough to amortise the commit, small enough
    /// that an interruption loses little work.
    pub batch_events: i64,
    /// Stop (as if interrupted) after this many batches; for tests.
    pub stop_after_batches: Option<usize>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            batch_events: 5_000,
            stop_after_batches: None,
        }
    }
}

/// How a replay went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayStats {
    /// Events applied by this run (a resumed run counts only its own).
    pub events: u64,
    /// Whether the rebuilt models were swapped in (false when stopped early).
    pub swapped: bool,
    /// Wall time.
    pub elapsed: Duration,
    /// Of which applying the feed to the shadow tables (the rest: building their other
    /// indexes, recording the streams' versions, catching up under lock and swapping).
    pub loading: Duration,
}

/// Progress, reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Events applied so far by this run.
    pub done: u64,
    /// Events in the store when the run started (an estimate of the total).
    pub total: u64,
    /// Events per second so far.
    pub rate: f64,
}

async fn shadow_connection(pool: &PgPool) -> anyhow::Result<PgConnection> {
    let mut conn = pool.acquire().await?.detach();
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {SHADOW}"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("SET search_path TO {SHADOW}, public"))
        .execute(&mut conn)
        .await?;
    // A replay batch may take longer than an API request's lock wait.
    sqlx::query("SET lock_timeout = '60s'")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

async fn prepare(conn: &mut PgConnection) -> anyhow::Result<FeedCursor> {
    let (exists,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'replay_cursor')",
    )
    .bind(SHADOW)
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        let mut tx = conn.begin().await?;
        for t in tables() {
            sqlx::query(&format!("DROP TABLE IF EXISTS {SHADOW}.{t}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "CREATE TABLE {SHADOW}.{t} (LIKE public.{t} INCLUDING ALL EXCLUDING INDEXES)"
            ))
            .execute(&mut *tx)
            .await?;
            for index in indexes(&mut tx, "public", t).await? {
                if let Some(sql) = index.now() {
                    sqlx::query(&sql).execute(&mut *tx).await?;
                }
            }
        }
        // `applied`: events applied from the feed, counted to check, once caught up, that
        // the feed gave every event of the store (`record_versions`).
        sqlx::query(&format!(
            "CREATE TABLE {SHADOW}.replay_cursor (id INT PRIMARY KEY, tx_id BIGINT NOT NULL, \
             position BIGINT NOT NULL, applied BIGINT)"
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO {SHADOW}.replay_cursor VALUES (1, 0, 0, 0)"
        ))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    } else {
        // A rebuild started by a version without the count: it stays unknown (NULL).
        sqlx::query(&format!(
            "ALTER TABLE {SHADOW}.replay_cursor ADD COLUMN IF NOT EXISTS applied BIGINT"
        ))
        .execute(&mut *conn)
        .await?;
    }
    let (tx_id, position): (i64, i64) = sqlx::query_as(&format!(
        "SELECT tx_id, position FROM {SHADOW}.replay_cursor WHERE id = 1"
    ))
    .fetch_one(&mut *conn)
    .await?;
    Ok(FeedCursor { tx_id, position })
}

/// An index of a read-model table (live or shadow), and how the shadow copy gets it.
struct TableIndex {
    table: &'static str,
    /// The index's name, quoted.
    name: String,
    /// The constraint it backs (primary key, unique, exclusion), as
    /// `pg_get_constraintdef` gives it.
    constraint: Option<String>,
    unique: bool,
    /// Its definition from `USING` on (`btree (a, b DESC) WHERE …`).
    using: String,
}

impl TableIndex {
    /// What the shadow table needs while events are applied: the constraints and unique
    /// indexes (upserts infer their conflict targets from them; they also enforce).
    fn now(&self) -> Option<String> {
        let (table, name) = (self.table, &self.name);
        match (&self.constraint, self.unique) {
            (Some(def), _) => Some(format!(
                "ALTER TABLE {SHADOW}.{table} ADD CONSTRAINT {name} {def}"
            )),
            (None, true) => Some(format!(
                "CREATE UNIQUE INDEX {name} ON {SHADOW}.{table} USING {}",
                self.using
            )),
            (None, false) => None,
        }
    }

    /// What can wait until the load is done: every other index.
    fn deferred(&self) -> Option<String> {
        (self.constraint.is_none() && !self.unique).then(|| {
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {SHADOW}.{} USING {}",
                self.name, self.table, self.using
            )
        })
    }
}

/// The indexes of `<schema>.<table>`.
async fn indexes(
    conn: &mut PgConnection,
    schema: &str,
    table: &'static str,
) -> anyhow::Result<Vec<TableIndex>> {
    let rows: Vec<(String, Option<String>, bool, String)> = sqlx::query_as(
        "SELECT quote_ident(ic.relname), pg_get_constraintdef(c.oid), i.indisunique, \
                pg_get_indexdef(i.indexrelid) \
         FROM pg_index i \
         JOIN pg_class ic ON ic.oid = i.indexrelid \
         JOIN pg_class tc ON tc.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = tc.relnamespace \
         LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid \
         WHERE n.nspname = $1 AND tc.relname = $2 \
         ORDER BY ic.relname",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(name, constraint, unique, def)| {
            // `CREATE [UNIQUE] INDEX name ON [ONLY] table USING method (…)`: a table name
            // of ours never contains " USING ".
            let using = def
                .split_once(" USING ")
                .map(|(_, rest)| rest.to_owned())
                .ok_or_else(|| anyhow::anyhow!("unexpected index definition: {def}"))?;
            Ok(TableIndex {
                table,
                name,
                constraint,
                unique,
                using,
            })
        })
        .collect()
}

/// Applies the next batch after `cursor` in the caller's transaction, against the recorded
/// per-stream versions; returns the new cursor and how many events it applied (0: caught
/// up).
async fn step(
    store: &EventStore,
    conn: &mut PgConnection,
    cursor: FeedCursor,
    batch: i64,
) -> anyhow::Result<(FeedCursor, usize)> {
    let events = store.read_feed(cursor, batch).await?;
    let Some(next) = events.last().map(RecordedEvent::cursor) else {
        return Ok((cursor, 0));
    };
    let envelopes: Vec<Incoming> = events.into_iter().map(Incoming::from).collect();
    apply_step(conn, &envelopes, next, Source::Deliveries(None)).await?;
    Ok((next, envelopes.len()))
}

/// A batch of the feed, read and decoded on a task of its own while the batch before it
/// is applied: decoding is much of a replay's work, and it should not wait for the
/// apply's turn.
struct Fetched {
    /// The events' places, with `data` and `metadata` left null.
    envelopes: Vec<Incoming>,
    /// The events, one per envelope.
    events: Vec<Event>,
    /// The cursor after the batch.
    next: FeedCursor,
}

/// Reads and decodes the next batch after `after`; `None` when caught up.
async fn fetch(
    store: EventStore,
    after: FeedCursor,
    limit: i64,
) -> anyhow::Result<Option<Fetched>> {
    let rows = store.read_feed_data(after, limit).await?;
    let Some(next) = rows.last().map(FeedData::cursor) else {
        return Ok(None);
    };
    let mut envelopes = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        events.push(decode_text(&row.event_type, row.schema_version, &row.data)?);
        envelopes.push(Incoming {
            stream_id: row.stream_id,
            version: row.version,
            position: row.position,
            event_type: row.event_type,
            schema_version: row.schema_version,
            data: Value::Null,
            metadata: Value::Null,
            recorded_at: row.recorded_at,
        });
    }
    Ok(Some(Fetched {
        envelopes,
        events,
        next,
    }))
}

/// Applies `envelopes` (the feed up to `next`, in order) in the caller's transaction and
/// records `next` as the rebuild's cursor there.
async fn apply_step(
    conn: &mut PgConnection,
    envelopes: &[Incoming],
    next: FeedCursor,
    source: Source<'_>,
) -> anyhow::Result<()> {
    let report = apply(conn, envelopes, source).await?;
    // The feed is complete and in commit order, so a gap or a repeat here is a bug, not a
    // delay.
    anyhow::ensure!(
        report.gaps.is_empty() && report.duplicates == 0,
        "replay met a version gap or a repeated event at position {}",
        next.position
    );
    sqlx::query(&format!(
        "UPDATE {SHADOW}.replay_cursor SET tx_id = $1, position = $2, applied = applied + $3 \
         WHERE id = 1"
    ))
    .bind(next.tx_id)
    .bind(next.position)
    .bind(envelopes.len() as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records, once the rebuild has caught up to `cursor`, every stream's version in the
/// shadow `projection_streams` (the feed batches leave it alone: one grouped read of the
/// store instead of a probe and an upsert per stream and batch), in one transaction, after
/// checking what the batches could not: that every stream's versions up to the cursor run
/// from 1 without a gap, and that the feed gave every one of those events to this rebuild.
async fn record_versions(conn: &mut PgConnection, cursor: FeedCursor) -> anyhow::Result<()> {
    let mut tx = conn.begin().await?;
    let (events, gapped, applied): (i64, Option<String>, Option<i64>) = sqlx::query_as(&format!(
        // Versions are unique per stream and start at 1, so a stream's count of events
        // equals its newest version exactly when none is missing.
        "WITH s AS (SELECT stream_id, max(version) AS version, count(*) AS n \
                    FROM public.events WHERE (tx_id, position) <= ($2, $3) \
                    GROUP BY stream_id), \
              w AS (INSERT INTO {SHADOW}.projection_streams AS p (projection, stream_id, version) \
                    SELECT $1, stream_id, version FROM s \
                    ON CONFLICT (projection, stream_id) \
                    DO UPDATE SET version = GREATEST(p.version, EXCLUDED.version)) \
         SELECT COALESCE((SELECT sum(n) FROM s), 0)::int8, \
                (SELECT stream_id FROM s WHERE n <> version LIMIT 1), \
                (SELECT applied FROM {SHADOW}.replay_cursor WHERE id = 1)"
    ))
    .bind(crate::PROJECTION)
    .bind(cursor.tx_id)
    .bind(cursor.position)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(stream) = gapped {
        anyhow::bail!("the event store has a version gap in stream {stream}");
    }
    if let Some(applied) = applied {
        anyhow::ensure!(
            applied == events,
            "the feed gave this rebuild {applied} events, the store holds {events} up to it"
        );
    }
    tx.commit().await?;
    Ok(())
}

/// Rebuilds every read model from the event store and swaps the result in atomically.
pub async fn replay(
    pool: &PgPool,
    options: &ReplayOptions,
    mut progress: impl FnMut(Progress),
) -> anyhow::Result<ReplayStats> {
    let started = Instant::now();
    let store = EventStore::new(pool.clone());
    let mut conn = shadow_connection(pool).await?;
    let mut cursor = prepare(&mut conn).await?;
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM public.events")
        .fetch_one(&mut conn)
        .await?;
    let mut stats = ReplayStats::default();
    let mut batches = 0usize;
    // The next batch is read from the feed (on a pool connection) and decoded while this
    // one is applied, so that the two halves of a step run side by side.
    let mut fetched = fetch(store.clone(), cursor, options.batch_events).await?;
    loop {
        if options.stop_after_batches.is_some_and(|n| batches >= n) {
            stats.elapsed = started.elapsed();
            return Ok(stats);
        }
        let Some(batch) = fetched.take() else {
            break;
        };
        let prefetch = tokio::spawn(fetch(store.clone(), batch.next, options.batch_events));
        let mut tx = conn.begin().await?;
        apply_step(
            &mut tx,
            &batch.envelopes,
            batch.next,
            Source::Feed(&batch.events),
        )
        .await?;
        tx.commit().await?;
        fetched = prefetch.await??;
        cursor = batch.next;
        batches += 1;
        stats.events += batch.envelopes.len() as u64;
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        progress(Progress {
            done: stats.events,
            total: total.max(0) as u64,
            rate: stats.events as f64 / secs,
        });
    }

    stats.loading = started.elapsed();
    // Caught up: record the streams' versions (the catch-up under lock below applies
    // against them) while the indexes the load went without are built (a resumed run may
    // find some built, or equivalent ones under other names), two at a time on connections
    // of their own; then swap under lock, after applying whatever committed meanwhile.
    let mut builds = Vec::new();
    for t in tables() {
        let built: HashSet<String> = indexes(&mut conn, SHADOW, t)
            .await?
            .into_iter()
            .map(|i| i.using)
            .collect();
        for index in indexes(&mut conn, "public", t).await? {
            match index.deferred() {
                Some(sql) if !built.contains(&index.using) => builds.push(sql),
                _ => {}
            }
        }
    }
    let build = futures::stream::iter(builds.into_iter().map(Ok::<_, anyhow::Error>))
        .try_for_each_concurrent(2, |sql| async move {
            let mut c = pool.acquire().await?;
            sqlx::query(&sql).execute(&mut *c).await?;
            Ok(())
        });
    tokio::try_join!(record_versions(&mut conn, cursor), build)?;
    let mut tx = conn.begin().await?;
    let live: Vec<String> = tables().map(|t| format!("public.{t}")).collect();
    sqlx::query(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        live.join(", ")
    ))
    .execute(&mut *tx)
    .await?;
    loop {
        let (next, n) = step(&store, &mut tx, cursor, options.batch_events).await?;
        if n == 0 {
            break;
        }
        cursor = next;
        stats.events += n as u64;
    }
    for t in tables() {
        sqlx::query(&format!("DROP TABLE public.{t}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER TABLE {SHADOW}.{t} SET SCHEMA public"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(&format!("DROP TABLE {SHADOW}.replay_cursor"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    stats.swapped = true;
    stats.elapsed = started.elapsed();
    Ok(stats)
}
