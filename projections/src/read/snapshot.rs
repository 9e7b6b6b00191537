//! Every read model at once, keyed for comparison with the state folded from the events
//! (`escrow verify`).

use std::collections::HashMap;

use domain::contract::Milestones;
use rust_decimal::Decimal;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::apply::PROJECTION;

/// The read models as `verify` compares them.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The version of each stream the read models have applied.
    pub applied: HashMap<String, i64>,
    /// Each user's e-mail and role.
    pub users: HashMap<Uuid, (String, String)>,
    /// Each wallet's balance, what it holds in escrow, and its pending payouts.
    pub wallets: HashMap<Uuid, (Decimal, Decimal, Decimal)>,
    /// Each wallet's history: the sum of its movements and the balance after the last.
    pub histories: HashMap<Uuid, (Decimal, Option<Decimal>)>,
    /// Each wallet's last recorded state (`asOf`): balance, held in escrow, pending payouts.
    pub last_states: HashMap<Uuid, (Decimal, Option<Decimal>, Decimal)>,
    /// Each payout's status.
    pub payouts: HashMap<Uuid, String>,
    /// Each contract's status, held amount, and fees charged.
    pub contracts: HashMap<Uuid, (String, Decimal, Decimal, Milestones)>,
    /// The platform's revenue balance per currency code.
    pub revenue: HashMap<String, Decimal>,
    /// Each dispute's status.
    pub disputes: HashMap<Uuid, String>,
    /// Each pay-in's status.
    pub payins: HashMap<Uuid, String>,
    /// Each webhook endpoint's status and URL.
    pub webhooks: HashMap<Uuid, (String, String)>,
}

/// Reads every read model (a whole-table read each: for `verify`, not for requests).
pub async fn snapshot(pool: &PgPool) -> Result<Snapshot, sqlx::Error> {
    let applied = sqlx::query_as::<_, (String, i64)>(
        "SELECT stream_id, version FROM projection_streams WHERE projection = $1",
    )
    .bind(PROJECTION)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let users = sqlx::query_as::<_, (Uuid, String, String)>("SELECT id, email, role FROM rm_users")
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, e, r)| (id, (e, r)))
        .collect();
    let wallets = sqlx::query_as::<_, (Uuid, Decimal, Decimal, Decimal)>(
        "SELECT id, balance, held_in_escrow, pending_payouts FROM rm_wallets",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(id, b, h, p)| (id, (b, h, p)))
    .collect();
    let histories = sqlx::query_as::<_, (Uuid, Decimal, Option<Decimal>)>(
        "SELECT wallet, sum(delta), (array_agg(after ORDER BY position DESC))[1] FROM ( \
           SELECT from_wallet_id AS wallet, -amount AS delta, from_balance_after AS after, from_position AS position \
             FROM rm_transactions WHERE from_wallet_id IS NOT NULL \
           UNION ALL \
           SELECT to_wallet_id, amount, to_balance_after, to_position \
             FROM rm_transactions WHERE to_wallet_id IS NOT NULL) l GROUP BY wallet",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(w, sum, last)| (w, (sum, last)))
    .collect();
    let last_states = sqlx::query_as::<_, (Uuid, Decimal, Option<Decimal>, Decimal)>(
        "SELECT DISTINCT ON (wallet_id) wallet_id, balance, held_in_escrow, pending_payouts \
         FROM rm_wallet_states ORDER BY wallet_id, ord DESC",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(w, b, h, p)| (w, (b, h, p)))
    .collect();
    let payouts = sqlx::query_as::<_, (Uuid, String)>("SELECT id, status FROM rm_payouts")
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    type Row = (Uuid, String, Decimal, Decimal, Json<Milestones>);
    let contracts = sqlx::query_as::<_, Row>(
        "SELECT id, status, held_amount, fee_charged, milestones FROM rm_contracts",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(id, s, h, f, Json(m))| (id, (s, h, f, m)))
    .collect();
    let revenue =
        sqlx::query_as::<_, (String, Decimal)>("SELECT currency, balance FROM rm_revenue")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let payins = sqlx::query_as::<_, (Uuid, String)>("SELECT id, status FROM rm_payins")
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    let disputes = sqlx::query_as::<_, (Uuid, String)>("SELECT id, status FROM rm_disputes")
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    let webhooks =
        sqlx::query_as::<_, (Uuid, String, String)>("SELECT id, status, url FROM rm_webhooks")
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|(id, s, u)| (id, (s, u)))
            .collect();
    Ok(Snapshot {
        applied,
        webhooks,
        users,
        wallets,
        histories,
        last_states,
        payouts,
        contracts,
        revenue,
        disputes,
        payins,
    })
}
