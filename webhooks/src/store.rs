//! The deliverer's own tables: each endpoint's cursor in the JetStream stream and its
//! next `Escrow-Sequence` (`webhook_cursors`), and every delivery with its attempts
//! (`webhook_deliveries`). Staging a batch of messages writes its deliveries and moves the
//! cursor in one transaction, so each message is staged once and sequences have no gaps.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A delivery as the log shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    /// Its id (`Escrow-Delivery-Id`).
    pub id: Uuid,
    /// The endpoint.
    pub webhook_id: Uuid,
    /// `Escrow-Sequence`.
    pub sequence: i64,
    /// The event delivered.
    pub event_id: Uuid,
    /// The event's global position.
    pub position: i64,
    /// The event's type.
    pub event_type: String,
    /// `PENDING`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// The last answer's HTTP status.
    pub last_status_code: Option<i32>,
    /// The last failure (at most 1 KiB of the answer, or the connection's error).
    pub last_error: Option<String>,
    /// When it is tried next, while pending.
    pub next_attempt_at: DateTime<Utc>,
    /// When it was staged.
    pub created_at: DateTime<Utc>,
    /// When a 2xx answered it.
    pub delivered_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, webhook_id, sequence, event_id, position, event_type, status, attempts, \
     last_status_code, last_error, next_attempt_at, created_at, delivered_at";

/// A pending delivery with what sending it needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Pending {
    pub(crate) id: Uuid,
    pub(crate) sequence: i64,
    pub(crate) event_id: Uuid,
    pub(crate) body: String,
    pub(crate) attempts: i32,
    pub(crate) next_attempt_at: DateTime<Utc>,
    pub(crate) age_from: DateTime<Utc>,
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) last_error: Option<String>,
}

/// The fields of an envelope staging reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnvelopeHead {
    pub(crate) event_id: Uuid,
    pub(crate) stream_id: String,
    pub(crate) position: i64,
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    pub(crate) recorded_at: DateTime<Utc>,
}

/// One delivery to stage.
pub(crate) struct Staged {
    pub(crate) head: EnvelopeHead,
    pub(crate) body: String,
}

/// The endpoint's cursor: the stream sequence staged through and whether the endpoint
/// was deleted, if the endpoint has one.
pub(crate) async fn cursor(pool: &PgPool, webhook: Uuid) -> sqlx::Result<Option<(i64, bool)>> {
    sqlx::query_as("SELECT staged_seq, deleted FROM webhook_cursors WHERE webhook_id = $1")
        .bind(webhook)
        .fetch_optional(pool)
        .await
}

/// Starts the endpoint's cursor at `staged_seq` (the message of its creation), unless
/// it has one.
pub(crate) async fn start_cursor(
    pool: &PgPool,
    webhook: Uuid,
    staged_seq: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO webhook_cursors (webhook_id, staged_seq) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(webhook)
    .bind(staged_seq)
    .execute(pool)
    .await?;
    Ok(())
}

/// Writes `deliveries` with the endpoint's next sequences and moves its cursor from
/// `from_seq` to `to_seq`, in one transaction. Fails if the cursor is no longer at
/// `from_seq` (another holder staged meanwhile).
pub(crate) async fn stage(
    conn: &mut PgConnection,
    webhook: Uuid,
    from_seq: i64,
    to_seq: i64,
    deliveries: &[Staged],
) -> anyhow::Result<()> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let n = deliveries.len() as i64;
    let first: Option<(i64,)> = sqlx::query_as(
        "UPDATE webhook_cursors SET staged_seq = $3, next_sequence = next_sequence + $4 \
         WHERE webhook_id = $1 AND staged_seq = $2 RETURNING next_sequence - $4",
    )
    .bind(webhook)
    .bind(from_seq)
    .bind(to_seq)
    .bind(n)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((first,)) = first else {
        anyhow::bail!("webhook {webhook}: the cursor moved under this deliverer");
    };
    if n > 0 {
        insert(&mut tx, webhook, first, deliveries).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn insert(
    conn: &mut PgConnection,
    webhook: Uuid,
    first_sequence: i64,
    deliveries: &[Staged],
) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = deliveries.iter().map(|_| Uuid::now_v7()).collect();
    let events: Vec<Uuid> = deliveries.iter().map(|d| d.head.event_id).collect();
    let positions: Vec<i64> = deliveries.iter().map(|d| d.head.position).collect();
    let types: Vec<&str> = deliveries
        .iter()
        .map(|d| d.head.event_type.as_str())
        .collect();
    let bodies: Vec<&str> = deliveries.iter().map(|d| d.body.as_str()).collect();
    let recorded: Vec<DateTime<Utc>> = deliveries.iter().map(|d| d.head.recorded_at).collect();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, sequence, event_id, position, event_type, body, \
         status, next_attempt_at, age_from, created_at, recorded_at) \
         SELECT u.id, $1, $2 + u.n - 1, u.event_id, u.position, u.event_type, u.body, 'PENDING', now(), now(), now(), u.recorded_at \
         FROM unnest($3::uuid[], $4::uuid[], $5::bigint[], $6::text[], $7::text[], $8::timestamptz[]) \
              WITH ORDINALITY AS u(id, event_id, position, event_type, body, recorded_at, n)",
    )
    .bind(webhook)
    .bind(first_sequence)
    .bind(&ids)
    .bind(&events)
    .bind(&positions)
    .bind(&types)
    .bind(&bodies)
    .bind(&recorded)
    .execute(conn)
    .await?;
    Ok(())
}

