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
    /// Each wallet's balance and what it holds in escrow.
    pub wallets: HashMap<Uuid, (Decimal, Decimal)>,
    /// Each contract's status, held amount, and fees charged.
    pub contracts: HashMap<Uuid, (String, Decimal, Decimal, Milestones)>,
    /// The platform's revenue balance per currency code.
    pub revenue: HashMap<String, Decimal>,
    /// Each dispute's status.
    pub disputes: HashMap<Uuid, String>,
    /// Each pay-in's status.
    pub payins: HashMap<Uuid, String>,
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
    let wallets = sqlx::query_as::<_, (Uuid, Decimal, Decimal)>(
        "SELECT id, balance, held_in_escrow FROM rm_wallets",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(id, b, h)| (id, (b, h)))
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
    Ok(Snapshot {
        applied,
        users,
        wallets,
        contracts,
        revenue,
        disputes,
        payins,
    })
}
