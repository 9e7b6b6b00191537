//! `rm_wallets` and `rm_transactions`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// A row of `rm_wallets`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WalletRow {
    /// The wallet's id.
    pub id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// ISO 4217 code.
    pub currency: String,
    /// What the owner may spend.
    pub balance: Decimal,
    /// What the owner's funded contracts hold.
    pub held_in_escrow: Decimal,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Why an admin froze it; `None`: not frozen.
    pub frozen_reason: Option<String>,
}

/// A row of `rm_transactions`: one money movement as a wallet's history shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransactionRow {
    /// The movement's id.
    pub id: Uuid,
    /// Debited wallet, if any.
    pub from_wallet_id: Option<Uuid>,
    /// Credited wallet, if any.
    pub to_wallet_id: Option<Uuid>,
    /// How much.
    pub amount: Decimal,
    /// ISO 4217 code.
    pub currency: String,
    /// `DEPOSIT`, `WITHDRAWAL`, `TRANSFER`, `ESCROW_HOLD`, …
    #[sqlx(rename = "type")]
    pub kind: String,
    /// The statement text.
    pub description: Option<String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// The event's global position (the page cursor).
    pub position: i64,
    /// The contract it belongs to, for escrow movements.
    pub contract_id: Option<Uuid>,
}

/// The wallet of `user` in `currency`.
pub async fn wallet(
    pool: &PgPool,
    user: Uuid,
    currency: &str,
) -> Result<Option<WalletRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_id, currency, balance, held_in_escrow, created_at, updated_at, frozen_reason \
         FROM rm_wallets WHERE user_id = $1 AND currency = $2",
    )
    .bind(user)
    .bind(currency)
    .fetch_optional(pool)
    .await
}

/// A page of `user`'s money movements (in `currency`, or all), newest first, below
/// position `before`: those of its wallets and those of its contracts' escrow.
pub async fn history(
    pool: &PgPool,
    user: Uuid,
    currency: Option<&str>,
    before: i64,
    limit: i64,
) -> Result<Vec<TransactionRow>, sqlx::Error> {
    let wallets: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM rm_wallets WHERE user_id = $1 AND ($2::text IS NULL OR currency = $2)",
    )
    .bind(user)
    .bind(currency)
    .fetch_all(pool)
    .await?;
    let ids: Vec<Uuid> = wallets.into_iter().map(|(i,)| i).collect();
    sqlx::query_as(
        // A page is the newest `limit` rows of the union, so each part needs only its own
        // newest `limit`: per wallet and side, one backward walk of its (wallet, position)
        // index. (Taking every row of each part and sorting the union would read a wallet's
        // whole history, spilling to disk, for every page.)
        "SELECT id, from_wallet_id, to_wallet_id, amount, currency, type, description, created_at, position, contract_id FROM ( \
           SELECT t.* FROM UNNEST($1::uuid[]) AS w(id) CROSS JOIN LATERAL ( \
             SELECT * FROM rm_transactions WHERE from_wallet_id = w.id AND position < $2 \
             ORDER BY position DESC LIMIT $3) t \
           UNION \
           SELECT t.* FROM UNNEST($1::uuid[]) AS w(id) CROSS JOIN LATERAL ( \
             SELECT * FROM rm_transactions WHERE to_wallet_id = w.id AND position < $2 \
             ORDER BY position DESC LIMIT $3) t \
           UNION \
           (SELECT t.* FROM rm_transactions t JOIN rm_contracts c ON c.id = t.contract_id \
            WHERE (c.buyer_id = $4 OR c.seller_id = $4) AND t.position < $2 AND ($5::text IS NULL OR t.currency = $5) \
            ORDER BY t.position DESC LIMIT $3) \
         ) t ORDER BY position DESC LIMIT $3",
    )
    .bind(&ids)
    .bind(before)
    .bind(limit)
    .bind(user)
    .bind(currency)
    .fetch_all(pool)
    .await
}