/// Appends `deliveries` after the endpoint's newest (a replay): new ids, new sequences.
pub async fn append(pool: &PgPool, webhook: Uuid, deliveries: &[Staged]) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let n = deliveries.len() as i64;
    let first: Option<(i64,)> = sqlx::query_as(
        "UPDATE webhook_cursors SET next_sequence = next_sequence + $2 WHERE webhook_id = $1 \
         RETURNING next_sequence - $2",
    )
    .bind(webhook)
    .bind(n)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((first,)) = first else {
        anyhow::bail!("webhook {webhook} has not started delivering yet");
    };
    insert(&mut tx, webhook, first, deliveries).await?;
    tx.commit().await?;
    Ok(())
}

/// The endpoint's oldest pending deliveries, in sequence order, unless it is halted (its
/// oldest delivery failed for too long and it has not been re-enabled since).
pub(crate) async fn pending(
    conn: &mut PgConnection,
    webhook: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<Pending>> {
    sqlx::query_as(
        "SELECT id, sequence, event_id, body, attempts, next_attempt_at, age_from, recorded_at, last_error \
         FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'PENDING' \
         AND NOT EXISTS (SELECT 1 FROM webhook_cursors WHERE webhook_id = $1 AND (halted_by IS NOT NULL OR deleted)) \
         ORDER BY sequence LIMIT $2",
    )
    .bind(webhook)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Records a 2xx answer.
pub(crate) async fn succeeded(conn: &mut PgConnection, id: Uuid, status: u16) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'SUCCEEDED', attempts = attempts + 1, \
         last_status_code = $2, last_error = NULL, delivered_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(i32::from(status))
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a failed attempt; the delivery is tried again at `next`.
pub(crate) async fn attempt_failed(
    conn: &mut PgConnection,
    id: Uuid,
    status: Option<u16>,
    error: &str,
    next: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = $2, \
         last_error = $3, next_attempt_at = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(status.map(i32::from))
    .bind(error)
    .bind(next)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks `id` as `FAILED` and halts the endpoint's deliveries at it, in one transaction.
pub(crate) async fn fail_and_halt(
    conn: &mut PgConnection,
    webhook: Uuid,
    id: Uuid,
) -> sqlx::Result<()> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("UPDATE webhook_deliveries SET status = 'FAILED' WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE webhook_cursors SET halted_by = $2 WHERE webhook_id = $1")
        .bind(webhook)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Re-enabling an endpoint: the delivery that halted it is pending again, due now, its age
/// counted from now.
pub async fn resume(pool: &PgPool, webhook: Uuid) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    let halted: Option<(Option<Uuid>,)> =
        sqlx::query_as("SELECT halted_by FROM webhook_cursors WHERE webhook_id = $1 FOR UPDATE")
            .bind(webhook)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((Some(id),)) = halted {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'PENDING', next_attempt_at = now(), age_from = now() \
             WHERE id = $1 AND status = 'FAILED'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE webhook_cursors SET halted_by = NULL WHERE webhook_id = $1")
            .bind(webhook)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// What a retry asked for by an admin found.
#[derive(Debug)]
pub enum RetryOutcome {
    /// It is pending and due now.
    Queued(Delivery),
    /// No such delivery of this endpoint.
    NotFound,
    /// It succeeded already.
    AlreadySucceeded,
}

/// Makes a failed or pending delivery due now, its age counted from now.
pub async fn retry(pool: &PgPool, webhook: Uuid, id: Uuid) -> sqlx::Result<RetryOutcome> {
    let row: Option<Delivery> = sqlx::query_as(&format!(
        "UPDATE webhook_deliveries SET status = 'PENDING', next_attempt_at = now(), age_from = now() \
         WHERE id = $1 AND webhook_id = $2 AND status <> 'SUCCEEDED' RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(webhook)
    .fetch_optional(pool)
    .await?;
    if let Some(d) = row {
        return Ok(RetryOutcome::Queued(d));
    }
    Ok(match delivery(pool, webhook, id).await? {
        Some(_) => RetryOutcome::AlreadySucceeded,
        None => RetryOutcome::NotFound,
    })
}

/// One delivery of an endpoint.
pub async fn delivery(pool: &PgPool, webhook: Uuid, id: Uuid) -> sqlx::Result<Option<Delivery>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2"
    ))
    .bind(id)
    .bind(webhook)
    .fetch_optional(pool)
    .await
}

/// A page of an endpoint's deliveries (with `status`, or all), newest sequence first,
/// below sequence `before`.
pub async fn deliveries(
    pool: &PgPool,
    webhook: Uuid,
    status: Option<&str>,
    before: i64,
    limit: i64,
) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 AND sequence < $2 \
         AND ($3::text IS NULL OR status = $3) ORDER BY sequence DESC LIMIT $4"
    ))
    .bind(webhook)
    .bind(before)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Stops a deleted endpoint: nothing more is staged or sent.
pub(crate) async fn mark_deleted(conn: &mut PgConnection, webhook: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE webhook_cursors SET deleted = true WHERE webhook_id = $1")
        .bind(webhook)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets a deleted endpoint's secrets and pending deliveries, and stops its deliverer
/// (its delivery log stays readable).
pub async fn forget(pool: &PgPool, webhook: Uuid) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    mark_deleted(&mut tx, webhook).await?;
    sqlx::query("DELETE FROM webhook_secrets WHERE webhook_id = $1")
        .bind(webhook)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'PENDING'")
        .bind(webhook)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
