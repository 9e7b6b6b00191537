//! Leases for order-sensitive workers: one active instance at a time across processes.

use sqlx::{PgConnection, PgPool};

use crate::StoreError;

/// A held Postgres session-level advisory lock. The lock lives as long as the dedicated
/// connection: if the holder's process dies, Postgres drops the session and the lock with
/// it, and a standby's next [`Lease::try_acquire`] succeeds.
#[derive(Debug)]
pub struct Lease {
    conn: PgConnection,
    key: i64,
}

impl Lease {
    /// Tries once to take the lease named `name`. `Ok(None)` means another session holds it.
    pub async fn try_acquire(pool: &PgPool, name: &str) -> Result<Option<Lease>, StoreError> {
        // Detached from the pool: if this lease is dropped, the connection closes and the
        // lock goes with it, instead of returning to the pool still locked.
        let mut conn = pool.acquire().await?.detach();
        let key = lease_key(name);
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then_some(Lease { conn, key }))
    }

    /// The PostgreSQL backend (`pid` in `pg_stat_activity`) of the session that holds the
    /// lease `name` in this database, if any: which process relays or projects right now.
    pub async fn holder(pool: &PgPool, name: &str) -> Result<Option<i32>, StoreError> {
        // A bigint advisory key shows in `pg_locks` as its high half in `classid`, its low
        // half in `objid`, with `objsubid` 1.
        let key = lease_key(name) as u64;
        let row: Option<(i32,)> = sqlx::query_as(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND classid::bigint = $1 AND objid::bigint = $2",
        )
        .bind((key >> 32) as i64)
        .bind((key & 0xffff_ffff) as i64)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|(pid,)| pid))
    }

    /// Checks that the session holding the lock is still alive.
    pub async fn still_held(&mut self) -> bool {
        // Nobody can take a session lock from a live session, so a live session means the
        // lease is still ours.
        sqlx::query("SELECT 1")
            .execute(&mut self.conn)
            .await
            .is_ok()
    }

    /// The lease's own connection. Work done on it needs no pool round trip (sqlx pings
    /// every connection returned to a pool), and if the session dies the lease goes with it.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Releases the lease explicitly (dropping it also releases it when the connection closes).
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut self.conn)
            .await;
    }
}

/// A stable 64-bit key for a lease name (FNV-1a: deterministic across processes and
/// builds, unlike the standard library's hasher).
fn lease_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}
