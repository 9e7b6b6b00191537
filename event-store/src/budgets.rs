//! Request budgets shared by every process that uses this database: the generic cell rate
//! algorithm (GCRA), one row per budget and key, decided by one statement so that two
//! processes taking from one budget at once are serialised by the row's lock.

use crate::{EventStore, StoreError};

impl EventStore {
    /// Takes one request from the budget `key` of `per_minute` requests a minute, in bursts
    /// of as many: `Ok(())`, or `Err(seconds)` until the next one is allowed.
    pub async fn take_from_budget(
        &self,
        key: &str,
        per_minute: u32,
    ) -> Result<Result<(), u64>, StoreError> {
        // Each request moves the key's theoretical arrival time on by one emission
        // interval; a request that would move it more than a minute ahead is refused.
        let interval = 60.0 / f64::from(per_minute.max(1));
        let taken: Option<(i32,)> = sqlx::query_as(
            "INSERT INTO rate_budgets AS b (key, tat) \
             VALUES ($1, clock_timestamp() + make_interval(secs => $2)) \
             ON CONFLICT (key) DO UPDATE \
               SET tat = greatest(b.tat, clock_timestamp()) + make_interval(secs => $2) \
               WHERE greatest(b.tat, clock_timestamp()) + make_interval(secs => $2) \
                     <= clock_timestamp() + interval '60 seconds' \
             RETURNING 1",
        )
        .bind(key)
        .bind(interval)
        .fetch_optional(&self.pool)
        .await?;
        if taken.is_some() {
            return Ok(Ok(()));
        }
        let wait: Option<(f64,)> = sqlx::query_as(
            "SELECT extract(epoch FROM tat + make_interval(secs => $2) \
                    - interval '60 seconds' - clock_timestamp())::float8 \
             FROM rate_budgets WHERE key = $1",
        )
        .bind(key)
        .bind(interval)
        .fetch_optional(&self.pool)
        .await?;
        let seconds = wait.map_or(1.0, |(w,)| w).ceil().max(1.0);
        Ok(Err(seconds as u64))
    }

    /// Forgets budgets that are full again (nothing taken for a minute or more).
    pub async fn prune_budgets(&self) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM rate_budgets WHERE tat < clock_timestamp()")
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
