//! Read-your-writes: waiting until the read models reflect a given position.
//!
//! The worker of this process tells waiters which stream versions each batch it commits
//! has applied, so a waiter whose event was in that batch answers without a statement.
//! Only a batch's committed versions are published, so an in-memory answer is never
//! "fresh" too early; when this process's worker is not the active one (another process
//! holds the lease), waiters fall back to polling the database.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;

use crate::apply::PROJECTION;

/// Streams remembered at most; past that the memory starts over (waiters then poll).
const REMEMBERED_STREAMS_MAX: usize = 100_000;
/// First poll of the database while this process's worker is not projecting.
const POLL_FIRST: Duration = Duration::from_millis(5);
/// First poll while this process's worker is projecting (its batches wake waiters sooner).
const POLL_FIRST_LOCAL: Duration = Duration::from_millis(50);
/// Polls back off to this.
const POLL_MAX: Duration = Duration::from_millis(100);

/// What this process's worker has committed while holding the projection lease.
#[derive(Default)]
struct Local {
    active: bool,
    versions: HashMap<String, i64>,
}

static LOCAL: LazyLock<Mutex<Local>> = LazyLock::new(Mutex::default);

/// Woken after every batch this process's worker commits.
static APPLIED: Notify = Notify::const_new();

/// This process's worker took the lease: from now on its batches are the read models'.
pub(crate) fn worker_started() {
    if let Ok(mut l) = LOCAL.lock() {
        l.active = true;
        l.versions.clear();
    }
}

/// This process's worker stopped projecting (lease lost, shutdown, error): what it
/// remembered may no longer be what the read models hold (a rebuild may follow).
pub(crate) fn worker_stopped() {
    if let Ok(mut l) = LOCAL.lock() {
        l.active = false;
        l.versions.clear();
    }
}

/// Records the `(stream, version)`s a batch just committed (applied, or found already
/// applied) and wakes this process's waiters.
pub(crate) fn batch_committed<'a>(applied: impl Iterator<Item = (&'a str, i64)>) {
    if let Ok(mut l) = LOCAL.lock() {
        if l.active {
            for (stream, version) in applied {
                if l.versions.len() >= REMEMBERED_STREAMS_MAX && !l.versions.contains_key(stream) {
                    l.versions.clear();
                }
                let v = l.versions.entry(stream.to_owned()).or_insert(version);
                *v = (*v).max(version);
            }
        }
    }
    APPLIED.notify_waiters();
}

/// Whether this process's worker is projecting.
fn worker_active() -> bool {
    LOCAL.lock().is_ok_and(|l| l.active)
}

/// Whether this process's worker has committed `version` of `stream`.
fn committed_here(stream: &str, version: i64) -> bool {
    LOCAL
        .lock()
        .is_ok_and(|l| l.versions.get(stream).is_some_and(|v| *v >= version))
}

/// Waits until the event at `position` is reflected in the read models, for at most
/// `timeout`. Returns whether it was reached.
///
/// One statement first (which also names the event's stream and version); then each batch
/// this process's worker commits is checked in memory, and the database is polled (backing
/// off to 100 ms) for a worker running in another process.
pub async fn wait_for_position(
    pool: &PgPool,
    position: i64,
    timeout: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    // The polls keep their own schedule: a wake does not postpone the next one, or a
    // waiter woken more often than it polls (by a worker that forgot what it applied, say)
    // would never ask the database again.
    let mut next_poll: Option<(tokio::time::Instant, Duration)> = None;
    let mut target: Option<(String, i64)> = None;
    let mut ask_database = true;
    loop {
        // Registered before the check, so a batch committing during it is not missed.
        let applied = APPLIED.notified();
        tokio::pin!(applied);
        applied.as_mut().enable();
        if let Some((stream, version)) = &target {
            if committed_here(stream, *version) {
                return Ok(true);
            }
        }
        if ask_database || target.is_none() {
            let row: Option<(String, i64, bool)> = sqlx::query_as(
                "SELECT e.stream_id, e.version, \
                        COALESCE((SELECT p.version >= e.version FROM projection_streams p \
                                  WHERE p.projection = $2 AND p.stream_id = e.stream_id), false) \
                 FROM events e WHERE e.position = $1",
            )
            .bind(position)
            .bind(PROJECTION)
            .fetch_optional(pool)
            .await?;
            if let Some((stream, version, reached)) = row {
                if reached {
                    return Ok(true);
                }
                target = Some((stream, version));
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let (at, step) = *next_poll.get_or_insert_with(|| {
            let first = if worker_active() {
                POLL_FIRST_LOCAL
            } else {
                POLL_FIRST
            };
            (now + first, first)
        });
        tokio::select! {
            _ = applied => ask_database = false,
            _ = tokio::time::sleep_until(at.min(deadline)) => {
                // The backoff matters when the projection is far behind: many readers
                // polling at a fixed 10 ms slowed it further (76,000 polls in 10 s during
                // an escrow benchmark).
                let step = (step * 3 / 2).min(POLL_MAX);
                next_poll = Some((tokio::time::Instant::now() + step, step));
                ask_database = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_batches_of_an_active_worker_answer_and_stopping_forgets_them() {
        worker_stopped();
        batch_committed([("wallet-a", 3)].into_iter());
        assert!(!worker_active());
        assert!(!committed_here("wallet-a", 3), "no worker: nothing known");

        worker_started();
        batch_committed([("wallet-a", 3), ("wallet-b", 1), ("wallet-a", 2)].into_iter());
        assert!(worker_active());
        assert!(committed_here("wallet-a", 3));
        assert!(
            committed_here("wallet-a", 2),
            "an older version is reached too"
        );
        assert!(!committed_here("wallet-a", 4), "a newer one is not");
        assert!(!committed_here("wallet-c", 1));

        worker_stopped();
        assert!(!worker_active());
        assert!(
            !committed_here("wallet-a", 3),
            "a stopped worker's memory is gone"
        );
    }
}
