//! The statements of a group commit (the committer is in command-handlers' `committer/`).
//!
//! A batch is written by **one guarded statement that is its own transaction** — Postgres
//! runs a statement outside `BEGIN` as its own transaction, so it is all or nothing and
//! durable when it answers. The statement first checks what no constraint protects: that
//! every stream the batch only *read* is still at the version it was decided from, and
//! that none of its idempotency keys has been used. If both hold it inserts the events
//! (positions from the identity column, in insertion order) and the keys with their
//! responses, each response given the position its command reached; otherwise it writes
//! nothing and says which streams moved and which keys were taken. Streams the batch
//! writes need no check: the insert of a version someone else took collides on
//! `UNIQUE (stream_id, version)` and the statement fails as a whole.
//!
//! The committer keeps the heads (version and hash) of the streams it wrote, so in steady
//! state a batch costs that one statement; [`read_heads`] is for streams it does not know.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::append::Rows;
use crate::{IdempotencyRow, StoreError, StoredAnswer, StreamAppend};

/// Reads the heads (newest version and its hash) of `streams`; a stream without events is
/// absent from the answer.
pub async fn read_heads(
    conn: &mut PgConnection,
    streams: &[&str],
) -> Result<HashMap<String, (i64, Vec<u8>)>, StoreError> {
    // One backward step on UNIQUE (stream_id, version) per stream (a max() over a
    // stream's rows reads all of them).
    let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT s.stream_id, e.version, e.hash \
         FROM UNNEST($1::text[]) AS s(stream_id) \
         CROSS JOIN LATERAL (SELECT version, hash FROM events WHERE stream_id = s.stream_id \
                             ORDER BY version DESC LIMIT 1) e",
    )
    .bind(streams)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(s, v, h)| (s, (v, h))).collect())
}

/// A batch's events, chained onto their streams' heads, ready for [`write_batch`].
pub struct BatchWrite {
    rows: Rows,
}

