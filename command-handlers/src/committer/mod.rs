//! The committer: the ledger's only write path. Commands decided by their callers arrive
//! here with the versions they decided from; the committer writes them in batches (see
//! `batch.rs`) and answers each. A registration is a batch of one, written with its
//! credentials row in one transaction, so that a taken e-mail fails only itself.
//!
//! It runs on a thread of its own, in a runtime of its own, on a connection of its own: the
//! answer to its statement then wakes it at once, where on the shared runtime it waited
//! behind the HTTP tasks queued on both workers (docs/performance.md, "What the write path does").
//! [`Committer::start`] starts it and returns its handle; [`Committer::stop`] lets it
//! commit what is queued, refuses what comes after, and joins the thread.

mod batch;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::StreamWrite;
use event_store::{append, IdempotencyRecord, NewEvent, StoreError, StoredAnswer, StreamAppend};
use serde_json::Value;
use sqlx::{Connection as _, PgConnection};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::command::{stored_answer, Command, Outcome};
use crate::decide::{Plan, Reads};
use crate::load::States;
use crate::observer::Observer;

use batch::BATCH_COMMANDS_MAX;

/// Commands waiting for the committer before senders wait too.
const QUEUED_COMMANDS_MAX: usize = 4096;

/// When no command comes for this long, the committer closes its connection, so that an
/// idle ledger holds no session of its own open (a database being dropped, a Postgres
/// restart that cut it), and the next batch opens one again.
const HELD_IDLE_MAX: Duration = Duration::from_secs(1);

/// A decided command on its way to the committer.
pub(crate) struct Submission {
    pub(crate) metadata: Value,
    pub(crate) idempotency: Option<IdempotencyRecord>,
    pub(crate) cmd: Command,
    /// `(stream, version)` of every stream the decision read.
    pub(crate) reads: Reads,
    pub(crate) plan: Plan,
    pub(crate) reply: oneshot::Sender<Batched>,
}

/// The committer's answer to one command.
pub(crate) enum Batched {
    /// Committed; its events end at `position`.
    Committed {
        position: i64,
        outcome: Box<Outcome>,
    },
    /// Its idempotency key already holds what this request produced.
    Replayed(StoredAnswer),
    /// Its idempotency key was used with another request.
    IdempotencyMismatch,
    /// A registration's idempotency key was stored by another commit meanwhile: nothing
    /// was written; the caller replays the stored answer.
    KeyTaken,
    /// A registration's e-mail address is taken: nothing was written.
    EmailTaken,
    /// Nothing was written: decide again from fresh state.
    Conflict,
    /// The batch's transaction failed.
    Failed { transient: bool, message: String },
}

/// What the committer shares with its callers.
struct Shared {
    states: Arc<States>,
    observer: Option<Arc<dyn Observer>>,
}

/// The running committer: where to send decided commands, and how to stop it.
pub(crate) struct Committer {
    queue: mpsc::Sender<Submission>,
    stopping: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Committer {
    /// Starts the committer's thread. If it cannot start, commands fail as "unavailable".
    pub(crate) fn start(states: Arc<States>, observer: Option<Arc<dyn Observer>>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUED_COMMANDS_MAX);
        let (stopping, stop) = watch::channel(false);
        let shared = Shared { states, observer };
        let spawned = std::thread::Builder::new()
            .name("escrow-committer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(run(shared, rx, stop)),
                    Err(e) => tracing::error!(error = %e, "cannot start the committer's runtime"),
                }
            });
        let thread = match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the committer's thread");
                None
            }
        };
        Committer {
            queue,
            stopping,
            thread: Mutex::new(thread),
        }
    }

    /// Hands a decided command to the committer; gives it back if the committer stopped.
    pub(crate) async fn submit(&self, s: Submission) -> Result<(), Submission> {
        self.queue.send(s).await.map_err(|e| e.0)
    }

    /// Commits what is queued, refuses what is submitted from now on, and waits for the
    /// thread to end. Idempotent.
    pub(crate) async fn stop(&self) {
        let _ = self.stopping.send(true);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// What the committer's loop waits for next.
// Moved out at once, never stored: boxing would cost an allocation per command.
#[allow(clippy::large_enum_variant)]
enum Next {
    Command(Submission),
    /// Nothing came for [`HELD_IDLE_MAX`].
    Idle,
    /// The queue is closed and empty.
    Closed,
}

async fn next(rx: &mut mpsc::Receiver<Submission>, idle_after: Option<Duration>) -> Next {
    let received = match idle_after {
        Some(d) => match tokio::time::timeout(d, rx.recv()).await {
            Ok(r) => r,
            Err(_) => return Next::Idle,
        },
        None => rx.recv().await,
    };
    received.map_or(Next::Closed, Next::Command)
}

/// The committer's loop: takes whatever is queued (up to a batch) and commits it; what
/// arrives meanwhile is the next batch. On stop the queue closes: what is in it is still
/// committed, then the loop ends.
async fn run(shared: Shared, mut rx: mpsc::Receiver<Submission>, mut stop: watch::Receiver<bool>) {
    let pool = shared.states.store().pool().clone();
    // A connection of the committer's own, opened with the pool's options (its session
    // settings included) but outside it: a socket belongs to the runtime that opened it,
    // and this loop runs in a runtime of its own, so a pooled connection's answers would
    // still be noticed by the shared runtime's busy workers. It is kept from one batch to
    // the next (a pool pings every connection returned to it, a round trip per statement)
    // and counts beside the pool's connections, like a lease's.
    let mut held: Option<PgConnection> = None;
    let mut heads = batch::Heads::default();
    let mut closing = false;
    loop {
        let idle_after = held.is_some().then_some(HELD_IDLE_MAX);
        let next = tokio::select! {
            n = next(&mut rx, idle_after) => n,
            _ = stop.wait_for(|s| *s), if !closing => {
                rx.close();
                closing = true;
                continue;
            }
        };
        let first = match next {
            Next::Command(s) => s,
            Next::Idle => {
                // Said goodbye to, so the server does not log a vanished client.
                if let Some(c) = held.take() {
                    let _ = c.close().await;
                }
                continue;
            }
            Next::Closed => break,
        };
        let mut subs = vec![first];
        while subs.len() < BATCH_COMMANDS_MAX {
            match rx.try_recv() {
                Ok(s) => subs.push(s),
                Err(_) => break,
            }
        }
        let conn = match held.take() {
            Some(c) => c,
            // No longer than the pool would wait for one of its own (a database that does
            // not answer fails the batch's commands as transient, as a pool would).
            None => match tokio::time::timeout(
                pool.options().get_acquire_timeout(),
                PgConnection::connect_with(&pool.connect_options()),
            )
            .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    fail_all(subs, &e.into());
                    continue;
                }
                Err(_) => {
                    fail_all(subs, &sqlx::Error::PoolTimedOut.into());
                    continue;
                }
            },
        };
        let (registrations, rest): (Vec<_>, Vec<_>) =
            subs.into_iter().partition(|s| s.plan.credentials.is_some());
        let mut conn = Some(conn);
        for r in registrations {
            if let Some(c) = conn.take() {
                heads.forget(r.plan.writes.iter().map(|w| w.stream.as_str()));
                conn = shared.register(c, r).await;
            } else {
                let _ = r.reply.send(Batched::Conflict);
            }
        }
        held = match conn {
            Some(c) if !rest.is_empty() => shared.commit_batch(c, rest, &mut heads).await,
            Some(c) => Some(c),
            None => {
                for s in rest {
                    let _ = s.reply.send(Batched::Conflict);
                }
                None
            }
        };
    }
    if let Some(c) = held.take() {
        let _ = c.close().await;
    }
}

