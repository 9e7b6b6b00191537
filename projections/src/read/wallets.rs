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
    /// What its owner asked to pay out, not yet completed or failed.
    pub pending_payouts: Decimal,
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
    /// `IN` or `OUT` for the wallet whose history it is in; `None` for another party's
    /// movement on a shared contract.
    pub direction: Option<String>,
    /// That wallet's balance right after it.
    pub balance_after: Option<Decimal>,
    /// The other user: a transfer's other side, a contract's other party.
    pub counterparty_user_id: Option<Uuid>,
    /// Their e-mail address.
    pub counterparty_email: Option<String>,
}

/// A history row's columns as a person reads them, relative to the wallets `$1` of the
/// user `$4`: direction, balance after, and the other party (with [`READABLE_JOINS`]).
/// `t.sort` is the row's place in that user's history (and the page cursor): the position
/// of its own wallet's leg, or for another party's movement the row's position.
const READABLE: &str = "t.id, t.from_wallet_id, t.to_wallet_id, t.amount, t.currency, t.type, t.description, \
    t.created_at, t.sort AS position, t.contract_id, \
    CASE WHEN t.to_wallet_id = ANY($1) THEN 'IN' WHEN t.from_wallet_id = ANY($1) THEN 'OUT' END AS direction, \
    CASE WHEN t.to_wallet_id = ANY($1) THEN t.to_balance_after \
         WHEN t.from_wallet_id = ANY($1) THEN t.from_balance_after END AS balance_after, \
    cp.user_id AS counterparty_user_id, u.email AS counterparty_email";

/// The other party of a row: for an escrow movement the contract's other party, for a
/// transfer the owner of the other wallet.
const READABLE_JOINS: &str = "LEFT JOIN LATERAL (SELECT CASE \
      WHEN t.contract_id IS NOT NULL THEN (SELECT CASE WHEN c.buyer_id = $4 THEN c.seller_id ELSE c.buyer_id END \
                                           FROM rm_contracts c WHERE c.id = t.contract_id) \
      WHEN t.from_wallet_id = ANY($1) AND t.to_wallet_id IS NOT NULL \
           THEN (SELECT o.user_id FROM rm_wallets o WHERE o.id = t.to_wallet_id) \
      WHEN t.to_wallet_id = ANY($1) AND t.from_wallet_id IS NOT NULL \
           THEN (SELECT o.user_id FROM rm_wallets o WHERE o.id = t.from_wallet_id) \
    END AS user_id) cp ON true \
    LEFT JOIN rm_users u ON u.id = cp.user_id";

/// A wallet's numbers at one instant, from `rm_wallet_states`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WalletStateRow {
    /// Position of the last change at or before the instant.
    pub position: i64,
    /// When that change was recorded.
    pub at: DateTime<Utc>,
    /// Available balance.
    pub balance: Decimal,
    /// Held in escrow; `None` when the row came from the upgrade's backfill (before
    /// `escrow replay` rebuilt the read models).
    pub held_in_escrow: Option<Decimal>,
    /// Pending payouts.
    pub pending_payouts: Decimal,
}

/// The numbers of `wallet` after the last change recorded at or before `at`; `None` if it
/// had not changed by then.
pub async fn wallet_as_of(
    pool: &PgPool,
    wallet: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<WalletStateRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position, at, balance, held_in_escrow, pending_payouts FROM rm_wallet_states \
         WHERE wallet_id = $1 AND at <= $2 ORDER BY at DESC, ord DESC LIMIT 1",
    )
    .bind(wallet)
    .bind(at)
    .fetch_optional(pool)
    .await
}

/// Up to `limit` of one wallet's own movements recorded in `[from, to)`, oldest first,
/// after position `after` (a statement's keyset page).
pub async fn statement_page(
    pool: &PgPool,
    user: Uuid,
    wallet: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    after: i64,
    limit: i64,
) -> Result<Vec<TransactionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {READABLE} FROM ( \
           (SELECT *, from_position AS sort FROM rm_transactions WHERE from_wallet_id = $1[1] AND from_position > $2 \
              AND created_at >= $5 AND created_at < $6 ORDER BY from_position LIMIT $3) \
           UNION ALL \
           (SELECT *, to_position AS sort FROM rm_transactions WHERE to_wallet_id = $1[1] AND to_position > $2 \
              AND created_at >= $5 AND created_at < $6 ORDER BY to_position LIMIT $3) \
         ) t {READABLE_JOINS} ORDER BY t.sort LIMIT $3"
    ))
    .bind(vec![wallet])
    .bind(after)
    .bind(limit)
    .bind(user)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// The balance of `wallet` after its last movement recorded before `at` (0 if none).
pub async fn balance_before(
    pool: &PgPool,
    wallet: Uuid,
    at: DateTime<Utc>,
) -> Result<Decimal, sqlx::Error> {
    let row: Option<(Option<Decimal>,)> = sqlx::query_as(
        "SELECT after FROM ( \
           (SELECT from_balance_after AS after, from_position AS sort FROM rm_transactions \
              WHERE from_wallet_id = $1 AND created_at < $2 ORDER BY from_position DESC LIMIT 1) \
           UNION ALL \
           (SELECT to_balance_after, to_position FROM rm_transactions \
              WHERE to_wallet_id = $1 AND created_at < $2 ORDER BY to_position DESC LIMIT 1) \
         ) t ORDER BY sort DESC LIMIT 1",
    )
    .bind(wallet)
    .bind(at)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(b,)| b).unwrap_or_default())
}

/// The wallet of `user` in `currency`.
pub async fn wallet(
    pool: &PgPool,
    user: Uuid,
    currency: &str,
) -> Result<Option<WalletRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_id, currency, balance, held_in_escrow, created_at, updated_at, frozen_reason, \
         pending_payouts FROM rm_wallets WHERE user_id = $1 AND currency = $2",
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
    sqlx::query_as(&format!(
        // A page is the newest `limit` rows of the union, so each part needs only its own
        // newest `limit`: per wallet and side, one backward walk of its (wallet, position)
        // index. (Taking every row of each part and sorting the union would read a wallet's
        // whole history, spilling to disk, for every page.)
        "SELECT {READABLE} FROM ( \
           SELECT t.*, t.from_position AS sort FROM UNNEST($1::uuid[]) AS w(id) CROSS JOIN LATERAL ( \
             SELECT * FROM rm_transactions WHERE from_wallet_id = w.id AND from_position < $2 \
             ORDER BY from_position DESC LIMIT $3) t \
           UNION \
           SELECT t.*, t.to_position AS sort FROM UNNEST($1::uuid[]) AS w(id) CROSS JOIN LATERAL ( \
             SELECT * FROM rm_transactions WHERE to_wallet_id = w.id AND to_position < $2 \
             ORDER BY to_position DESC LIMIT $3) t \
           UNION \
           (SELECT t.*, t.position AS sort FROM rm_transactions t JOIN rm_contracts c ON c.id = t.contract_id \
            WHERE (c.buyer_id = $4 OR c.seller_id = $4) AND t.position < $2 AND ($5::text IS NULL OR t.currency = $5) \
            ORDER BY t.position DESC LIMIT $3) \
         ) t {READABLE_JOINS} ORDER BY t.sort DESC LIMIT $3"
    ))
    .bind(&ids)
    .bind(before)
    .bind(limit)
    .bind(user)
    .bind(currency)
    .fetch_all(pool)
    .await
}
