//! Atomic multi-stream append.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use crate::hash::{canonical_json, event_hash, GENESIS_HASH};
use crate::{RecordedEvent, StoreError, StreamAppend};

/// Appends events to several streams inside the caller's transaction.
///
/// Each stream must be exactly at its `expected_version`: the previous event's hash is read
/// (which also proves the stream has that version) and the insert of `expected_version + 1`
/// collides on `UNIQUE (stream_id, version)` if someone else got there first. Either way
/// the caller gets [`StoreError::Conflict`] naming the stream, and should roll back and
/// retry from fresh state. Nothing is visible to others until the caller commits.
///
/// The returned events are in insertion order: streams sorted by name, each in version order.
pub async fn append(
    conn: &mut PgConnection,
    writes: &[StreamAppend],
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut heads = HashMap::new();
    for w in writes.iter().filter(|w| w.expected_version > 0) {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT hash FROM events WHERE stream_id = $1 AND version = $2")
                .bind(&w.stream_id)
                .bind(w.expected_version)
                .fetch_optional(&mut *conn)
                .await?;
        match row {
            Some((h,)) => {
                heads.insert(w.stream_id.clone(), (w.expected_version, h));
            }
            None => {
                return Err(StoreError::Conflict {
                    stream_id: w.stream_id.clone(),
                })
            }
        }
    }
    append_after(conn, writes, &heads).await
}

/// Like [`append`], with the streams' current heads already known (`stream → (version,
/// hash)`, as from [`crate::read_heads`]; absent means empty). Several writes may target one
/// stream (commands decided in sequence within a group commit): each must start where the
/// previous one ends. A head that is stale is still safe: the hash of a stream version
/// never changes, and the insert of a taken version collides as in [`append`].
pub async fn append_after(
    conn: &mut PgConnection,
    writes: &[StreamAppend],
    heads: &HashMap<String, (i64, Vec<u8>)>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = Rows::lay_out(writes, heads, Utc::now().trunc_subsecs(6))?;
    let inserted: Vec<(Uuid, i64, i64)> = rows
        .bind(sqlx::query_as(
            "INSERT INTO events (event_id, stream_id, version, event_type, schema_version, \
                                 data, metadata, recorded_at, prev_hash, hash) \
             SELECT e, s, v, t, sv, d::jsonb, m::jsonb, $8, ph, h \
             FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::int[], \
                         $6::text[], $7::text[], $9::bytea[], $10::bytea[]) \
                  AS u(e, s, v, t, sv, d, m, ph, h) \
             RETURNING event_id, position, tx_id",
        ))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict { .. } => StoreError::Conflict {
                stream_id: conflicting_stream(writes),
            },
            other => other,
        })?;

    let assigned: HashMap<Uuid, (i64, i64)> = inserted
        .into_iter()
        .map(|(id, p, t)| (id, (p, t)))
        .collect();
    let mut out = Vec::with_capacity(rows.ids.len());
    let mut i = 0usize;
    for w in Rows::order(writes) {
        for e in &w.events {
            let (position, tx_id) = assigned.get(&e.event_id).copied().unwrap_or((0, 0));
            out.push(RecordedEvent {
                position,
                tx_id,
                event_id: e.event_id,
                stream_id: w.stream_id.clone(),
                version: rows.versions[i],
                event_type: e.event_type.clone(),
                schema_version: e.schema_version,
                data: e.data.clone(),
                metadata: e.metadata.clone(),
                recorded_at: rows.recorded_at,
                prev_hash: rows.prevs[i].clone(),
                hash: rows.hashes[i].clone(),
            });
            i += 1;
        }
    }
    // Positions come from one sequence in insert order: they must rise within the append.
    debug_assert!(out.windows(2).all(|p| p[0].position < p[1].position));
    Ok(out)
}

/// Events laid out for one multi-row insert, column by column, in insertion order: streams
/// sorted by name, each in version order, each event chained to the one before it.
pub(crate) struct Rows {
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) ids: Vec<Uuid>,
    pub(crate) streams: Vec<String>,
    pub(crate) versions: Vec<i64>,
    pub(crate) types: Vec<String>,
    pub(crate) schemas: Vec<i32>,
    /// `data` and `metadata` as the canonical JSON text that was hashed.
    pub(crate) datas: Vec<String>,
    pub(crate) metas: Vec<String>,
    pub(crate) prevs: Vec<Vec<u8>>,
    pub(crate) hashes: Vec<Vec<u8>>,
}