impl Shared {
    /// Writes a registration alone: its credentials row, its events and its idempotency
    /// key in one transaction. Gives back the connection unless the database failed.
    async fn register(&self, mut conn: PgConnection, mut sub: Submission) -> Option<PgConnection> {
        let appends = stream_appends(&sub.plan.writes, &sub.metadata, Uuid::now_v7);
        let written = async {
            let mut tx = conn.begin().await?;
            if let Some((user_id, email, hash)) = &sub.plan.credentials {
                sqlx::query(
                    "INSERT INTO credentials (user_id, email, password_hash) VALUES ($1, $2, $3)",
                )
                .bind(user_id.0)
                .bind(email.as_str())
                .bind(hash)
                .execute(&mut *tx)
                .await?;
            }
            let recorded = append(&mut tx, &appends).await?;
            let position = recorded.iter().map(|e| e.position).max().unwrap_or(0);
            if let Some(first) = recorded.first() {
                // The response shows the stored time, so a replay answers identically.
                sub.plan.outcome.set_recorded_at(first.recorded_at);
            }
            if let Some(rec) = &sub.idempotency {
                rec.save(&mut tx, &stored_answer(&sub.plan.outcome), position)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(recorded)
        }
        .await;
        let (answer, keep) = match written {
            Ok(recorded) => {
                self.states.remember(&sub.plan.after);
                if let Some(o) = &self.observer {
                    o.append(1, appends.len(), recorded.len());
                    let committed: Vec<(i64, &str, i64)> = recorded
                        .iter()
                        .map(|e| (e.position, e.stream_id.as_str(), e.version))
                        .collect();
                    o.committed(&committed);
                }
                let position = recorded.iter().map(|e| e.position).max().unwrap_or(0);
                let outcome = Box::new(sub.plan.outcome);
                (Batched::Committed { position, outcome }, true)
            }
            Err(e) if e.is_key_taken() => (Batched::KeyTaken, true),
            Err(StoreError::UniqueViolation { constraint })
                if constraint == "credentials_email_key" =>
            {
                (Batched::EmailTaken, true)
            }
            // Another unique row taken (the user's stream, say): decide again.
            Err(e) if e.is_race() || matches!(e, StoreError::UniqueViolation { .. }) => {
                (Batched::Conflict, true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "a registration's commit failed");
                (failed(&e), false)
            }
        };
        let _ = sub.reply.send(answer);
        keep.then_some(conn)
    }
}

fn failed(e: &StoreError) -> Batched {
    Batched::Failed {
        transient: e.is_transient(),
        message: e.to_string(),
    }
}

fn fail_all(subs: Vec<Submission>, e: &StoreError) {
    for s in subs {
        let _ = s.reply.send(failed(e));
    }
}

/// The store's form of a plan's writes: each event encoded, with an id from `next_id` and
/// the command's metadata.
fn stream_appends(
    writes: &[StreamWrite],
    metadata: &Value,
    mut next_id: impl FnMut() -> Uuid,
) -> Vec<StreamAppend> {
    writes
        .iter()
        .map(|w| StreamAppend {
            stream_id: w.stream.as_str().to_owned(),
            expected_version: w.expected_version as i64,
            events: w
                .events
                .iter()
                .map(|e| {
                    let (event_type, schema_version, data) = domain::codec::encode(e);
                    NewEvent {
                        event_id: next_id(),
                        event_type: event_type.to_owned(),
                        schema_version,
                        data,
                        metadata: metadata.clone(),
                    }
                })
                .collect(),
        })
        .collect()
}
