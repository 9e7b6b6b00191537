//! `rm_webhooks`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A row of `rm_webhooks`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WebhookRow {
    /// The endpoint's id.
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// Its filter.
    pub events: Vec<String>,
    /// What it is for.
    pub description: Option<String>,
    /// `ACTIVE`, `PAUSED`, `DISABLED` or `DELETED`.
    pub status: String,
    /// Rotations of its secret so far.
    pub secret_version: i32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Position of its newest event.
    pub position: i64,
}

const COLUMNS: &str =
    "id, url, events, description, status, secret_version, created_at, updated_at, position";

/// The endpoint `id` (a deleted one as `DELETED`).
pub async fn webhook(pool: &PgPool, id: Uuid) -> Result<Option<WebhookRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM rm_webhooks WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Every endpoint not deleted, oldest first (an installation has a handful).
pub async fn webhooks(pool: &PgPool) -> Result<Vec<WebhookRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rm_webhooks WHERE status <> 'DELETED' ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await
}
