//! `rm_disputes`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// A row of `rm_disputes`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DisputeRow {
    /// The dispute's id.
    pub id: Uuid,
    /// Its contract.
    pub contract_id: Uuid,
    /// The contract's buyer.
    pub buyer_id: Uuid,
    /// The contract's seller.
    pub seller_id: Uuid,
    /// The party that raised it.
    pub raised_by: Uuid,
    /// What the party said.
    pub description: String,
    /// `OPEN` or `RESOLVED`.
    pub status: String,
    /// The decision, once resolved.
    pub outcome: Option<String>,
    /// Paid to the seller by the decision.
    pub seller_amount: Option<Decimal>,
    /// Returned to the buyer by the decision.
    pub buyer_amount: Option<Decimal>,
    /// ISO 4217 code.
    pub currency: String,
    /// The arbiter's reasoning.
    pub resolution: Option<String>,
    /// Who decided.
    pub resolved_by: Option<Uuid>,
    /// When it was decided.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When it was raised.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Position of its newest event (the page cursor).
    pub position: i64,
}

const COLUMNS: &str = "id, contract_id, buyer_id, seller_id, raised_by, description, status, outcome, seller_amount, \
    buyer_amount, currency, resolution, resolved_by, resolved_at, created_at, updated_at, position";

/// The dispute `id`.
pub async fn dispute(pool: &PgPool, id: Uuid) -> Result<Option<DisputeRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM rm_disputes WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A page of disputes (with `status`, or any), newest first, below position `before`:
/// every dispute, or only those `party` is a party to.
pub async fn disputes(
    pool: &PgPool,
    party: Option<Uuid>,
    status: Option<&str>,
    before: i64,
    limit: i64,
) -> Result<Vec<DisputeRow>, sqlx::Error> {
    // Only the filters that apply, so that each plan can walk an index newest first: the
    // queue by (status, position) or (position), a party's own by its side's index.
    let status_filter = |sql: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>| {
        if let Some(s) = status {
            sql.push(" AND status = ").push_bind(s.to_owned());
        }
    };
    let mut sql = sqlx::QueryBuilder::new(format!("SELECT {COLUMNS} FROM "));
    match party {
        None => {
            sql.push("rm_disputes WHERE position < ").push_bind(before);
            status_filter(&mut sql);
        }
        Some(u) => {
            sql.push(format!(
                "(SELECT {COLUMNS} FROM rm_disputes WHERE buyer_id = "
            ))
            .push_bind(u)
            .push(" AND position < ")
            .push_bind(before);
            status_filter(&mut sql);
            sql.push(format!(
                " UNION ALL SELECT {COLUMNS} FROM rm_disputes WHERE seller_id = "
            ))
            .push_bind(u)
            .push(" AND buyer_id <> ")
            .push_bind(u)
            .push(" AND position < ")
            .push_bind(before);
            status_filter(&mut sql);
            sql.push(") d");
        }
    }
    sql.push(" ORDER BY position DESC LIMIT ").push_bind(limit);
    sql.build_query_as().fetch_all(pool).await
}
