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

    /// Records a new session for `user`, whose tokens live until `expires_at`.
    pub async fn start(
        pool: &PgPool,
        user: UserId,
        expires_at: DateTime<Utc>,
    ) -> Result<Uuid, ApiError> {
        let sid = Uuid::now_v7();
        sqlx::query("INSERT INTO sessions (id, user_id, expires_at) VALUES ($1, $2, $3)")
            .bind(sid)
            .bind(user.0)
            .bind(expires_at)
            .execute(pool)
            .await
            .map_err(ApiError::internal)?;
        // Sessions whose tokens have all expired can go.
        sqlx::query(
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
             WHERE expires_at < now() - interval '1 hour' LIMIT 100)",
        )
        .execute(pool)
        .await
        .map_err(ApiError::internal)?;
        Ok(sid)
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
