//! Read-your-writes: waiting until the read models reflect a given position.
//!
//! A [`Freshness`] belongs to one running instance (its worker, its committer and its API
//! share it; two instances in one process — the tests — must not: positions are per
//! database). It knows two things, both only ever from committed transactions:
//! - which `(stream, version)` the event at a recent position is, told by the committer,
//!   so a waiter does not have to ask the database (most `minPosition`s are ones this
//!   instance just answered);
//! - which stream versions each batch of this instance's worker has applied, so a waiter
//!   whose event was in that batch answers without a statement. When this instance's worker
//!   is not the active one (another process holds the lease), waiters poll the database.
//!
//! While this instance's worker projects and cannot have applied a waiter's event yet (its
//! position is past every position the worker has applied), the worker's batches are the
//! only news worth waiting for: the waiter asks the database only as a rare safety net.
//! Polling there made a projection that fell a few seconds behind stay behind: every
//! waiting reader polled ten times a second, the polls took the CPU the projection needed
//! to catch up, and its lag stayed at seconds for the rest of the load.
//! All waiters' statements together hold at most [`ASKING_MAX`] connections.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};

/// Streams remembered at most; past that the memory starts over (waiters then poll).
const REMEMBERED_STREAMS_MAX: usize = 100_000;
/// Positions remembered at most, the oldest forgotten first (~5 s of peak load).
const REMEMBERED_POSITIONS_MAX: usize = 32_768;
/// First poll of the database while this process's worker is not projecting.
const POLL_FIRST: Duration = Duration::from_millis(5);
/// First poll while this process's worker is projecting but memory cannot answer for the
/// event (it may have been applied and forgotten). Its batches wake the waiters, so the
/// poll is only a fallback (a position this instance did not commit, a memory that started
/// over): well above the projection's lag under load (docs/performance.md), or most waits
/// of a loaded server poll once for nothing, each a statement and a pool round trip.
const POLL_FIRST_LOCAL: Duration = Duration::from_millis(250);
/// Polls back off to this (after a local first poll, they come at this pace).
const POLL_MAX: Duration = Duration::from_millis(100);
/// While memory answers (see the module documentation), the database is asked after this
/// long, then after twice as long each time: only for a worker that lost its lease without
/// noticing yet, whose successor's batches this instance does not see.
const POLL_SAFETY: Duration = Duration::from_secs(1);
/// Connections that waiters' statements hold at most, all waiters together.
const ASKING_MAX: usize = 4;

/// What one instance knows of its read models' progress; see the module documentation.
pub struct Freshness {
    local: Mutex<Local>,
    positions: Mutex<Positions>,
    /// Woken after every batch this instance's worker commits, and when it starts or stops.
    applied: Notify,
    /// Permits for waiters' statements.
    asking: Semaphore,
    /// Statements waiters have run.
    statements: AtomicU64,
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            local: Mutex::default(),
            positions: Mutex::default(),
            applied: Notify::new(),
            asking: Semaphore::new(ASKING_MAX),
            statements: AtomicU64::new(0),
        }
    }
}

/// What this instance's worker has committed while holding the projection lease.
#[derive(Default)]
struct Local {
    active: bool,
    /// Changes whenever `versions` starts over (the worker starts or stops, the memory is
    /// full).
    generation: u64,
    /// The highest position this instance's worker has applied, in any generation.
    newest: i64,
    versions: HashMap<String, i64>,
}

/// One look at [`Local`] for a waiter.
struct View {
    /// The waiter's event is applied, as far as this instance's worker knows.
    applied: bool,
    active: bool,
    generation: u64,
    newest: i64,
}

impl View {
    /// Whether this instance's projecting worker surely has not applied the event at
    /// `position`, whose stream and version are `known`: it is past everything the worker
    /// applied, and only the worker's batches can tell when it is.
    fn surely_pending(&self, position: i64, known: bool) -> bool {
        self.active && known && position > self.newest
    }
}

/// Recent positions committed by this instance: a window of consecutive positions, each
/// with the `(stream, version)` of its event if this instance committed it. One instance's
/// positions nearly always come in order and without holes (the committer reserves them
/// per batch), so a slot per position costs less than a hash map with an order queue
/// beside it, which every committed position would pay for.
#[derive(Default)]
struct Positions {
    /// The position of `events[0]`.
    first: i64,
    events: VecDeque<Option<(Box<str>, i64)>>,
}

