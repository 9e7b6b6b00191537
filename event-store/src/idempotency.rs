//! Idempotency records, written in the same transaction as a command's events.

use serde_json::Value;
use sqlx::PgConnection;

use crate::{EventStore, StoreError};

/// What was answered the first time a key was used.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    /// SHA-256 of the request (method, route and body) that first used the key.
    pub request_hash: Vec<u8>,
    /// The HTTP status that was returned.
    pub status: i16,
    /// The JSON body that was returned.
    pub body: Value,
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
    /// Looks up a key's stored response.
    pub async fn find_idempotent(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let row: Option<(Vec<u8>, i16, Value)> =
            sqlx::query_as("SELECT request_hash, status, response FROM idempotency_keys WHERE scope = $1 AND key = $2")
                .bind(scope)
                .bind(key)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(request_hash, status, body)| StoredResponse {
            request_hash,
            status,
            body,
        }))
    }
}

impl IdempotencyRecord {
    /// Stores the key with its response inside the command's transaction. A concurrent
    /// request with the same key makes this fail with a unique violation on
    /// `idempotency_keys_pkey`; the loser then reads the winner's stored answer.
    pub async fn save(
        &self,
        conn: &mut PgConnection,
        status: i16,
        body: &Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, status, response) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&self.scope)
        .bind(&self.key)
        .bind(&self.request_hash)
        .bind(status)
        .bind(body)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// One response to store under its key (a group commit stores many at once).
#[derive(Debug, Clone)]
pub struct IdempotencyRow {
    /// The key and request it answers.
    pub record: IdempotencyRecord,
    /// HTTP status of the response.
    pub status: i16,
    /// The response body.
    pub body: Value,
}
