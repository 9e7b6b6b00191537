//! Whether a token still speaks for its holder: the account's stored role and suspension
//! (from its stream, not from the token) and whether the token's session was ended by a
//! logout. Each answer is remembered for [`FRESH_FOR`], so a role change, a suspension or
//! a logout takes effect on every server within that, at one query per account and per
//! session a second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use command_handlers::Ledger;
use domain::{Role, UserId};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;

/// How long a checked answer stands: well inside the 5 s within which changes must reach
/// every server.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// Answers remembered at most (each is a few dozen bytes); beyond, the memory starts over.
const REMEMBERED_MAX: usize = 100_000;

/// An account as it stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The stored role.
    pub role: Role,
    /// Whether it is suspended.
    pub suspended: bool,
}

/// The checks, with their remembered answers.
#[derive(Debug, Default)]
pub struct Sessions {
    accounts: Mutex<HashMap<UserId, (Instant, Standing)>>,
    ended: Mutex<HashMap<Uuid, (Instant, bool)>>,
}

impl Sessions {
    /// The account's stored role and suspension (401 if it does not exist).
    pub async fn standing(&self, ledger: &Ledger, user: UserId) -> Result<Standing, ApiError> {
        if let Some(s) = remembered(&self.accounts, &user) {
            return Ok(s);
        }
        let state = ledger.user(user).await?.state;
        if !state.exists() {
            return Err(ApiError::unauthorized("the token's user does not exist"));
        }
        let s = Standing {
            role: state.role,
            suspended: state.suspended.is_some(),
        };
        remember(&self.accounts, user, s);
        Ok(s)
    }

