//! `rm_contracts`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// A row of `rm_contracts`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ContractRow {
    /// The contract's id.
    pub id: Uuid,
    /// Who pays.
    pub buyer_id: Uuid,
    /// Who gets paid.
    pub seller_id: Uuid,
    /// Title.
    pub title: String,
    /// Terms.
    pub description: Option<String>,
    /// The price.
    pub amount: Decimal,
    /// ISO 4217 code.
    pub currency: String,
    /// What its escrow holds now.
    pub held_amount: Decimal,
    /// `DRAFT`, `ACTIVE`, `DISPUTED`, `COMPLETED`, …
    pub status: String,
    /// Hours the buyer has after delivery.
    pub inspection_period_hours: Option<i32>,
    /// When the seller delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When held money releases by itself.
    pub auto_release_at: Option<DateTime<Utc>>,
    /// The open (or last) dispute.
    pub dispute_id: Option<Uuid>,
    /// When it was drafted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Position of its newest event (the page cursor).
    pub position: i64,
    /// A draft not funded by then expires.
    pub fund_by: Option<DateTime<Utc>>,
    /// The copied fee rate, in basis points (none: no fee).
    pub fee_percent_bps: Option<i32>,
    /// The copied least fee per payment.
    pub fee_minimum: Option<Decimal>,
    /// The copied most fee per payment.
    pub fee_maximum: Option<Decimal>,
    /// `SELLER`, `BUYER` or `SPLIT`.
    pub fee_payer: Option<String>,
    /// Fees collected so far.
    pub fee_charged: Decimal,
    /// Its stages, as the projection folded them.
    pub milestones: sqlx::types::Json<domain::contract::Milestones>,
}

const COLUMNS: &str = "id, buyer_id, seller_id, title, description, amount, currency, held_amount, status, \
    inspection_period_hours, delivered_at, auto_release_at, dispute_id, created_at, updated_at, position, \
    fund_by, fee_percent_bps, fee_minimum, fee_maximum, fee_payer, fee_charged, milestones";

/// The contract `id`.
pub async fn contract(pool: &PgPool, id: Uuid) -> Result<Option<ContractRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM rm_contracts WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A page of the contracts `user` is a party to (with `status`, or any), newest first,
/// below position `before`.
pub async fn contracts_of(
    pool: &PgPool,
    user: Uuid,
    status: Option<&str>,
    before: i64,
    limit: i64,
) -> Result<Vec<ContractRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        // The newest of each side, each a backward walk of its (party, position) index;
        // `buyer_id = $1 OR seller_id = $1` would read every contract of the user to sort
        // them for every page.
        "SELECT {COLUMNS} FROM ( \
           (SELECT * FROM rm_contracts WHERE buyer_id = $1 AND position < $2 \
            AND ($3::text IS NULL OR status = $3) ORDER BY position DESC LIMIT $4) \
           UNION ALL \
           (SELECT * FROM rm_contracts WHERE seller_id = $1 AND buyer_id <> $1 AND position < $2 \
            AND ($3::text IS NULL OR status = $3) ORDER BY position DESC LIMIT $4) \
         ) c ORDER BY position DESC LIMIT $4"
    ))
    .bind(user)
    .bind(before)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Active contracts whose inspection window ended by `now`, the oldest first, at most
/// `limit`.
pub async fn due_for_release(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    due(
        pool,
        "SELECT id FROM rm_contracts WHERE status = 'ACTIVE' AND auto_release_at IS NOT NULL AND auto_release_at <= $1 \
         ORDER BY auto_release_at LIMIT $2",
        now,
        limit,
    )
    .await
}

/// Drafts whose funding deadline passed by `now`, the oldest deadline first, at most `limit`.
pub async fn due_for_expiry(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    due(
        pool,
        "SELECT id FROM rm_contracts WHERE status = 'DRAFT' AND fund_by IS NOT NULL AND fund_by <= $1 \
         ORDER BY fund_by LIMIT $2",
        now,
        limit,
    )
    .await
}

/// The ids a deadline query (`$1` now, `$2` limit) nominates.
async fn due(
    pool: &PgPool,
    sql: &str,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(sql)
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}