impl Positions {
    fn insert(&mut self, position: i64, stream: &str, version: i64) {
        let end = self.first + self.events.len() as i64;
        if self.events.is_empty() {
            self.first = position;
        } else if position >= end {
            if position - end >= REMEMBERED_POSITIONS_MAX as i64 {
                // Everything remembered would fall out of the window anyway.
                self.events.clear();
                self.first = position;
            } else {
                // Positions in between (another instance's, a rolled-back batch's) stay
                // unknown.
                self.events.resize((position - self.first) as usize, None);
            }
        } else if position < self.first {
            // Older than the window: only worth keeping if it still fits.
            let room = REMEMBERED_POSITIONS_MAX.saturating_sub(self.events.len()) as i64;
            if self.first - position > room {
                return;
            }
            for _ in position..self.first {
                self.events.push_front(None);
            }
            self.first = position;
        }
        let slot = (position - self.first) as usize;
        if slot == self.events.len() {
            self.events.push_back(Some((stream.into(), version)));
        } else if let Some(e) = self.events.get_mut(slot) {
            *e = Some((stream.into(), version));
        }
        while self.events.len() > REMEMBERED_POSITIONS_MAX {
            self.events.pop_front();
            self.first += 1;
        }
    }

    fn get(&self, position: i64) -> Option<&(Box<str>, i64)> {
        let slot = usize::try_from(position.checked_sub(self.first)?).ok()?;
        self.events.get(slot)?.as_ref()
    }
}

impl Freshness {
    /// This instance's worker took the lease: from now on its batches are the read models'.
    pub(crate) fn worker_started(&self) {
        if let Ok(mut l) = self.local.lock() {
            l.active = true;
            l.generation += 1;
            l.versions.clear();
        }
        self.applied.notify_waiters();
    }

    /// This instance's worker stopped projecting (lease lost, shutdown, error): what it
    /// remembered may no longer be what the read models hold (a rebuild may follow).
    pub(crate) fn worker_stopped(&self) {
        if let Ok(mut l) = self.local.lock() {
            l.active = false;
            l.generation += 1;
            l.versions.clear();
        }
        self.applied.notify_waiters();
    }

