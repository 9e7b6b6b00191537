//! The two statements of a group commit (the committer is in command-handlers' `group.rs`).
//!
//! One read: the heads of the batch's streams, the answers already stored under its
//! idempotency keys, and positions reserved for its events. One write: the events and the
//! idempotency keys with their responses, in a single statement that commits by itself —
//! Postgres runs a statement outside `BEGIN` as its own transaction, so it is all or
//! nothing and durable when it answers. Because positions are known before the write, each
//! command's response (which carries its position) is stored by that same statement.
//!
//! This replaced six round trips per batch (two reads, `BEGIN`, two inserts, `COMMIT`) by
//! two. The committer is one task and every batch waits for it: under load each round trip
//! also waits for a CPU on both sides, which had made the committer, not the CPU, the limit.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::append::Rows;
use crate::{IdempotencyRow, StoreError, StoredResponse, StreamAppend};

/// What a group commit reads before it sequences its commands.
#[derive(Debug, Default)]
pub struct BatchReads {
    /// `stream → (newest version, its hash)` for the streams that exist.
    pub heads: HashMap<String, (i64, Vec<u8>)>,
    /// `(scope, key) → stored response` for the keys answered before.
    pub stored: HashMap<(String, String), StoredResponse>,
    /// Positions reserved for the batch's events, ascending. Those left unused are gaps
    /// in the global order, as a rolled-back insert leaves.
    pub positions: Vec<i64>,
}

/// Reads heads, stored answers and `positions` reserved positions in one statement.
pub async fn read_batch(
    conn: &mut PgConnection,
    streams: &[String],
    keys: &[(String, String)],
    positions: usize,
) -> Result<BatchReads, StoreError> {
    let (scopes, ks): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|(s, k)| (s.as_str(), k.as_str())).unzip();
    type Row = (
        i16,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<Vec<u8>>,
        Option<i16>,
        Option<Value>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        // Heads: one backward step on UNIQUE (stream_id, version) per stream (a max() over
        // a stream's rows reads all of them). Keys: one primary-key probe each; the LIMIT
        // keeps the LATERAL a parameterised probe in the generic plan a connection keeps
        // from when the table was empty (without it: a hash join over a full scan, 8.6 ms
        // a batch at 23,000 keys). Positions: the sequence of the identity column named
        // (pg_get_serial_sequence() per row cost 4 µs a position).
        "SELECT 0::int2, s.stream_id, NULL::text, e.version, e.hash, NULL::int2, NULL::jsonb \
         FROM UNNEST($1::text[]) AS s(stream_id) \
         CROSS JOIN LATERAL (SELECT version, hash FROM events WHERE stream_id = s.stream_id \
                             ORDER BY version DESC LIMIT 1) e \
         UNION ALL \
         SELECT 1::int2, i.scope, i.key, NULL::int8, i.request_hash, i.status, i.response \
         FROM UNNEST($2::text[], $3::text[]) AS u(scope, key) \
         CROSS JOIN LATERAL (SELECT * FROM idempotency_keys k \
                             WHERE k.scope = u.scope AND k.key = u.key LIMIT 1) i \
         UNION ALL \
         SELECT 2::int2, NULL, NULL, nextval('events_position_seq'), NULL, NULL, NULL \
         FROM generate_series(1, $4::int)",
    )
    .bind(streams)
    .bind(&scopes)
    .bind(&ks)
    .bind(i32::try_from(positions).unwrap_or(i32::MAX))
    .fetch_all(&mut *conn)
    .await?;
    let mut reads = BatchReads::default();
    for row in rows {
        match row {
            (0, Some(stream), _, Some(version), Some(hash), _, _) => {
                reads.heads.insert(stream, (version, hash));
            }
            (1, Some(scope), Some(key), _, Some(request_hash), Some(status), Some(body)) => {
                reads.stored.insert(
                    (scope, key),
                    StoredResponse {
                        request_hash,
                        status,
                        body,
                    },
                );
            }
            (2, _, _, Some(position), _, _, _) => reads.positions.push(position),
            _ => {}
        }
    }
    reads.positions.sort_unstable();
    Ok(reads)
}

/// Reserves `n` more positions, ascending.
pub async fn reserve_positions(conn: &mut PgConnection, n: usize) -> Result<Vec<i64>, StoreError> {
    let mut positions: Vec<i64> = sqlx::query_scalar(
        "SELECT nextval('events_position_seq') \
         FROM generate_series(1, $1::int)",
    )
    .bind(i32::try_from(n).unwrap_or(i32::MAX))
    .fetch_all(conn)
    .await?;
    positions.sort_unstable();
    Ok(positions)
}

