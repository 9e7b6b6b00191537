//! Atomic multi-stream append.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgConnection;
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
    let recorded_at: DateTime<Utc> = Utc::now().trunc_subsecs(6);
    let total: usize = writes.iter().map(|w| w.events.len()).sum();
    let mut ids = Vec::with_capacity(total);
    let mut streams = Vec::with_capacity(total);
    let mut versions = Vec::with_capacity(total);
    let mut types = Vec::with_capacity(total);
    let mut schemas = Vec::with_capacity(total);
    let mut datas = Vec::with_capacity(total);
    let mut metas = Vec::with_capacity(total);
    let mut prevs: Vec<Vec<u8>> = Vec::with_capacity(total);
    let mut hashes: Vec<Vec<u8>> = Vec::with_capacity(total);

    // Streams are written in one global order (by name), so two commands touching the same
    // streams wait for each other instead of deadlocking (A→B racing B→A).
    let mut order: Vec<&StreamAppend> = writes.iter().collect();
    order.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
    for w in &order {
        let mut prev = if w.expected_version == 0 {
            GENESIS_HASH.to_vec()
        } else {
            let row: Option<(Vec<u8>,)> =
                sqlx::query_as("SELECT hash FROM events WHERE stream_id = $1 AND version = $2")
                    .bind(&w.stream_id)
                    .bind(w.expected_version)
                    .fetch_optional(&mut *conn)
                    .await?;
            match row {
                Some((h,)) => h,
                None => {
                    return Err(StoreError::Conflict {
                        stream_id: w.stream_id.clone(),
                    })
                }
            }
        };
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
            ids.push(e.event_id);
            streams.push(w.stream_id.clone());
            versions.push(version);
            types.push(e.event_type.clone());
            schemas.push(e.schema_version);
            datas.push(data);
            metas.push(meta);
            prevs.push(std::mem::replace(&mut prev, hash.to_vec()));
            hashes.push(hash.to_vec());
        }
    }

    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "INSERT INTO events (event_id, stream_id, version, event_type, schema_version, data, metadata, recorded_at, prev_hash, hash) \
         SELECT e, s, v, t, sv, d::jsonb, m::jsonb, $8, ph, h \
         FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::int[], $6::text[], $7::text[], $9::bytea[], $10::bytea[]) \
              AS u(e, s, v, t, sv, d, m, ph, h) \
         RETURNING event_id, position, tx_id",
    )
    .bind(&ids)
    .bind(&streams)
    .bind(&versions)
    .bind(&types)
    .bind(&schemas)
    .bind(&datas)
    .bind(&metas)
    .bind(recorded_at)
    .bind(&prevs)
    .bind(&hashes)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| match StoreError::from(e) {
        StoreError::Conflict { .. } => StoreError::Conflict {
            stream_id: conflicting_stream(writes),
        },
        other => other,
    })?;

    let assigned: HashMap<Uuid, (i64, i64)> =
        rows.into_iter().map(|(id, p, t)| (id, (p, t))).collect();
    let mut out = Vec::with_capacity(total);
    let mut i = 0usize;
    for w in &order {
        for e in &w.events {
            let (position, tx_id) = assigned.get(&e.event_id).copied().unwrap_or((0, 0));
            out.push(RecordedEvent {
                position,
                tx_id,
                event_id: e.event_id,
                stream_id: w.stream_id.clone(),
                version: versions[i],
                event_type: e.event_type.clone(),
                schema_version: e.schema_version,
                data: e.data.clone(),
                metadata: e.metadata.clone(),
                recorded_at,
                prev_hash: prevs[i].clone(),
                hash: hashes[i].clone(),
            });
            i += 1;
        }
    }
    // Positions come from one sequence in insert order: they must rise within the append.
    debug_assert!(out.windows(2).all(|p| p[0].position < p[1].position));
    Ok(out)
}

/// Postgres does not say which row collided; name the streams instead, for logs.
fn conflicting_stream(writes: &[StreamAppend]) -> String {
    writes
        .iter()
        .map(|w| w.stream_id.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
