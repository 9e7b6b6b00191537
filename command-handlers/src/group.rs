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
//!
//! Two batches are in flight at most: while one is written (on the committer's write
//! connection), the next one is read (on its read connection). The next batch is
//! sequenced only once the previous write has finished, on top of what it committed: its
//! streams' new heads and its stored answers are carried over (the read may have run
//! before that commit). So every write still starts from committed state, and writes stay
//! one at a time, in order.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use event_store::{
    read_batch, reserve_positions, write_batch, BatchReads, BatchWrite, IdempotencyRecord,
    IdempotencyRow, StoreError, StoredResponse, StreamAppend,
};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::Postgres;
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

/// When no command comes for this long, the committer hands its connections back to the
/// pool — which pings every connection returned to it and closes one that a Postgres
/// restart has cut, and lets a pool being closed finish — and the next batch acquires them
/// again.
const HELD_IDLE_MAX: Duration = Duration::from_secs(1);

/// How long the committer waits for a new second connection (the pool had room when it
/// looked) before it reads after the write instead, on the write's connection.
const SPARE_WAIT_MAX: Duration = Duration::from_millis(50);

/// What a committed batch leaves for the next one, whose read may have run before the
/// commit.
struct Carry {
    /// `stream → (version, hash)` of every stream it wrote.
    tips: HashMap<String, (i64, Vec<u8>)>,
    /// The answers it stored, by `(scope, key)`.
    stored: Vec<((String, String), StoredResponse)>,
}

impl Carry {
    /// Brings a read up to this commit. A head the read found newer (another process wrote
    /// the stream since) is kept.
    fn apply(self, reads: &mut BatchReads) {
        for (stream, tip) in self.tips {
            match reads.heads.get(&stream) {
                Some((v, _)) if *v >= tip.0 => {}
                _ => {
                    reads.heads.insert(stream, tip);
                }
            }
        }
        reads.stored.extend(self.stored);
    }
}

/// A batch being written: gives back the write connection (unless a statement failed) and,
/// if it committed, its [`Carry`].
type Writing =
    Pin<Box<dyn Future<Output = (Option<PoolConnection<Postgres>>, Option<Carry>)> + Send>>;

