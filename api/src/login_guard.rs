//! Password guessing slows down per account: after [`FREE_FAILURES`] failed logins for an
//! e-mail address, every further attempt for it is refused (429 + `Retry-After`) until a
//! wait that doubles with each failure, capped at [`BLOCK_MAX`] so that an attacker cannot
//! lock the owner out for long. The count is kept in PostgreSQL, so it holds across
//! addresses, servers and restarts; a successful login clears it. Unknown addresses are
//! counted the same way, so the answers say nothing about which accounts exist.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::ApiError;

/// Failed logins allowed before attempts wait.
pub const FREE_FAILURES: i32 = 5;
/// The wait after the first failure beyond the free ones; it doubles with each next one.
pub const BLOCK_FIRST: Duration = Duration::from_secs(1);
/// The longest wait.
pub const BLOCK_MAX: Duration = Duration::from_secs(15 * 60);

/// How long attempts wait after `failures` failed logins in a row.
pub fn block_after(failures: i32) -> Duration {
    let beyond = failures.saturating_sub(FREE_FAILURES - 1);
    if beyond <= 0 {
        return Duration::ZERO;
    }
    // 1 s, 2 s, 4 s, … ; 2^10 s is already past the cap.
    let doublings = u32::try_from(beyond - 1).unwrap_or(u32::MAX).min(10);
    BLOCK_FIRST.saturating_mul(1 << doublings).min(BLOCK_MAX)
}

/// The key an attempt is counted under: the address as typed, trimmed and lower-cased
/// (unknown and malformed addresses are counted too, so that none answers differently),
/// bounded in length.
/// Attempts are counted before the address is checked, so the key is whatever was sent,
/// minus NUL characters: PostgreSQL text cannot hold them (a login with one was a 500),
/// and no account's address has one.
fn key(email: &str) -> String {
    email
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| *c != '\0')
        .take(320)
        .collect()
}

/// Counts a login attempt for `email` before its password is checked, or refuses it (429
/// `LOGIN_THROTTLED` with `Retry-After`) while the address waits out earlier failures.
/// Counted first, so that guesses sent at once cannot all pass before the first failure is
/// recorded: the row lock orders them, and the sixth finds the wait the fifth set. A
/// successful login then clears the count ([`succeeded`]).
pub async fn attempt(pool: &PgPool, email: &str) -> Result<(), ApiError> {
    let key = key(email);
    let mut tx = pool.begin().await.map_err(ApiError::internal)?;
    // The row first, so that there is one to lock: attempts for an address nobody tried
    // yet queue on it like the others instead of all finding no row.
    let created = sqlx::query(
        "INSERT INTO login_failures (email, failures, blocked_until) VALUES ($1, 0, now()) \
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(&key)
    .execute(&mut *tx)
    .await
    .map_err(ApiError::internal)?
    .rows_affected();
    let (failures, until): (i32, DateTime<Utc>) = sqlx::query_as(
        "SELECT failures, blocked_until FROM login_failures WHERE email = $1 FOR UPDATE",
    )
    .bind(&key)
    .fetch_one(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    let now = Utc::now();
    if until > now {
        tx.commit().await.map_err(ApiError::internal)?;
        let ms = (until - now).num_milliseconds().max(0) as u64;
        let mut e = ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "LOGIN_THROTTLED",
            "too many failed logins for this account; retry later",
        );
        e.retry_after = Some(ms.div_ceil(1000).max(1));
        return Err(e);
    }
    let failures = failures.saturating_add(1);
    sqlx::query(
        "UPDATE login_failures SET failures = $2, \
             blocked_until = now() + make_interval(secs => $3), updated_at = now() \
         WHERE email = $1",
    )
    .bind(&key)
    .bind(failures)
    .bind(block_after(failures).as_secs_f64())
    .execute(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    if created == 1 {
        // New rows are where the table grows: prune idle ones now and then.
        sqlx::query(
            "DELETE FROM login_failures WHERE ctid IN (SELECT ctid FROM login_failures \
             WHERE updated_at < now() - interval '1 day' LIMIT 100)",
        )
        .execute(&mut *tx)
        .await
        .map_err(ApiError::internal)?;
    }
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(())
}

/// Clears `email`'s failures after a successful login.
pub async fn succeeded(pool: &PgPool, email: &str) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM login_failures WHERE email = $1")
        .bind(key(email))
        .execute(pool)
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_after_five_failures_up_to_fifteen_minutes() {
        let waits: Vec<u64> = (1..=16).map(|f| block_after(f).as_secs()).collect();
        assert_eq!(
            waits,
            [0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]
        );
        assert_eq!(block_after(i32::MAX), BLOCK_MAX);
    }
}
