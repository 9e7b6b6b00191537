//! Group commit: the commands of a process, decided concurrently, are committed by one task
//! in batches — one statement that is its own transaction inserts every event and every
//! idempotency key, one fsync — and each command still gets its own answer and its own
//! failure.
//!
//! Every command arrives with the versions of the streams it decided from. The committer
//! reads, in one statement, the heads (newest version and hash) of all the batch's streams,
//! the answers stored under its idempotency keys and positions for its events
//! ([`event_store::read_batch`]), and takes the commands in order: a command whose versions are current is accepted and its
//! resulting states become the batch's overlay; a command decided from a state the batch
//! (or another process) has since moved is decided again, in sequence, on top of the
//! overlay — this is how a hot wallet takes many commands per batch instead of failing
//! them. A command that cannot be accepted is answered `Conflict` and decides again from
//! fresh state. The insert still relies on `UNIQUE (stream_id, version)`: if another
//! process wrote one of the streams after the heads were read, the whole transaction
//! rolls back and every command of the batch is answered `Conflict`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use event_store::{
    read_batch, reserve_positions, write_batch, BatchReads, BatchWrite, IdempotencyRecord,
    IdempotencyRow, StoreError, StreamAppend,
};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::ledger::{stream_appends, LedgerCore, Overlay, Plan, Planning, Respond};
use crate::{Command, Outcome};

/// Commands committed in one transaction at most.
pub const BATCH_COMMANDS_MAX: usize = 256;
/// Commands waiting for the committer before senders wait too.
pub(crate) const QUEUED_COMMANDS_MAX: usize = 4096;

/// A decided command on its way to the committer.
pub(crate) struct Submission {
    pub(crate) metadata: Value,
    pub(crate) idempotency: Option<IdempotencyRecord>,
    pub(crate) cmd: Command,
    /// `(stream, version)` of every stream the decision read.
    pub(crate) reads: Vec<(String, i64)>,
    pub(crate) plan: Plan,
    pub(crate) respond: Respond,
    pub(crate) reply: oneshot::Sender<Batched>,
}

/// The committer's answer to one command.
pub(crate) enum Batched {
    /// Committed; its events end at `position`.
    Committed {
        position: i64,
        outcome: Box<Outcome>,
    },
    /// Its idempotency key already holds this answer.
    Replayed { status: u16, body: Value },
    /// Its idempotency key was used with another request.
    IdempotencyMismatch,
    /// Nothing was written: decide again from fresh state.
    Conflict,
    /// The batch's transaction failed.
    Failed { transient: bool, message: String },
}

/// When no command comes for this long, the committer hands its connection back to the
/// pool — which pings every connection returned to it and closes one that a Postgres
/// restart has cut, and lets a pool being closed finish — and the next batch acquires one
/// again.
const HELD_IDLE_MAX: Duration = Duration::from_secs(1);

/// The committer's own connection, kept from one batch to the next: sqlx pings every
/// connection returned to its pool, which was a round trip for each of a batch's
/// statements.
struct Held {
    conn: Option<PoolConnection<Postgres>>,
}

impl Held {
    async fn get(&mut self, pool: &PgPool) -> Result<&mut PoolConnection<Postgres>, StoreError> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => pool.acquire().await?,
        };
        Ok(self.conn.insert(conn))
    }
}