impl BatchWrite {
    /// Chains `writes` onto `heads` as [`crate::append_after`] does. A write that does not
    /// start where its stream stands (by `heads`) is a [`StoreError::Conflict`].
    pub fn lay_out(
        writes: &[StreamAppend],
        heads: &HashMap<String, (i64, Vec<u8>)>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            rows: Rows::lay_out(writes, heads, Utc::now().trunc_subsecs(6))?,
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

    /// `(event id, stream, version)` of each event, in insertion order.
    pub fn events(&self) -> impl Iterator<Item = (Uuid, &str, i64)> {
        self.rows
            .ids
            .iter()
            .zip(self.rows.streams.iter().zip(&self.rows.versions))
            .map(|(id, (s, v))| (*id, s.as_str(), *v))
    }
}

/// One idempotency key of a batch, with the command it belongs to.
#[derive(Debug, Clone)]
pub struct BatchKey {
    /// The key, its request and the response to store. The body's top-level `position`,
    /// if it has one, is replaced by the position the command reached.
    pub row: IdempotencyRow,
    /// The command: the same number as in [`write_batch`]'s `commands`.
    pub command: i32,
}

/// What [`write_batch`] did.
#[derive(Debug)]
pub enum BatchOutcome {
    /// Everything was written: the position of each event.
    Written(HashMap<Uuid, i64>),
    /// Nothing was written, because of these.
    Refused {
        /// Streams read but not written whose head is no longer the version checked:
        /// `(stream, its version now)`.
        moved: Vec<(String, i64)>,
        /// Keys already used, with what was stored under them.
        taken: Vec<((String, String), StoredAnswer)>,
    },
}

/// Writes a batch in one statement that is its own transaction (see the module's
/// documentation): if every stream in `checks` is at its version (0: no events) and no key
/// of `keys` is taken, the events of `batch` and the keys; otherwise nothing.
/// `commands` numbers the command of each event, in the order of [`BatchWrite::events`].
///
/// A stream version taken meanwhile is a [`StoreError::Conflict`]; a key taken between the
/// check and the insert (by another process's commit) is a [`StoreError::UniqueViolation`]
/// of `idempotency_keys_pkey`. Either way nothing is written.
pub async fn write_batch(
    conn: &mut PgConnection,
    batch: &BatchWrite,
    commands: &[i32],
    keys: &[BatchKey],
    checks: &[(&str, i64)],
) -> Result<BatchOutcome, StoreError> {
    let r = &batch.rows;
    if commands.len() != r.ids.len() {
        return Err(StoreError::Database(sqlx::Error::Protocol(format!(
            "{} events, {} command numbers",
            r.ids.len(),
            commands.len()
        ))));
    }
    let scopes: Vec<&str> = keys.iter().map(|k| k.row.record.scope.as_str()).collect();
    let ks: Vec<&str> = keys.iter().map(|k| k.row.record.key.as_str()).collect();
    let hashes: Vec<&[u8]> = keys
        .iter()
        .map(|k| k.row.record.request_hash.as_slice())
        .collect();
    let answers: Vec<&Value> = keys.iter().map(|k| &k.row.answer).collect();
    let key_commands: Vec<i32> = keys.iter().map(|k| k.command).collect();
    let (check_streams, check_versions): (Vec<&str>, Vec<i64>) = checks.iter().copied().unzip();
    type Row = (
        i16,
        Option<Uuid>,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<Vec<u8>>,
        Option<Value>,
    );
    let rows: Vec<Row> = r
        .bind(sqlx::query_as(
            // moved/taken: the guard, read in the statement's snapshot (a key committed
            // after it collides on the primary key instead). Keys: one primary-key probe
            // each; the LIMIT keeps the LATERAL a parameterised probe in the generic plan a
            // connection keeps from when the table was empty (without it: a hash join over
            // a full scan of the keys, growing with the table). The events take their positions
            // from the identity column in insertion order; each key gets the highest
            // position of its command's events.
            "WITH moved AS ( \
               SELECT c.s, COALESCE(h.version, 0) AS now \
               FROM UNNEST($11::text[], $12::int8[]) AS c(s, v) \
               LEFT JOIN LATERAL (SELECT version FROM events WHERE stream_id = c.s \
                                  ORDER BY version DESC LIMIT 1) h ON true \
               WHERE COALESCE(h.version, 0) <> c.v), \
             taken AS ( \
               SELECT k.scope, k.key, k.request_hash, k.answer, k.position \
               FROM UNNEST($13::text[], $14::text[]) AS u(scope, key) \
               CROSS JOIN LATERAL (SELECT * FROM idempotency_keys k \
                                   WHERE k.scope = u.scope AND k.key = u.key LIMIT 1) k), \
             go AS (SELECT NOT EXISTS (SELECT 1 FROM moved) \
                           AND NOT EXISTS (SELECT 1 FROM taken) AS ok), \
             ev AS ( \
               INSERT INTO events (event_id, stream_id, version, event_type, schema_version, \
                                   data, metadata, recorded_at, prev_hash, hash) \
               SELECT e, s, v, t, sv, d::jsonb, m::jsonb, $8, ph, h \
               FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::int[], \
                           $6::text[], $7::text[], $9::bytea[], $10::bytea[]) \
                    AS u(e, s, v, t, sv, d, m, ph, h) \
               WHERE (SELECT ok FROM go) \
               RETURNING event_id, position), \
             reached AS ( \
               SELECT c.cmd, max(ev.position) AS position \
               FROM ev JOIN UNNEST($1::uuid[], $15::int4[]) AS c(e, cmd) ON c.e = ev.event_id \
               GROUP BY c.cmd), \
             ik AS ( \
               INSERT INTO idempotency_keys (scope, key, request_hash, answer, position) \
               SELECT u.scope, u.key, u.h, u.a, p.position \
               FROM UNNEST($13::text[], $14::text[], $16::bytea[], $17::jsonb[], $18::int4[]) \
                    AS u(scope, key, h, a, cmd) \
               JOIN reached p ON p.cmd = u.cmd \
               RETURNING 1) \
             SELECT 0::int2, event_id, position, NULL::text, NULL::text, NULL::bytea, \
                    NULL::jsonb FROM ev \
             UNION ALL SELECT 1::int2, NULL, now, s, NULL, NULL, NULL FROM moved \
             UNION ALL SELECT 2::int2, NULL, position, scope, key, request_hash, answer \
                       FROM taken \
             UNION ALL SELECT 3::int2, NULL, count(*), NULL, NULL, NULL, NULL FROM ik",
        ))
        .bind(&check_streams)
        .bind(&check_versions)
        .bind(&scopes)
        .bind(&ks)
        .bind(commands)
        .bind(&hashes)
        .bind(&answers)
        .bind(&key_commands)
        .fetch_all(conn)
        .await?;
    let mut positions = HashMap::with_capacity(r.ids.len());
    let mut moved = Vec::new();
    let mut taken = Vec::new();
    let mut keys_written = 0;
    for row in rows {
        match row {
            (0, Some(id), Some(position), ..) => {
                positions.insert(id, position);
            }
            (1, _, Some(now), Some(stream), ..) => moved.push((stream, now)),
            (2, _, position, Some(scope), Some(key), Some(request_hash), Some(answer)) => {
                taken.push((
                    (scope, key),
                    StoredAnswer {
                        request_hash,
                        answer,
                        position,
                    },
                ));
            }
            (3, _, Some(n), ..) => keys_written = n,
            _ => {}
        }
    }
    if !moved.is_empty() || !taken.is_empty() {
        return Ok(BatchOutcome::Refused { moved, taken });
    }
    // INSERT … SELECT FROM UNNEST writes every row or fails; each key's command has events.
    if positions.len() != r.ids.len() || keys_written as usize != keys.len() {
        return Err(StoreError::Database(sqlx::Error::Protocol(format!(
            "batch wrote {} of {} events and {keys_written} of {} keys",
            positions.len(),
            r.ids.len(),
            keys.len()
        ))));
    }
    Ok(BatchOutcome::Written(positions))
}
