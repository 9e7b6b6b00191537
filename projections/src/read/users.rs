//! `rm_users`, and which streams are a user's.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A row of `rm_users`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    /// The user's id.
    pub id: Uuid,
    /// The normalised e-mail address.
    pub email: String,
    /// `user`, `arbiter` or `admin`.
    pub role: String,
    /// When it registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The user `id`.
pub async fn user(pool: &PgPool, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, role, created_at, updated_at FROM rm_users WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The streams that are `user`'s: its own, its wallets', its contracts' and their
/// disputes'.
pub async fn streams_of(pool: &PgPool, user: Uuid) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT 'user-' || $1::text UNION ALL \
         SELECT 'wallet-' || id FROM rm_wallets WHERE user_id = $1 UNION ALL \
         SELECT 'contract-' || id FROM rm_contracts WHERE buyer_id = $1 OR seller_id = $1 UNION ALL \
         SELECT 'dispute-' || id FROM rm_disputes WHERE buyer_id = $1 OR seller_id = $1",
    )
    .bind(user)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(s,)| s).collect())
}
