//! `rm_users`, and a user's own streams.

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

/// `user`'s own streams: its user stream and its wallets'. (The contracts and disputes it
/// takes part in are indexed by the event store itself: `party_events`.)
pub async fn own_streams(pool: &PgPool, user: Uuid) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT 'user-' || $1::text UNION ALL \
         SELECT 'wallet-' || id FROM rm_wallets WHERE user_id = $1",
    )
    .bind(user)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(s,)| s).collect())
}