/// A batch's events, chained and given their positions, ready for [`write_batch`].
pub struct BatchWrite {
    rows: Rows,
    positions: Vec<i64>,
}

impl BatchWrite {
    /// Chains `writes` onto `heads` as [`crate::append_after`] does and gives the events
    /// the first of `positions` (ascending), in insertion order. A write that does not
    /// start where its stream stands is a [`StoreError::Conflict`]; the caller reserves
    /// enough positions (too few is refused as a [`StoreError::Database`] protocol error).
    pub fn lay_out(
        writes: &[StreamAppend],
        heads: &HashMap<String, (i64, Vec<u8>)>,
        positions: &[i64],
    ) -> Result<Self, StoreError> {
        let rows = Rows::lay_out(writes, heads, Utc::now().trunc_subsecs(6))?;
        let Some(positions) = positions.get(..rows.ids.len()) else {
            return Err(StoreError::Database(sqlx::Error::Protocol(format!(
                "{} events, {} positions reserved",
                rows.ids.len(),
                positions.len()
            ))));
        };
        Ok(Self {
            positions: positions.to_vec(),
            rows,
        })
    }

    /// When the events are recorded (one time for the whole batch).
    pub fn recorded_at(&self) -> DateTime<Utc> {
        self.rows.recorded_at
    }

    /// Where each stream stands once the batch is written: `stream → (version, hash)`.
    pub fn tips(&self) -> HashMap<String, (i64, Vec<u8>)> {
        let r = &self.rows;
        let mut tips = HashMap::new();
        for i in 0..r.ids.len() {
            // Insertion order is version order within a stream: the last one wins.
            tips.insert(r.streams[i].clone(), (r.versions[i], r.hashes[i].clone()));
        }
        tips
    }

    /// `(event id, position, stream, version)` of each event, in insertion order.
    pub fn events(&self) -> impl Iterator<Item = (Uuid, i64, &str, i64)> {
        self.rows
            .ids
            .iter()
            .zip(&self.positions)
            .zip(self.rows.streams.iter().zip(&self.rows.versions))
            .map(|((id, p), (s, v))| (*id, *p, s.as_str(), *v))
    }
}

/// Writes a batch's events and idempotency keys in one statement that is its own
/// transaction. A stream version taken meanwhile is a [`StoreError::Conflict`]; a key
/// taken meanwhile (a concurrent request with the same key committed first) is a
/// [`StoreError::UniqueViolation`] of `idempotency_keys_pkey`. Either way nothing is
/// written.
pub async fn write_batch(
    conn: &mut PgConnection,
    batch: &BatchWrite,
    keys: &[IdempotencyRow],
) -> Result<(), StoreError> {
    let r = &batch.rows;
    let scopes: Vec<&str> = keys.iter().map(|k| k.record.scope.as_str()).collect();
    let ks: Vec<&str> = keys.iter().map(|k| k.record.key.as_str()).collect();
    let hashes: Vec<&[u8]> = keys
        .iter()
        .map(|k| k.record.request_hash.as_slice())
        .collect();
    let statuses: Vec<i16> = keys.iter().map(|k| k.status).collect();
    let bodies: Vec<&Value> = keys.iter().map(|k| &k.body).collect();
    let (written,): (i64,) = r
        .bind(sqlx::query_as(
            "WITH ev AS ( \
               INSERT INTO events (position, event_id, stream_id, version, event_type, \
                                   schema_version, data, metadata, recorded_at, prev_hash, hash) \
               OVERRIDING SYSTEM VALUE \
               SELECT p, e, s, v, t, sv, d::jsonb, m::jsonb, $8, ph, h \
               FROM UNNEST($11::int8[], $1::uuid[], $2::text[], $3::int8[], $4::text[], \
                           $5::int[], $6::text[], $7::text[], $9::bytea[], $10::bytea[]) \
                    AS u(p, e, s, v, t, sv, d, m, ph, h) \
               RETURNING 1), \
             ik AS ( \
               INSERT INTO idempotency_keys (scope, key, request_hash, status, response) \
               SELECT * FROM UNNEST($12::text[], $13::text[], $14::bytea[], $15::int2[], \
                                    $16::jsonb[]) \
               RETURNING 1) \
             SELECT (SELECT count(*) FROM ev) + (SELECT count(*) FROM ik)",
        ))
        .bind(&batch.positions)
        .bind(&scopes)
        .bind(&ks)
        .bind(&hashes)
        .bind(&statuses)
        .bind(&bodies)
        .fetch_one(conn)
        .await?;
    // INSERT … SELECT FROM UNNEST writes every row or fails.
    debug_assert_eq!(written as usize, r.ids.len() + keys.len());
    Ok(())
}