/// The committer task: takes whatever is queued (up to a batch), reads it while the
/// previous batch is written, sequences it, and writes it.
pub(crate) async fn run(core: Arc<LedgerCore>, mut rx: mpsc::Receiver<Submission>) {
    let pool = core.store.pool().clone();
    // Connections kept from one batch to the next (two at most: one reading, one writing):
    // sqlx pings every connection returned to its pool, a round trip per statement.
    let mut idle: Vec<PoolConnection<Postgres>> = Vec::new();
    let mut writing: Option<Writing> = None;
    loop {
        let next = if let Some(w) = writing.as_mut() {
            tokio::select! {
                next = rx.recv() => next,
                (conn, _) = w => {
                    // Written before the next batch came: its read will see the commit.
                    writing = None;
                    idle.extend(conn);
                    continue;
                }
            }
        } else if !idle.is_empty() {
            // Idle while holding connections: hand them back after HELD_IDLE_MAX (the only
            // place idleness is decided), or a pool being closed (the admin commands) would
            // wait for them forever.
            match tokio::time::timeout(HELD_IDLE_MAX, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    idle.clear();
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(first) = next else {
            if let Some(w) = writing.take() {
                w.await;
            }
            break;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_COMMANDS_MAX {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }

        // Read this batch while the previous one is written, on a connection of its own if
        // the pool has one to spare or room for one; otherwise after the write, on its
        // connection.
        let mut carry = None;
        let mut overlapped = None;
        if let Some(w) = writing.take() {
            let room = pool.size() < pool.options().get_max_connections();
            let read = async {
                let spare = match idle.pop().or_else(|| pool.try_acquire()) {
                    Some(c) => Some(c),
                    // Another task may take the room meanwhile: wait only briefly.
                    None if room => tokio::time::timeout(SPARE_WAIT_MAX, pool.acquire())
                        .await
                        .ok()
                        .and_then(Result::ok),
                    None => None,
                };
                match spare {
                    Some(conn) => Some(core.read(conn, &batch).await),
                    None => None,
                }
            };
            let ((written, c), read) = tokio::join!(w, read);
            idle.extend(written);
            carry = c;
            overlapped = read;
        }
        let read = match overlapped {
            Some(read) => read,
            None => match connection(&mut idle, &pool).await {
                Ok(conn) => core.read(conn, &batch).await,
                Err(e) => (None, Err(e)),
            },
        };
        let mut reads = match read {
            (conn, Ok(reads)) => {
                idle.extend(conn);
                reads
            }
            (_, Err(e)) => {
                fail_all(batch, &e);
                continue;
            }
        };
        if let Some(c) = carry {
            c.apply(&mut reads);
        }

        let (accepted, reads) = core.sequence(batch, reads).await;
        if accepted.is_empty() {
            continue;
        }
        let conn = match connection(&mut idle, &pool).await {
            Ok(c) => c,
            Err(e) => {
                fail_all(accepted.into_iter().map(|a| a.sub).collect(), &e);
                continue;
            }
        };
        let core = core.clone();
        writing = Some(Box::pin(async move {
            core.write_and_answer(conn, accepted, reads).await
        }));
    }
}

/// One of the committer's kept connections, or one from the pool.
async fn connection(
    idle: &mut Vec<PoolConnection<Postgres>>,
    pool: &sqlx::PgPool,
) -> Result<PoolConnection<Postgres>, StoreError> {
    match idle.pop() {
        Some(c) => Ok(c),
        None => Ok(pool.acquire().await?),
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
    /// Reads what a batch needs: heads, stored answers, positions. Gives the connection
    /// back unless the statement failed.
    async fn read(
        &self,
        mut conn: PoolConnection<Postgres>,
        subs: &[Submission],
    ) -> (
        Option<PoolConnection<Postgres>>,
        Result<BatchReads, StoreError>,
    ) {
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
        match read_batch(&mut conn, &streams, &keys, events).await {
            Ok(reads) => (Some(conn), Ok(reads)),
            Err(e) => (None, Err(e)),
        }
    }

    /// Takes the commands in order (see the module's documentation): answers replays and
    /// conflicts at once and returns the accepted ones.
    async fn sequence(
        &self,
        subs: Vec<Submission>,
        reads: BatchReads,
    ) -> (Vec<Accepted>, BatchReads) {
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
        (accepted, reads)
    }

    /// Writes the accepted commands of a batch and answers each; gives back the connection
    /// unless a statement failed, and what the batch committed.
    async fn write_and_answer(
        &self,
        mut conn: PoolConnection<Postgres>,
        mut accepted: Vec<Accepted>,
        mut reads: BatchReads,
    ) -> (Option<PoolConnection<Postgres>>, Option<Carry>) {
        match self.write_batch(&mut conn, &mut accepted, &mut reads).await {
            Ok((positions, carry)) => {
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
                (Some(conn), Some(carry))
            }
            Err(BatchError::Race) => {
                for a in accepted {
                    let _ = a.sub.reply.send(Batched::Conflict);
                }
                // The connection is fine: the failed statement wrote nothing.
                (Some(conn), None)
            }
            Err(BatchError::Store(e)) => {
                tracing::warn!(error = %e, commands = accepted.len(), "group commit failed");
                for a in accepted {
                    let _ = a.sub.reply.send(failed(&e));
                }
                // Whatever state the connection is in, the pool sorts it out (or closes it).
                (None, None)
            }
        }
    }

    /// One statement, its own transaction: every accepted command's events, and its
    /// idempotency key with the response it gets. Returns each command's position, and
    /// what the batch leaves for the next one.
    async fn write_batch(
        &self,
        conn: &mut PoolConnection<Postgres>,
        accepted: &mut [Accepted],
        reads: &mut BatchReads,
    ) -> Result<(Vec<i64>, Carry), BatchError> {
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
        match write_batch(&mut *conn, &batch, &rows).await {
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
        let stored = rows
            .into_iter()
            .map(|r| {
                let stored = StoredResponse {
                    request_hash: r.record.request_hash,
                    status: r.status,
                    body: r.body,
                };
                ((r.record.scope, r.record.key), stored)
            })
            .collect();
        let carry = Carry {
            tips: batch.tips(),
            stored,
        };
        Ok((positions, carry))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: i16) -> StoredResponse {
        StoredResponse {
            request_hash: vec![1],
            status,
            body: Value::Null,
        }
    }

    #[test]
    fn a_carried_commit_brings_a_read_up_to_date_but_never_back() {
        // The read ran before the commit: it saw a@3, b@7 (another process moved b since
        // the batch was sequenced) and no c.
        let mut reads = BatchReads::default();
        reads.heads.insert("a".into(), (3, vec![3]));
        reads.heads.insert("b".into(), (7, vec![7]));
        reads.stored.insert(("s".into(), "k1".into()), answer(200));
        let carry = Carry {
            tips: HashMap::from([
                ("a".to_owned(), (5, vec![5])),
                ("b".to_owned(), (6, vec![6])),
                ("c".to_owned(), (1, vec![1])),
            ]),
            stored: vec![(("s".into(), "k2".into()), answer(201))],
        };
        carry.apply(&mut reads);
        assert_eq!(
            reads.heads.get("a"),
            Some(&(5, vec![5])),
            "the commit moved a"
        );
        assert_eq!(
            reads.heads.get("b"),
            Some(&(7, vec![7])),
            "b is newer than the carry"
        );
        assert_eq!(reads.heads.get("c"), Some(&(1, vec![1])), "c was created");
        let statuses: Vec<i16> = ["k1", "k2"]
            .iter()
            .filter_map(|k| reads.stored.get(&("s".to_owned(), (*k).to_owned())))
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, vec![200, 201], "both answers replay");
    }
}