    /// Records the `(stream, version, position)`s a batch just committed (applied, or found
    /// already applied) and wakes this instance's waiters.
    pub(crate) fn batch_committed<'a>(&self, applied: impl Iterator<Item = (&'a str, i64, i64)>) {
        if let Ok(mut l) = self.local.lock() {
            if l.active {
                for (stream, version, position) in applied {
                    if l.versions.len() >= REMEMBERED_STREAMS_MAX
                        && !l.versions.contains_key(stream)
                    {
                        l.versions.clear();
                        l.generation += 1;
                    }
                    let v = l.versions.entry(stream.to_owned()).or_insert(version);
                    *v = (*v).max(version);
                    l.newest = l.newest.max(position);
                }
            }
        }
        self.applied.notify_waiters();
    }

    /// Records events this instance has just committed to the event store, as
    /// `(position, stream, version)`.
    pub fn events_committed<'a>(&self, events: impl Iterator<Item = (i64, &'a str, i64)>) {
        if let Ok(mut p) = self.positions.lock() {
            for (position, stream, version) in events {
                p.insert(position, stream, version);
            }
        }
    }

    /// Statements that waiters have run against the database since this instance started.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// One look at what this instance's worker has applied, for `target`.
    fn view(&self, target: Option<&(String, i64)>) -> View {
        match self.local.lock() {
            Ok(l) => View {
                applied: target.is_some_and(|(stream, version)| {
                    l.versions
                        .get(stream.as_str())
                        .is_some_and(|v| v >= version)
                }),
                active: l.active,
                generation: l.generation,
                newest: l.newest,
            },
            Err(_) => View {
                applied: false,
                active: false,
                generation: u64::MAX,
                newest: i64::MAX,
            },
        }
    }

    /// Whether this instance's worker is projecting.
    #[cfg(test)]
    fn worker_active(&self) -> bool {
        self.view(None).active
    }

    /// Whether this instance's worker has committed `version` of `stream`.
    #[cfg(test)]
    fn committed_here(&self, stream: &str, version: i64) -> bool {
        self.view(Some(&(stream.to_owned(), version))).applied
    }

    /// The `(stream, version)` of the event at `position`, if this instance committed it
    /// recently.
    fn event_at(&self, position: i64) -> Option<(String, i64)> {
        let p = self.positions.lock().ok()?;
        p.get(position).map(|(s, v)| (s.to_string(), *v))
    }

    /// Asks the database for the event at `position` and whether the read models have
    /// reached it, waiting for a permit until `deadline` at most (`None`: none came).
    async fn ask(
        &self,
        pool: &PgPool,
        position: i64,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Option<(String, i64, bool)>>, sqlx::Error> {
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, self.asking.acquire()).await else {
            return Ok(None);
        };
        self.statements.fetch_add(1, Ordering::Relaxed);
        let located = event_store::EventStore::new(pool.clone())
            .locate(position)
            .await
            .map_err(|e| match e {
                event_store::StoreError::Database(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            })?;
        let Some((stream, version)) = located else {
            return Ok(Some(None));
        };
        let applied = crate::apply::stream_version(pool, &stream).await? >= version;
        Ok(Some(Some((stream, version, applied))))
    }

    /// Waits until every one of `events`, as `(position, stream, version)`, is reflected in
    /// the read models, for at most `timeout` in all; returns whether they were. Events
    /// known by their streams already (a caller's own last one, the newest of what it
    /// reads) are mostly applied long since: memory, or one statement for all of them,
    /// says so; the others are waited for as [`Freshness::wait_for_position`] does.
    pub async fn wait_for_events(
        &self,
        pool: &PgPool,
        events: &[(i64, String, i64)],
        timeout: Duration,
    ) -> Result<bool, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pending: Vec<&(i64, String, i64)> = events
            .iter()
            .filter(|(_, stream, version)| !self.view(Some(&(stream.clone(), *version))).applied)
            .collect();
        if pending.is_empty() {
            return Ok(true);
        }
        // Events this instance committed past everything its projecting worker has applied
        // are surely pending: asking the database about them would be a statement per
        // waiting read (on a loaded server nearly every one) to learn nothing.
        let now = self.view(None);
        let unsure: Vec<&str> = pending
            .iter()
            .filter(|(position, _, _)| {
                !now.surely_pending(*position, self.event_at(*position).is_some())
            })
            .map(|(_, s, _)| s.as_str())
            .collect();
        if !unsure.is_empty() {
            self.statements.fetch_add(1, Ordering::Relaxed);
            let applied = crate::apply::stream_versions(pool, &unsure).await?;
            pending.retain(|(_, stream, version)| {
                !unsure.contains(&stream.as_str())
                    || applied.get(stream).copied().unwrap_or(0) < *version
            });
        }
        for (position, _, _) in pending {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !self.wait_for_position(pool, *position, left).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Waits until the event at `position` is reflected in the read models, for at most
    /// `timeout`. Returns whether it was reached.
    ///
    /// The event's stream and version come from memory when this instance committed it,
    /// otherwise from one statement (which also says whether it is reached); then each
    /// batch this instance's worker commits is checked in memory. The database is asked
    /// again only on a schedule: rarely while memory answers (see the module
    /// documentation), otherwise backing off to every 100 ms (a worker running in another
    /// process, a memory that started over).
    pub async fn wait_for_position(
        &self,
        pool: &PgPool,
        position: i64,
        timeout: Duration,
    ) -> Result<bool, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        // The polls keep their own schedules: a wake does not postpone the next one, or a
        // waiter woken more often than it polls (by a worker that forgot what it applied,
        // say) would never ask the database again.
        let mut polls: Option<(tokio::time::Instant, Duration)> = None;
        let mut safety: Option<(tokio::time::Instant, Duration)> = None;
        let mut target = self.event_at(position);
        let mut ask_database = target.is_none();
        let mut started: Option<u64> = None;
        loop {
            // Registered before the look, so a batch committing during it is not missed.
            let applied = self.applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            let view = self.view(target.as_ref());
            if view.applied {
                return Ok(true);
            }
            let started = *started.get_or_insert(view.generation);
            if ask_database {
                match self.ask(pool, position, deadline).await? {
                    None => return Ok(false),
                    Some(Some((_, _, true))) => return Ok(true),
                    Some(Some((stream, version, false))) => target = Some((stream, version)),
                    Some(None) => {}
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            // This instance's worker, projecting since the wait began, cannot have applied
            // the event yet: its batch will say when it does.
            let memory_answers =
                view.generation == started && view.surely_pending(position, target.is_some());
            let schedule = if memory_answers {
                &mut safety
            } else {
                &mut polls
            };
            let (at, step) = *schedule.get_or_insert_with(|| {
                let first = if memory_answers {
                    POLL_SAFETY
                } else if view.active {
                    POLL_FIRST_LOCAL
                } else {
                    POLL_FIRST
                };
                (now + first, first)
            });
            ask_database = false;
            tokio::select! {
                _ = applied => {}
                _ = tokio::time::sleep_until(at.min(deadline)) => {
                    // The backoff matters when the projection is far behind: many readers
                    // polling at a fixed short interval slow it further.
                    let step = if memory_answers { step * 2 } else { (step * 3 / 2).min(POLL_MAX) };
                    *schedule = Some((tokio::time::Instant::now() + step, step));
                    ask_database = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_batches_of_an_active_worker_answer_and_stopping_forgets_them() {
        let f = Freshness::default();
        f.batch_committed([("wallet-a", 3, 1)].into_iter());
        assert!(!f.worker_active());
        assert!(!f.committed_here("wallet-a", 3), "no worker: nothing known");

        f.worker_started();
        f.batch_committed([("wallet-a", 3, 5), ("wallet-b", 1, 6), ("wallet-a", 2, 4)].into_iter());
        assert!(f.worker_active());
        assert!(f.committed_here("wallet-a", 3));
        assert!(
            f.committed_here("wallet-a", 2),
            "an older version is reached too"
        );
        assert!(!f.committed_here("wallet-a", 4), "a newer one is not");
        assert!(!f.committed_here("wallet-c", 1));

        f.worker_stopped();
        assert!(!f.worker_active());
        assert!(
            !f.committed_here("wallet-a", 3),
            "a stopped worker's memory is gone"
        );
    }

    #[test]
    fn two_instances_know_nothing_of_each_other() {
        let (a, b) = (Freshness::default(), Freshness::default());
        a.worker_started();
        b.worker_started();
        a.events_committed([(7, "wallet-a", 1)].into_iter());
        a.batch_committed([("wallet-a", 1, 7)].into_iter());
        assert_eq!(a.event_at(7), Some(("wallet-a".into(), 1)));
        assert_eq!(b.event_at(7), None, "position 7 of another database");
        assert!(!b.committed_here("wallet-a", 1));
    }

    /// A pool whose every statement fails: the waits below must not run any.
    fn no_database() -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(50))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("a lazy pool")
    }

    #[tokio::test]
    async fn an_event_committed_here_past_what_the_worker_applied_is_waited_for_without_a_statement(
    ) {
        // Given a projecting worker that applied up to position 7, and this instance's
        // committer having committed position 8 since
        let f = std::sync::Arc::new(Freshness::default());
        f.worker_started();
        f.events_committed([(7, "wallet-a", 1), (8, "wallet-a", 2)].into_iter());
        f.batch_committed([("wallet-a", 1, 7)].into_iter());
        let pool = no_database();
        let wanted = vec![(8, "wallet-a".to_string(), 2)];
        // When a read waits for position 8 and the worker's next batch applies it
        let waiter = {
            let (f, pool, wanted) = (f.clone(), pool.clone(), wanted.clone());
            tokio::spawn(async move {
                f.wait_for_events(&pool, &wanted, Duration::from_millis(500))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        f.batch_committed([("wallet-a", 2, 8)].into_iter());
        // Then the wait ends reached, having asked the database nothing
        let reached = waiter.await.expect("the waiter ran");
        assert!(matches!(reached, Ok(true)), "{reached:?}");
        assert_eq!(f.statements(), 0);
        // And an event at or before what the worker applied, which memory does not know
        // (it may be applied), is asked about: here the unreachable database answers.
        let unsure = vec![(5, "wallet-b".to_string(), 1)];
        let asked = f
            .wait_for_events(&pool, &unsure, Duration::from_millis(100))
            .await;
        assert!(asked.is_err(), "{asked:?}");
        assert_eq!(f.statements(), 1);
    }

    #[test]
    fn positions_are_forgotten_oldest_first() {
        let f = Freshness::default();
        let n = REMEMBERED_POSITIONS_MAX as i64;
        f.events_committed((1..=n + 10).map(|p| (p, "wallet-a", p)));
        assert_eq!(f.event_at(10), None);
        assert_eq!(f.event_at(11), Some(("wallet-a".into(), 11)));
        assert_eq!(f.event_at(n + 10), Some(("wallet-a".into(), n + 10)));
        let held = f.positions.lock().map(|p| p.events.len());
        assert_eq!(held.ok(), Some(REMEMBERED_POSITIONS_MAX));
    }

    #[test]
    fn positions_with_holes_or_out_of_order_are_remembered() {
        let f = Freshness::default();
        f.events_committed([(100, "wallet-a", 1), (101, "wallet-b", 1)].into_iter());
        // Another instance took 102..=109; this one's next batch starts at 110.
        f.events_committed([(110, "wallet-a", 2)].into_iter());
        // A batch that reserved lower positions committed after a later one.
        f.events_committed([(98, "wallet-c", 4)].into_iter());
        assert_eq!(f.event_at(98), Some(("wallet-c".into(), 4)));
        assert_eq!(f.event_at(99), None);
        assert_eq!(f.event_at(101), Some(("wallet-b".into(), 1)));
        assert_eq!(f.event_at(105), None);
        assert_eq!(f.event_at(110), Some(("wallet-a".into(), 2)));
        assert_eq!(f.event_at(111), None);
        assert_eq!(f.event_at(-5), None);
        assert_eq!(f.event_at(i64::MIN), None);
        // A jump past the whole window starts it over.
        let far = 110 + 2 * REMEMBERED_POSITIONS_MAX as i64;
        f.events_committed([(far, "wallet-d", 9)].into_iter());
        assert_eq!(f.event_at(110), None);
        assert_eq!(f.event_at(far), Some(("wallet-d".into(), 9)));
        let held = f.positions.lock().map(|p| p.events.len());
        assert_eq!(held.ok(), Some(1));
    }
}
