//! Idempotency records, written in the same transaction as a command's events. The store
//! keeps what the command produced as opaque JSON (its writer decides the form) and the
//! position its events reached; it knows nothing of how an answer is rendered.

use serde_json::Value;
use sqlx::PgConnection;

use crate::{EventStore, StoreError};

/// What the first use of a key produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    /// SHA-256 of the request (method, route and body) that first used the key.
    pub request_hash: Vec<u8>,
    /// What the command produced, as its writer serialized it.
    pub answer: Value,
    /// The highest position of the command's events (absent on keys stored before
    /// positions were kept beside the answer).
    pub position: Option<i64>,
}

/// A key to be recorded with a command's effect.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    /// Who and where: the caller's id and the route, so keys never collide across users.
    pub scope: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// SHA-256 of the request.
    pub request_hash: Vec<u8>,
}

impl EventStore {
    /// Looks up what a key's first use produced.
    pub async fn find_idempotent(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredAnswer>, StoreError> {
        let row: Option<(Vec<u8>, Value, Option<i64>)> = sqlx::query_as(
            "SELECT request_hash, answer, position FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(request_hash, answer, position)| StoredAnswer {
            request_hash,
            answer,
            position,
        }))
    }
}

impl IdempotencyRecord {
    /// Stores the key with what the command produced and its position, inside the
    /// command's transaction. A concurrent request with the same key makes this fail with
    /// a unique violation on `idempotency_keys_pkey`; the loser then reads the winner's.
    pub async fn save(
        &self,
        conn: &mut PgConnection,
        answer: &Value,
        position: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, answer, position) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&self.scope)
        .bind(&self.key)
        .bind(&self.request_hash)
        .bind(answer)
        .bind(position)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// One answer to store under its key (a group commit stores many at once; the statement
/// gives each the highest position of its command's events).
#[derive(Debug, Clone)]
pub struct IdempotencyRow {
    /// The key and request it answers.
    pub record: IdempotencyRecord,
    /// What the command produced.
    pub answer: Value,
}

impl EventStore {
    /// Deletes idempotency keys recorded more than `older_than` ago, `batch` rows per
    /// statement (each its own short transaction, so no lock is held for long and commands
    /// go on meanwhile), until none is left; returns how many were deleted. Keys another
    /// pruner is deleting are skipped, so several processes may prune at once.
    pub async fn prune_idempotency_keys(
        &self,
        older_than: std::time::Duration,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let seconds = older_than.as_secs_f64();
        let mut deleted = 0u64;
        loop {
            let done = sqlx::query(
                "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY( \
                   SELECT ctid FROM idempotency_keys \
                   WHERE created_at < now() - make_interval(secs => $1) \
                   LIMIT $2 FOR UPDATE SKIP LOCKED))",
            )
            .bind(seconds)
            .bind(batch)
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += done;
            if (done as i64) < batch {
                return Ok(deleted);
            }
        }
    }
}
