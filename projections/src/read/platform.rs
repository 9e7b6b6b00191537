//! `rm_fee_schedules`, `rm_revenue` and `rm_revenue_transactions`: the platform's fee
//! schedules and its revenue account.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// A row of `rm_fee_schedules`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FeeScheduleRow {
    /// ISO 4217 code.
    pub currency: String,
    /// Basis points of each payment.
    pub percent_bps: i32,
    /// Least fee per payment.
    pub minimum: Option<Decimal>,
    /// Most fee per payment.
    pub maximum: Option<Decimal>,
    /// `SELLER`, `BUYER` or `SPLIT`.
    pub payer: String,
    /// The admin who set it.
    pub set_by: Option<Uuid>,
    /// When it was set.
    pub updated_at: DateTime<Utc>,
}

/// A row of `rm_revenue`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevenueRow {
    /// ISO 4217 code.
    pub currency: String,
    /// Fees collected less withdrawals.
    pub balance: Decimal,
    /// When it last moved.
    pub updated_at: DateTime<Utc>,
}

/// A row of `rm_revenue_transactions`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevenueTransactionRow {
    /// The movement.
    pub id: Uuid,
    /// ISO 4217 code.
    pub currency: String,
    /// `FEE` (in) or `WITHDRAWAL` (out).
    pub kind: String,
    /// How much (positive).
    pub amount: Decimal,
    /// The contract a fee came from.
    pub contract_id: Option<Uuid>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Position of its event (the page cursor).
    pub position: i64,
}

/// Every currency's fee schedule, by currency.
pub async fn fee_schedules(pool: &PgPool) -> Result<Vec<FeeScheduleRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT currency, percent_bps, minimum, maximum, payer, set_by, updated_at \
         FROM rm_fee_schedules ORDER BY currency",
    )
    .fetch_all(pool)
    .await
}

/// The revenue balance of every currency that has had a fee, by currency.
pub async fn revenue(pool: &PgPool) -> Result<Vec<RevenueRow>, sqlx::Error> {
    sqlx::query_as("SELECT currency, balance, updated_at FROM rm_revenue ORDER BY currency")
        .fetch_all(pool)
        .await
}

/// A page of revenue movements (of `currency`, or all), newest first, below position
/// `before`.
pub async fn revenue_history(
    pool: &PgPool,
    currency: Option<&str>,
    before: i64,
    limit: i64,
) -> Result<Vec<RevenueTransactionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, currency, type AS kind, amount, contract_id, created_at, position \
         FROM rm_revenue_transactions WHERE position < $1 AND ($2::text IS NULL OR currency = $2) \
         ORDER BY position DESC LIMIT $3",
    )
    .bind(before)
    .bind(currency)
    .bind(limit)
    .fetch_all(pool)
    .await
}
