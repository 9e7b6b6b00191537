//! Reads of the store for readers other than the write side: the audit trail, a stream's
//! first event, where a position is, and how far the relay and other readers are behind
//! the newest event. Every statement here is a walk of one of the `events` indexes.

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::{EventStore, RecordedEvent, StoreError, EVENT_COLUMNS};

/// Filters of the whole audit log; each given one is a plain condition its own index
/// serves.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Only events of this stream.
    pub stream: Option<String>,
    /// Only events whose metadata names this actor.
    pub actor: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

/// How far a reader is behind the newest event.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lag {
    /// Events after the reader's position.
    pub positions: i64,
    /// Age of the oldest of them, in seconds (0 when there is none).
    pub seconds: f64,
}

impl EventStore {
    /// Events matching `filter` below position `before`, newest first, at most `limit`.
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        before: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // Only the filters given, as plain conditions: each can then be served by its index
        // (type, stream, actor) in every plan. With `($n IS NULL OR column = $n)` for all of
        // them, the plan a connection settles on after a few runs could use none, and a
        // search for a rare type or stream walked the whole store.
        let mut sql = sqlx::QueryBuilder::new(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position < "
        ));
        sql.push_bind(before);
        if let Some(k) = &filter.event_type {
            sql.push(" AND event_type = ").push_bind(k.clone());
        }
        if let Some(s) = &filter.stream {
            sql.push(" AND stream_id = ").push_bind(s.clone());
        }
        if let Some(a) = &filter.actor {
            sql.push(" AND metadata->>'actor' = ").push_bind(a.clone());
        }
        if let Some(t) = filter.from {
            sql.push(" AND recorded_at >= ").push_bind(t);
        }
        if let Some(t) = filter.to {
            sql.push(" AND recorded_at < ").push_bind(t);
        }
        sql.push(" ORDER BY position DESC LIMIT ").push_bind(limit);
        Ok(sql.build_query_as().fetch_all(self.pool()).await?)
    }

    /// Events of `streams`, of the contracts and disputes `party` takes part in
    /// (`party_events`, kept by a trigger on `events`: see its migration), or whose
    /// metadata names `actor`, below position `before`, newest first, at most `limit`.
    pub async fn trail(
        &self,
        party: Uuid,
        streams: &[String],
        actor: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(sqlx::query_as(&format!(
            // Backward walks of at most `limit` positions each, then the events by primary
            // key: the contracts and disputes are one walk of (party, position), however
            // many there are; each of `streams` (a user's own few) one of
            // (stream_id, position); the actor's one of its expression index. The streams
            // and the actor join laterally so that the plan walks their indexes whatever
            // share of the events one has: as constants, one with a large share gets a
            // backward scan of the whole store instead.
            "SELECT {EVENT_COLUMNS} FROM events WHERE position = ANY(ARRAY( \
               (SELECT position FROM party_events WHERE party = $1 AND position < $4 \
                ORDER BY position DESC LIMIT $5) \
               UNION \
               SELECT e.position FROM UNNEST($2::text[]) AS s(id) CROSS JOIN LATERAL ( \
                 SELECT position FROM events WHERE stream_id = s.id AND position < $4 \
                 ORDER BY position DESC LIMIT $5) e \
               UNION \
               SELECT e.position FROM UNNEST(ARRAY[$3::text]) AS a(id) CROSS JOIN LATERAL ( \
                 SELECT position FROM events WHERE metadata->>'actor' = a.id AND position < $4 \
                 ORDER BY position DESC LIMIT $5) e)) \
             ORDER BY position DESC LIMIT $5"
        ))
        .bind(party)
        .bind(streams)
        .bind(actor)
        .bind(before)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// The events of several streams, in position order.
    pub async fn read_streams(&self, streams: &[String]) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ANY($1) ORDER BY position"
        ))
        .bind(streams)
        .fetch_all(self.pool())
        .await?)
    }

    /// A stream's first event, if the stream exists.
    pub async fn first_event(&self, stream: &str) -> Result<Option<RecordedEvent>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version = 1"
        ))
        .bind(stream)
        .fetch_optional(self.pool())
        .await?)
    }

    /// The newest event `actor` caused (`metadata.actor`, as the audit trail names it) and
    /// the newest event of `stream`, as `(position, stream, version)`: what a read waits
    /// for to see its caller's own last write and everything written to what it reads.
    /// One statement, each part one step down an index (`events_actor_idx`, the stream's
    /// unique version).
    pub async fn newest_events(
        &self,
        actor: &str,
        stream: Option<&str>,
    ) -> Result<Vec<(i64, String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "(SELECT position, stream_id, version FROM events WHERE metadata->>'actor' = $1 \
              ORDER BY position DESC LIMIT 1) \
             UNION ALL \
             (SELECT position, stream_id, version FROM events WHERE stream_id = $2 \
              ORDER BY version DESC LIMIT 1)",
        )
        .bind(actor)
        .bind(stream)
        .fetch_all(self.pool())
        .await?)
    }

    /// The newest position in the store (0 when empty).
    pub async fn head(&self) -> Result<i64, StoreError> {
        let (head,): (Option<i64>,) = sqlx::query_as("SELECT max(position) FROM events")
            .fetch_one(self.pool())
            .await?;
        Ok(head.unwrap_or(0))
    }

    /// The feed cursor from which the feed holds every event at or after `position`
    /// (readers skip the few earlier ones that share those transactions), or `None` if
    /// there is no such event.
    pub async fn cursor_for_position(
        &self,
        position: i64,
    ) -> Result<Option<crate::FeedCursor>, StoreError> {
        let (tx,): (Option<i64>,) =
            sqlx::query_as("SELECT min(tx_id) FROM events WHERE position >= $1")
                .bind(position)
                .fetch_one(self.pool())
                .await?;
        Ok(tx.map(|tx_id| crate::FeedCursor {
            tx_id: tx_id - 1,
            position: i64::MAX,
        }))
    }

    /// The event at `position`, if any.
    pub async fn event_at(&self, position: i64) -> Result<Option<RecordedEvent>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position = $1"
        ))
        .bind(position)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Every event in position order, which is each stream's version order (for
    /// `verify`): the table in the order it was written, read front to back.
    pub fn scan(&self) -> BoxStream<'_, Result<RecordedEvent, StoreError>> {
        use futures::StreamExt as _;
        sqlx::query_as::<_, RecordedEvent>(SCAN.as_str())
            .fetch(self.pool())
            .map(|r| r.map_err(StoreError::from))
            .boxed()
    }

    /// Positions of the feed checkpoints whose name starts with `prefix`.
    pub async fn checkpoints_named(&self, prefix: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT name, position FROM checkpoints WHERE starts_with(name, $1) ORDER BY name",
        )
        .bind(prefix)
        .fetch_all(self.pool())
        .await?)
    }

    /// Whether PostgreSQL answers a statement now.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(self.pool()).await.is_ok()
    }

    /// How far a reader at each of `positions` is behind the newest event.
    pub async fn lags(&self, positions: &[i64]) -> Result<Vec<Lag>, StoreError> {
        let rows: Vec<(i64, f64)> = sqlx::query_as(
            "SELECT greatest(h.head - p.at, 0), \
                    coalesce(extract(epoch FROM now() - (SELECT recorded_at FROM events WHERE position = \
                        (SELECT min(position) FROM events WHERE position > p.at)))::float8, 0) \
             FROM UNNEST($1::int8[]) WITH ORDINALITY AS p(at, n), \
                  (SELECT coalesce(max(position), 0) AS head FROM events) h \
             ORDER BY p.n",
        )
        .bind(positions)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(positions, seconds)| Lag {
                positions,
                seconds: seconds.max(0.0),
            })
            .collect())
    }
}

static SCAN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY position"));