/// The committer task: takes whatever is queued (up to a batch) and commits it.
pub(crate) async fn run(core: Arc<LedgerCore>, mut rx: mpsc::Receiver<Submission>) {
    let mut held = Held { conn: None };
    loop {
        let next = if held.conn.is_some() {
            // Idle while holding the connection: hand it back after HELD_IDLE_MAX (the only
            // place idleness is decided), or a pool being closed (the admin commands) would
            // wait for it forever.
            match tokio::time::timeout(HELD_IDLE_MAX, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    held.conn = None;
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(first) = next else { break };
        let mut batch = vec![first];
        while batch.len() < BATCH_COMMANDS_MAX {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        if !core.commit_batch(batch, &mut held).await {
            // Whatever state the connection is in, the pool sorts it out (or closes it).
            held.conn = None;
        }
    }
}

/// The version a stream is at for the command being sequenced.
fn current(stream: &str, overlay: &Overlay, heads: &HashMap<String, (i64, Vec<u8>)>) -> i64 {
    match overlay.get(stream) {
        Some(s) => s.version() as i64,
        None => heads.get(stream).map_or(0, |(v, _)| *v),
    }
}

/// Whether a decision was made from current versions of everything it read and writes.
fn still_valid(
    reads: &[(String, i64)],
    plan: &Plan,
    overlay: &Overlay,
    heads: &HashMap<String, (i64, Vec<u8>)>,
) -> bool {
    reads.iter().all(|(s, v)| current(s, overlay, heads) == *v)
        && plan
            .writes
            .iter()
            .all(|w| current(w.stream.as_str(), overlay, heads) == w.expected_version as i64)
}

/// A command accepted into the batch, with the ids of its events.
struct Accepted {
    sub: Submission,
    event_ids: Vec<Uuid>,
}

impl LedgerCore {
    /// Commits a batch on the held connection; `false` if a statement failed.
    async fn commit_batch(&self, subs: Vec<Submission>, held: &mut Held) -> bool {
        let failed = |e: &StoreError| Batched::Failed {
            transient: e.is_transient(),
            message: e.to_string(),
        };
        let conn = match held.get(self.store.pool()).await {
            Ok(c) => c,
            Err(e) => {
                for s in subs {
                    let _ = s.reply.send(failed(&e));
                }
                return false;
            }
        };
        // Keys answered before: replay them instead of executing again.
        let keys: Vec<(String, String)> = subs
            .iter()
            .filter_map(|s| s.idempotency.as_ref())
            .map(|r| (r.scope.clone(), r.key.clone()))
            .collect();
        let mut streams: Vec<String> = subs
            .iter()
            .flat_map(|s| {
                s.reads
                    .iter()
                    .map(|(r, _)| r.clone())
                    .chain(s.plan.writes.iter().map(|w| w.stream.as_str().to_owned()))
            })
            .collect();
        streams.sort();
        streams.dedup();
        // As many positions as the decisions have events; a re-decision that needs more
        // reserves them before the write.
        let events: usize = subs
            .iter()
            .flat_map(|s| s.plan.writes.iter().map(|w| w.events.len()))
            .sum();
        let mut reads = match read_batch(conn, &streams, &keys, events).await {
            Ok(r) => r,
            Err(e) => {
                for s in subs {
                    let _ = s.reply.send(failed(&e));
                }
                return false;
            }
        };
        let (stored, heads) = (&reads.stored, &reads.heads);

        // Sequence the batch.
        let mut overlay = Overlay::new();
        let mut keys_in_batch: HashSet<(String, String)> = HashSet::new();
        let mut accepted: Vec<Accepted> = Vec::with_capacity(subs.len());
        for mut sub in subs {
            if let Some(rec) = &sub.idempotency {
                let k = (rec.scope.clone(), rec.key.clone());
                if let Some(s) = stored.get(&k) {
                    let answer = if s.request_hash == rec.request_hash {
                        Batched::Replayed {
                            status: u16::try_from(s.status).unwrap_or(200),
                            body: s.body.clone(),
                        }
                    } else {
                        Batched::IdempotencyMismatch
                    };
                    let _ = sub.reply.send(answer);
                    continue;
                }
                if !keys_in_batch.insert(k) {
                    // The same key twice in one batch: the second replays the first once
                    // it is committed.
                    let _ = sub.reply.send(Batched::Conflict);
                    continue;
                }
            }
            if !still_valid(&sub.reads, &sub.plan, &overlay, heads) {
                let mut reads = Vec::with_capacity(4);
                // The batch's own states first; other streams from the cache (which holds
                // every state this process committed), checked against the heads below.
                let how = Planning {
                    fresh: false,
                    overlay: Some(&overlay),
                };
                match self.plan(&sub.cmd, &mut reads, how).await {
                    Ok(p)
                        if p.credentials.is_none() && still_valid(&reads, &p, &overlay, heads) =>
                    {
                        sub.plan = p;
                        sub.reads = reads;
                    }
                    // A rejection, or a stream another process moved: the command decides
                    // again by itself (a rejection is only ever returned from committed
                    // state, checked by the caller).
                    _ => {
                        if let Some(rec) = &sub.idempotency {
                            keys_in_batch.remove(&(rec.scope.clone(), rec.key.clone()));
                        }
                        let _ = sub.reply.send(Batched::Conflict);
                        continue;
                    }
                }
            }
            for (stream, state) in &sub.plan.after {
                overlay.insert(stream.as_str().to_owned(), state.clone());
            }
            let event_ids = sub
                .plan
                .writes
                .iter()
                .flat_map(|w| w.events.iter().map(|_| Uuid::now_v7()))
                .collect();
            accepted.push(Accepted { sub, event_ids });
        }
        if accepted.is_empty() {
            return true;
        }

        match self.write_batch(conn, &mut accepted, &mut reads).await {
            Ok(positions) => {
                for a in &accepted {
                    self.remember(&a.sub.plan.after);
                }
                if let Some(o) = &self.observer {
                    let events: usize = accepted.iter().map(|a| a.event_ids.len()).sum();
                    let streams: HashSet<&str> = accepted
                        .iter()
                        .flat_map(|a| a.sub.plan.writes.iter().map(|w| w.stream.as_str()))
                        .collect();
                    o.append(accepted.len(), streams.len(), events);
                }
                for (a, position) in accepted.into_iter().zip(positions) {
                    let _ = a.sub.reply.send(Batched::Committed {
                        position,
                        outcome: Box::new(a.sub.plan.outcome),
                    });
                }
                true
            }
            Err(BatchError::Race) => {
                for a in accepted {
                    let _ = a.sub.reply.send(Batched::Conflict);
                }
                // The connection is fine: its rolled-back transaction is cleared on next use.
                true
            }
            Err(BatchError::Store(e)) => {
                tracing::warn!(error = %e, commands = accepted.len(), "group commit failed");
                for a in accepted {
                    let _ = a.sub.reply.send(failed(&e));
                }
                false
            }
        }
    }

    /// One statement, its own transaction: every accepted command's events, and its
    /// idempotency key with the response it gets. Returns each command's position.
    async fn write_batch(
        &self,
        conn: &mut PoolConnection<Postgres>,
        accepted: &mut [Accepted],
        reads: &mut BatchReads,
    ) -> Result<Vec<i64>, BatchError> {
        let mut appends: Vec<StreamAppend> = Vec::new();
        for a in accepted.iter() {
            let mut ids = a.event_ids.iter().copied();
            appends.extend(stream_appends(&a.sub.plan.writes, &a.sub.metadata, || {
                ids.next().unwrap_or_else(Uuid::now_v7)
            }));
        }
        let events: usize = appends.iter().map(|w| w.events.len()).sum();
        if reads.positions.len() < events {
            let more = reserve_positions(conn, events - reads.positions.len()).await?;
            reads.positions.extend(more);
        }
        let batch = BatchWrite::lay_out(&appends, &reads.heads, &reads.positions)?;
        let recorded_at = batch.recorded_at();
        let by_id: HashMap<Uuid, i64> = batch.events().map(|(id, p, _, _)| (id, p)).collect();
        let mut positions = Vec::with_capacity(accepted.len());
        let mut rows = Vec::new();
        for a in accepted.iter_mut() {
            let position = a
                .event_ids
                .iter()
                .filter_map(|id| by_id.get(id).copied())
                .max()
                .unwrap_or(0);
            if position > 0 {
                // The response shows the stored time, so a replay answers identically.
                a.sub.plan.outcome.set_recorded_at(recorded_at);
            }
            if let Some(rec) = &a.sub.idempotency {
                let (status, body) = (a.sub.respond)(&a.sub.plan.outcome, position);
                rows.push(IdempotencyRow {
                    record: rec.clone(),
                    status: status as i16,
                    body,
                });
            }
            positions.push(position);
        }
        match write_batch(conn, &batch, &rows).await {
            Ok(()) => {}
            // A key was taken meanwhile by another process's commit: nothing was written;
            // each command decides again and that one replays the stored answer.
            Err(StoreError::UniqueViolation { constraint })
                if constraint == "idempotency_keys_pkey" =>
            {
                return Err(BatchError::Race)
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(o) = &self.observer {
            let committed: Vec<(i64, &str, i64)> =
                batch.events().map(|(_, p, s, v)| (p, s, v)).collect();
            o.committed(&committed);
        }
        Ok(positions)
    }
}

enum BatchError {
    /// Another writer got there first: nothing was written, decide again.
    Race,
    Store(StoreError),
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        if e.is_race() {
            BatchError::Race
        } else {
            BatchError::Store(e)
        }
    }
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}