impl Rows {
    /// Binds the columns as the insert's `$1`–`$10`: event ids, streams, versions, types,
    /// schema versions, data and metadata (text), the recorded time, previous hashes,
    /// hashes.
    pub(crate) fn bind<'q, O>(
        &'q self,
        q: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        q.bind(&self.ids)
            .bind(&self.streams)
            .bind(&self.versions)
            .bind(&self.types)
            .bind(&self.schemas)
            .bind(&self.datas)
            .bind(&self.metas)
            .bind(self.recorded_at)
            .bind(&self.prevs)
            .bind(&self.hashes)
    }

    /// The insertion order: streams are written in one global order (by name), so two
    /// transactions touching the same streams wait for each other instead of deadlocking
    /// (A→B racing B→A).
    pub(crate) fn order(writes: &[StreamAppend]) -> Vec<&StreamAppend> {
        let mut order: Vec<&StreamAppend> = writes.iter().collect();
        order.sort_by(|a, b| {
            (a.stream_id.as_str(), a.expected_version)
                .cmp(&(b.stream_id.as_str(), b.expected_version))
        });
        order
    }

    /// Chains `writes` onto `heads` (see [`append_after`]); a write that does not start
    /// where its stream stands is a [`StoreError::Conflict`].
    pub(crate) fn lay_out(
        writes: &[StreamAppend],
        heads: &HashMap<String, (i64, Vec<u8>)>,
        recorded_at: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        let total: usize = writes.iter().map(|w| w.events.len()).sum();
        let mut rows = Rows {
            recorded_at,
            ids: Vec::with_capacity(total),
            streams: Vec::with_capacity(total),
            versions: Vec::with_capacity(total),
            types: Vec::with_capacity(total),
            schemas: Vec::with_capacity(total),
            datas: Vec::with_capacity(total),
            metas: Vec::with_capacity(total),
            prevs: Vec::with_capacity(total),
            hashes: Vec::with_capacity(total),
        };
        // Where each stream's chain stands as the writes are laid out: (version, hash).
        let mut tips: HashMap<&str, (i64, Vec<u8>)> = HashMap::new();
        for w in Self::order(writes) {
            let conflict = || StoreError::Conflict {
                stream_id: w.stream_id.clone(),
            };
            let (tip_version, mut prev) = match tips.get(w.stream_id.as_str()) {
                Some(t) => t.clone(),
                None if w.expected_version == 0 => (0, GENESIS_HASH.to_vec()),
                None => match heads.get(&w.stream_id) {
                    Some((v, h)) if *v == w.expected_version => (*v, h.clone()),
                    _ => return Err(conflict()),
                },
            };
            if tip_version != w.expected_version {
                return Err(conflict());
            }
            for (i, e) in w.events.iter().enumerate() {
                let version = w.expected_version + 1 + i as i64;
                let data = canonical_json(&e.data);
                let meta = canonical_json(&e.metadata);
                let hash = event_hash(
                    &prev,
                    e.event_id,
                    &w.stream_id,
                    version,
                    &e.event_type,
                    e.schema_version,
                    &data,
                    &meta,
                    recorded_at,
                );
                rows.ids.push(e.event_id);
                rows.streams.push(w.stream_id.clone());
                rows.versions.push(version);
                rows.types.push(e.event_type.clone());
                rows.schemas.push(e.schema_version);
                rows.datas.push(data);
                rows.metas.push(meta);
                rows.prevs.push(std::mem::replace(&mut prev, hash.to_vec()));
                rows.hashes.push(hash.to_vec());
            }
            tips.insert(
                w.stream_id.as_str(),
                (w.expected_version + w.events.len() as i64, prev),
            );
        }
        Ok(rows)
    }
}

/// Postgres does not say which row collided; name the streams instead, for logs.
fn conflicting_stream(writes: &[StreamAppend]) -> String {
    writes
        .iter()
        .map(|w| w.stream_id.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
