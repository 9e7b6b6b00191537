//! `rm_payins`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// A row of `rm_payins`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PayinRow {
    /// The pay-in's id.
    pub id: Uuid,
    /// Whose wallet it is for.
    pub user_id: Uuid,
    /// How much.
    pub amount: Decimal,
    /// ISO 4217 code.
    pub currency: String,
    /// The provider's reference.
    pub reference: String,
    /// Statement text.
    pub description: Option<String>,
    /// `PENDING`, `CONFIRMED` or `FAILED`.
    pub status: String,
    /// The service or admin that created it.
    pub created_by: Uuid,
    /// Why it failed.
    pub reason: Option<String>,
    /// The deposit, once confirmed.
    pub transaction_id: Option<Uuid>,
    /// When it was announced.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Position of its newest event (the page cursor).
    pub position: i64,
}

const COLUMNS: &str =
    "id, user_id, amount, currency, reference, description, status, created_by, reason, \
    transaction_id, created_at, updated_at, position";

/// The pay-in `id`.
pub async fn payin(pool: &PgPool, id: Uuid) -> Result<Option<PayinRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM rm_payins WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A page of pay-ins (for `user`, with `status`, or all), newest first, below position
/// `before`.
pub async fn payins(
    pool: &PgPool,
    user: Option<Uuid>,
    status: Option<&str>,
    before: i64,
    limit: i64,
) -> Result<Vec<PayinRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rm_payins WHERE position < $1 AND ($2::uuid IS NULL OR user_id = $2) \
         AND ($3::text IS NULL OR status = $3) ORDER BY position DESC LIMIT $4"
    ))
    .bind(before)
    .bind(user)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}