    /// Forgets what is remembered of `user`'s account: a login on this server reads the
    /// account afresh, and its requests should not be answered from an older reading.
    pub fn forget_account(&self, user: UserId) {
        let mut m = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&user);
    }

    /// Whether the session was ended (by a logout).
    pub async fn ended(&self, pool: &PgPool, sid: Uuid) -> Result<bool, ApiError> {
        if let Some(e) = remembered(&self.ended, &sid) {
            return Ok(e);
        }
        let row: Option<(Option<DateTime<Utc>>,)> =
            sqlx::query_as("SELECT ended_at FROM sessions WHERE id = $1")
                .bind(sid)
                .fetch_optional(pool)
                .await
                .map_err(ApiError::internal)?;
        // A session the store does not know is as good as ended: tokens name only sessions
        // that a login recorded.
        let ended = row.is_none_or(|(at,)| at.is_some());
        remember(&self.ended, sid, ended);
        Ok(ended)
    }

    /// Records a new session for `user` with its first refresh token (returned), which
    /// lives until `expires_at`.
    pub async fn start(
        pool: &PgPool,
        user: UserId,
        expires_at: DateTime<Utc>,
    ) -> Result<(Uuid, String), ApiError> {
        let sid = Uuid::now_v7();
        let (refresh, hash) = new_refresh_token();
        let mut tx = pool.begin().await.map_err(ApiError::internal)?;
        sqlx::query("INSERT INTO sessions (id, user_id, expires_at) VALUES ($1, $2, $3)")
            .bind(sid)
            .bind(user.0)
            .bind(expires_at)
            .execute(&mut *tx)
            .await
            .map_err(ApiError::internal)?;
        store_refresh_token(&mut tx, &hash, sid, expires_at).await?;
        tx.commit().await.map_err(ApiError::internal)?;
        // Sessions whose tokens have all expired can go.
        sqlx::query(
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
             WHERE expires_at < now() - interval '1 hour' LIMIT 100)",
        )
        .execute(pool)
        .await
        .map_err(ApiError::internal)?;
        Ok((sid, refresh))
    }

    /// Spends a refresh token: the next one of its session (returned), valid until
    /// `expires_at`, with the session's user and id. Presenting a spent token again ends
    /// the whole session — someone holds a copy — and is refused like an unknown one.
    pub async fn refresh(
        &self,
        pool: &PgPool,
        token: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(UserId, Uuid, String), ApiError> {
        let refused = |why: &str| {
            ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "INVALID_REFRESH_TOKEN",
                format!("the refresh token {why}: log in again"),
            )
        };
        let hash = Sha256::digest(token.trim().as_bytes()).to_vec();
        let mut tx = pool.begin().await.map_err(ApiError::internal)?;
        type Found = (
            Uuid,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
            Uuid,
            Option<DateTime<Utc>>,
        );
        let found: Option<Found> = sqlx::query_as(
            "SELECT r.session_id, r.expires_at, r.spent_at, s.user_id, s.ended_at \
             FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id \
             WHERE r.token_hash = $1 FOR UPDATE OF r, s",
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(ApiError::internal)?;
        let Some((sid, expires, spent, user, ended)) = found else {
            return Err(refused("is unknown"));
        };
        if spent.is_some() {
            sqlx::query("UPDATE sessions SET ended_at = now() WHERE id = $1 AND ended_at IS NULL")
                .bind(sid)
                .execute(&mut *tx)
                .await
                .map_err(ApiError::internal)?;
            tx.commit().await.map_err(ApiError::internal)?;
            remember(&self.ended, sid, true);
            tracing::warn!(session = %sid, "a spent refresh token was presented again; the session is ended");
            return Err(refused("was used already, so its session has been ended"));
        }
        if ended.is_some() {
            return Err(refused("belongs to an ended session"));
        }
        if expires <= Utc::now() {
            return Err(refused("has expired"));
        }
        let (next, next_hash) = new_refresh_token();
        sqlx::query("UPDATE refresh_tokens SET spent_at = now() WHERE token_hash = $1")
            .bind(&hash)
            .execute(&mut *tx)
            .await
            .map_err(ApiError::internal)?;
        store_refresh_token(&mut tx, &next_hash, sid, expires_at).await?;
        sqlx::query("UPDATE sessions SET expires_at = greatest(expires_at, $2) WHERE id = $1")
            .bind(sid)
            .bind(expires_at)
            .execute(&mut *tx)
            .await
            .map_err(ApiError::internal)?;
        tx.commit().await.map_err(ApiError::internal)?;
        Ok((UserId(user), sid, next))
    }

    /// Ends a session: its tokens stop working on every server within [`FRESH_FOR`].
    pub async fn end(&self, pool: &PgPool, sid: Uuid) -> Result<(), ApiError> {
        sqlx::query("UPDATE sessions SET ended_at = now() WHERE id = $1 AND ended_at IS NULL")
            .bind(sid)
            .execute(pool)
            .await
            .map_err(ApiError::internal)?;
        remember(&self.ended, sid, true);
        Ok(())
    }
}

/// Stores a refresh token of session `sid` by its hash.
async fn store_refresh_token(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    hash: &[u8],
    sid: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(hash)
    .bind(sid)
    .bind(expires_at)
    .execute(&mut **tx)
    .await
    .map_err(ApiError::internal)?;
    Ok(())
}

/// A new refresh token (32 random bytes as hex) and the SHA-256 it is stored as.
fn new_refresh_token() -> (String, Vec<u8>) {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    (token, hash)
}

fn remembered<K: std::hash::Hash + Eq, V: Copy>(
    map: &Mutex<HashMap<K, (Instant, V)>>,
    key: &K,
) -> Option<V> {
    let m = map.lock().unwrap_or_else(|p| p.into_inner());
    m.get(key)
        .filter(|(at, _)| at.elapsed() < FRESH_FOR)
        .map(|(_, v)| *v)
}

fn remember<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, (Instant, V)>>, key: K, v: V) {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    if m.len() >= REMEMBERED_MAX {
        m.retain(|_, (at, _)| at.elapsed() < FRESH_FOR);
        if m.len() >= REMEMBERED_MAX {
            m.clear();
        }
    }
    m.insert(key, (Instant::now(), v));
}
