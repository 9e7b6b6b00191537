//! `rm_payouts`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// A row of `rm_payouts`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PayoutRow {
    /// The payout's id.
    pub id: Uuid,
    /// The owner.
    pub user_id: Uuid,
    /// The wallet it leaves.
    pub wallet_id: Uuid,
    /// How much.
    pub amount: Decimal,
    /// ISO 4217 code.
    pub currency: String,
    /// Where it goes.
    pub destination: String,
    /// Statement text.
    pub description: Option<String>,
    /// `PENDING`, `COMPLETED` or `FAILED`.
    pub status: String,
    /// The wallet's movement when it was asked for.
    pub transaction_id: Uuid,
    /// The provider's reference, once completed.
    pub provider_reference: Option<String>,
    /// Why it failed.
    pub reason: Option<String>,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Position of its newest event (the page cursor).
    pub position: i64,
}

const COLUMNS: &str =
    "id, user_id, wallet_id, amount, currency, destination, description, status, transaction_id, \
    provider_reference, reason, created_at, updated_at, position";

/// The payout `id`.
pub async fn payout(pool: &PgPool, id: Uuid) -> Result<Option<PayoutRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM rm_payouts WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A page of payouts (of `user`, with `status`, or all), newest first, below position
/// `before`.
pub async fn payouts(
    pool: &PgPool,
    user: Option<Uuid>,
    status: Option<&str>,
    before: i64,
    limit: i64,
) -> Result<Vec<PayoutRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rm_payouts WHERE position < $1 AND ($2::uuid IS NULL OR user_id = $2) \
         AND ($3::text IS NULL OR status = $3) ORDER BY position DESC LIMIT $4"
    ))
    .bind(before)
    .bind(user)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}
