//! Group commit: the commands of a process, decided concurrently, are committed by one task
//! in batches — one statement that is its own transaction inserts every event and every
//! idempotency key, one fsync — and each command still gets its own answer and its own
//! failure.
//!
//! Every command arrives with the versions of the streams it decided from. The committer
//! keeps the heads (newest version and hash) of the streams it has written or read
//! ([`Heads`]); it reads from the database only the heads of streams it does not know, or
//! knows older than a decision did. It then takes the commands in order: a command whose
//! versions are current is accepted and its resulting states become the batch's overlay;
//! a command decided from a state the batch (or an earlier batch) has since moved is
//! decided again, in sequence, on top of the overlay — this is how a hot wallet takes many
//! commands per batch instead of failing them. A command that cannot be accepted is
//! answered `Conflict` and decides again from fresh state.
//!
//! The known heads may be stale: another process may have written since. The batch's
//! statement ([`event_store::write_batch`]) therefore checks what it relies on: a stream
//! it writes collides on `UNIQUE (stream_id, version)` if its version was taken (the whole
//! statement fails, every command decides again, and those streams are read afresh next
//! time); a stream it only read is compared with its head inside the statement, and so is
//! every idempotency key. If one of those moved, nothing is written: the commands whose
//! keys were used are answered with the stored response, those that read a moved stream
//! decide again, and the rest are written in another round.
//!
//! One batch is written at a time, and the next is taken from the queue only when it is
//! done: everything that arrived during a write goes into the next one. (Until 2026-12 a
//! separate read of heads, keys and positions preceded each write and overlapped the
//! previous one; a command then waited about three writes instead of one and a half.)

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use event_store::{
    read_heads, write_batch, BatchKey, BatchOutcome, BatchWrite, IdempotencyRecord, IdempotencyRow,
    StoreError, StreamAppend,
};
use serde_json::Value;
use sqlx::{Connection as _, PgConnection};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::ledger::{stream_appends, LedgerCore, Overlay, Plan, Planning, Respond};
use crate::{Command, Outcome};

/// Commands committed in one transaction at most.
pub const BATCH_COMMANDS_MAX: usize = 256;
/// Commands waiting for the committer before senders wait too.
pub(crate) const QUEUED_COMMANDS_MAX: usize = 4096;
/// Streams whose heads the committer remembers before it starts over (about 150 bytes
/// each: the memory stays under ~15 MB, and every active account of a busy ledger fits).
const KNOWN_HEADS_MAX: usize = 100_000;
/// Rounds a batch gets when its statement refuses it (a key or a read stream moved)
/// before the commands still waiting decide again by themselves. A round is one statement;
/// each refusal removes at least one command, so this bounds the work a batch can cause.
const REFUSED_ROUNDS_MAX: usize = 3;

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

/// When no command comes for this long, the committer closes its connection, so that an
/// idle ledger holds no session of its own open (a database being dropped, a Postgres
/// restart that cut it), and the next batch opens one again.
const HELD_IDLE_MAX: Duration = Duration::from_secs(1);

/// The heads (newest version and its hash) of the streams this committer has written or
/// read. Never newer than the database; older only when another process wrote since,
/// which the batch statement detects (see the module's documentation).
#[derive(Default)]
pub(crate) struct Heads {
    known: HashMap<String, (i64, Vec<u8>)>,
}

impl Heads {
    fn version(&self, stream: &str) -> Option<i64> {
        self.known.get(stream).map(|(v, _)| *v)
    }

    fn learn(&mut self, heads: HashMap<String, (i64, Vec<u8>)>) {
        if self.known.len() + heads.len() > KNOWN_HEADS_MAX {
            self.known.clear();
        }
        self.known.extend(heads);
    }

    fn forget<'a>(&mut self, streams: impl IntoIterator<Item = &'a str>) {
        for s in streams {
            self.known.remove(s);
        }
    }

    /// Whether a stream decided at `decided` must have its head read first: decided at a
    /// version above 0 that is unknown here or newer than what is known (then another
    /// process wrote). A stream decided at version 0 and unknown is taken to be empty; if
    /// it is not, the insert of its first version collides.
    fn must_read(&self, stream: &str, decided: i64) -> bool {
        decided > 0 && self.version(stream).is_none_or(|known| known < decided)
    }

    /// The streams of `subs` whose heads must be read first ([`Heads::must_read`]).
    fn unknown<'a>(&self, subs: &'a [Submission]) -> Vec<&'a str> {
        let mut out: Vec<&str> = subs
            .iter()
            .flat_map(decided_versions)
            .filter(|(s, v)| self.must_read(s, *v))
            .map(|(s, _)| s)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// `(stream, version)` of every stream a submission's decision read or writes.
fn decided_versions(s: &Submission) -> impl Iterator<Item = (&str, i64)> {
    s.reads.iter().map(|(r, v)| (r.as_str(), *v)).chain(
        s.plan
            .writes
            .iter()
            .map(|w| (w.stream.as_str(), w.expected_version as i64)),
    )
}

/// The committer task: takes whatever is queued (up to a batch) and commits it; what
/// arrives meanwhile is the next batch.
pub(crate) async fn run(core: Arc<LedgerCore>, mut rx: mpsc::Receiver<Submission>) {
    let pool = core.store.pool().clone();
    // A connection of the committer's own, opened with the pool's options (its session
    // settings included) but outside it: a socket belongs to the runtime that opened it,
    // and this task runs in a runtime of its own (see `Ledger::committer`), so a pooled
    // connection's answers would still be noticed by the shared runtime's busy workers. It
    // is kept from one batch to the next (a pool pings every connection returned to it, a
    // round trip per statement) and counts beside the pool's connections, like a lease's.
    let mut held: Option<PgConnection> = None;
    let mut heads = Heads::default();
    loop {
        let next = if held.is_some() {
            // Idle while holding the connection: close it after HELD_IDLE_MAX.
            match tokio::time::timeout(HELD_IDLE_MAX, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    // Said goodbye to, so the server does not log a vanished client.
                    if let Some(c) = held.take() {
                        let _ = c.close().await;
                    }
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(first) = next else {
            if let Some(c) = held.take() {
                let _ = c.close().await;
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
                    fail_all(batch, &e.into());
                    continue;
                }
                Err(_) => {
                    fail_all(batch, &sqlx::Error::PoolTimedOut.into());
                    continue;
                }
            },
        };
        held = core.commit_batch(conn, batch, &mut heads).await;
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

/// The version a stream is at for the command being sequenced, if known.
fn current(stream: &str, overlay: &Overlay, heads: &Heads) -> Option<i64> {
    match overlay.get(stream) {
        Some(s) => Some(s.version() as i64),
        None => heads.version(stream),
    }
}

/// Whether a decision was made from current versions of everything it read and writes.
/// An unknown stream is current only at version 0 (empty; the statement checks it).
fn still_valid(reads: &[(String, i64)], plan: &Plan, overlay: &Overlay, heads: &Heads) -> bool {
    let at = |s: &str, v: i64| current(s, overlay, heads).unwrap_or(0) == v;
    reads.iter().all(|(s, v)| at(s, *v))
        && plan
            .writes
            .iter()
            .all(|w| at(w.stream.as_str(), w.expected_version as i64))
}

/// A command accepted into the batch, with the ids of its events.
struct Accepted {
    sub: Submission,
    event_ids: Vec<Uuid>,
}

/// What became of a round of a batch.
enum Round {
    /// Every command was answered.
    Done,
    /// The statement refused the batch; these commands were not answered yet.
    Again(Vec<Submission>),
    /// The statement failed; every command was answered and the connection is dropped.
    Broken,
}

impl LedgerCore {
    /// Commits a batch: reads the heads it needs, then sequences and writes it (again
    /// after a refusal, bounded by [`REFUSED_ROUNDS_MAX`]). Gives back the connection
    /// unless a statement failed.
    async fn commit_batch(
        &self,
        mut conn: PgConnection,
        subs: Vec<Submission>,
        heads: &mut Heads,
    ) -> Option<PgConnection> {
        let unknown = heads.unknown(&subs);
        if !unknown.is_empty() {
            match read_heads(&mut conn, &unknown).await {
                Ok(found) => heads.learn(found),
                Err(e) => {
                    fail_all(subs, &e);
                    return None;
                }
            }
        }
        let mut subs = subs;
        for _ in 0..REFUSED_ROUNDS_MAX {
            let accepted = self.sequence(subs, heads).await;
            if accepted.is_empty() {
                return Some(conn);
            }
            match self.write_and_answer(&mut conn, accepted, heads).await {
                Round::Done => return Some(conn),
                Round::Again(rest) => subs = rest,
                Round::Broken => return None,
            }
        }
        for s in subs {
            let _ = s.reply.send(Batched::Conflict);
        }
        Some(conn)
    }

    /// Takes the commands in order (see the module's documentation): answers conflicts at
    /// once and returns the accepted ones.
    async fn sequence(&self, subs: Vec<Submission>, heads: &Heads) -> Vec<Accepted> {
        let mut overlay = Overlay::new();
        let mut keys_in_batch: HashSet<(String, String)> = HashSet::new();
        let mut accepted: Vec<Accepted> = Vec::with_capacity(subs.len());
        for mut sub in subs {
            if let Some(rec) = &sub.idempotency {
                if !keys_in_batch.insert((rec.scope.clone(), rec.key.clone())) {
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
        accepted
    }

    /// Writes the accepted commands of a batch in one statement and answers each, or
    /// returns those to try again when the statement refused the batch.
    async fn write_and_answer(
        &self,
        conn: &mut PgConnection,
        mut accepted: Vec<Accepted>,
        heads: &mut Heads,
    ) -> Round {
        let mut appends: Vec<StreamAppend> = Vec::new();
        let mut command_of: HashMap<Uuid, i32> = HashMap::new();
        for (i, a) in accepted.iter().enumerate() {
            let mut ids = a.event_ids.iter().copied();
            appends.extend(stream_appends(&a.sub.plan.writes, &a.sub.metadata, || {
                ids.next().unwrap_or_else(Uuid::now_v7)
            }));
            command_of.extend(a.event_ids.iter().map(|id| (*id, i as i32)));
        }
        let batch = match BatchWrite::lay_out(&appends, &heads.known) {
            Ok(b) => b,
            // Sequencing accepts only writes that start at a known head: a bug if not, and
            // deciding again from fresh state is the safe answer.
            Err(e) => {
                tracing::error!(error = %e, "a sequenced batch did not chain onto its heads");
                return self.race(accepted, heads);
            }
        };
        let commands: Vec<i32> = batch
            .events()
            .map(|(id, _, _)| command_of.get(&id).copied().unwrap_or(-1))
            .collect();
        let recorded_at = batch.recorded_at();
        let mut keys = Vec::new();
        for (i, a) in accepted.iter_mut().enumerate() {
            // The response shows the stored time, so a replay answers identically. Its
            // position is set by the statement, which is where positions are assigned.
            a.sub.plan.outcome.set_recorded_at(recorded_at);
            if let Some(rec) = &a.sub.idempotency {
                let (status, body) = (a.sub.respond)(&a.sub.plan.outcome, 0);
                keys.push(BatchKey {
                    row: IdempotencyRow {
                        record: rec.clone(),
                        status: status as i16,
                        body,
                    },
                    command: i as i32,
                });
            }
        }
        // Streams only read: no insert collides if they moved, so the statement checks
        // them. Each is at one version for the whole batch (sequencing checked every read
        // against the same head).
        let written: HashSet<&str> = appends.iter().map(|w| w.stream_id.as_str()).collect();
        let mut checks: Vec<(&str, i64)> = accepted
            .iter()
            .flat_map(|a| a.sub.reads.iter())
            .filter(|(s, _)| !written.contains(s.as_str()))
            .map(|(s, v)| (s.as_str(), *v))
            .collect();
        checks.sort_unstable();
        checks.dedup();
        let outcome = write_batch(conn, &batch, &commands, &keys, &checks).await;
        drop(checks);
        match outcome {
            Ok(BatchOutcome::Written(positions)) => {
                heads.learn(batch.tips());
                let reached = |a: &Accepted| {
                    a.event_ids
                        .iter()
                        .filter_map(|id| positions.get(id).copied())
                        .max()
                        .unwrap_or(0)
                };
                for a in &accepted {
                    self.remember(&a.sub.plan.after);
                }
                if let Some(o) = &self.observer {
                    let streams: HashSet<&str> = batch.events().map(|(_, s, _)| s).collect();
                    o.append(accepted.len(), streams.len(), positions.len());
                    let committed: Vec<(i64, &str, i64)> = batch
                        .events()
                        .map(|(id, s, v)| (positions.get(&id).copied().unwrap_or(0), s, v))
                        .collect();
                    o.committed(&committed);
                }
                for a in accepted {
                    let position = reached(&a);
                    let _ = a.sub.reply.send(Batched::Committed {
                        position,
                        outcome: Box::new(a.sub.plan.outcome),
                    });
                }
                Round::Done
            }
            Ok(BatchOutcome::Refused { moved, taken }) => {
                heads.forget(moved.iter().map(|(s, _)| s.as_str()));
                let moved: HashSet<&str> = moved.iter().map(|(s, _)| s.as_str()).collect();
                let taken: HashMap<_, _> = taken.into_iter().collect();
                let mut again = Vec::with_capacity(accepted.len());
                for a in accepted {
                    let sub = a.sub;
                    let stored = sub
                        .idempotency
                        .as_ref()
                        .and_then(|r| taken.get(&(r.scope.clone(), r.key.clone())));
                    if let (Some(stored), Some(rec)) = (stored, &sub.idempotency) {
                        let answer = if stored.request_hash == rec.request_hash {
                            Batched::Replayed {
                                status: u16::try_from(stored.status).unwrap_or(200),
                                body: stored.body.clone(),
                            }
                        } else {
                            Batched::IdempotencyMismatch
                        };
                        let _ = sub.reply.send(answer);
                    } else if sub.reads.iter().any(|(s, _)| moved.contains(s.as_str())) {
                        let _ = sub.reply.send(Batched::Conflict);
                    } else {
                        again.push(sub);
                    }
                }
                Round::Again(again)
            }
            // A key was taken by another process's commit after the check: nothing was
            // written; each command decides again and that one replays the stored answer.
            Err(StoreError::UniqueViolation { constraint })
                if constraint == "idempotency_keys_pkey" =>
            {
                self.race(accepted, heads)
            }
            Err(e) if e.is_race() => self.race(accepted, heads),
            Err(e) => {
                tracing::warn!(error = %e, commands = accepted.len(), "group commit failed");
                for a in accepted {
                    let _ = a.sub.reply.send(failed(&e));
                }
                // Whatever state the connection is in, the pool sorts it out (or closes it).
                Round::Broken
            }
        }
    }

    /// Another writer got there first: nothing was written. The batch's streams are read
    /// afresh next time, and every command decides again.
    fn race(&self, accepted: Vec<Accepted>, heads: &mut Heads) -> Round {
        heads.forget(
            accepted
                .iter()
                .flat_map(|a| decided_versions(&a.sub).map(|(s, _)| s)),
        );
        for a in accepted {
            let _ = a.sub.reply.send(Batched::Conflict);
        }
        // The connection is fine: the failed statement wrote nothing.
        Round::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_when_unknown_or_older_than_a_decision() {
        let mut heads = Heads::default();
        heads.learn(HashMap::from([
            ("a".to_owned(), (3, vec![3])),
            ("b".to_owned(), (7, vec![7])),
        ]));
        assert!(!heads.must_read("a", 3), "known at the decided version");
        assert!(
            !heads.must_read("b", 6),
            "a stale decision is sequenced, not read"
        );
        assert!(heads.must_read("a", 4), "another process wrote a since");
        assert!(heads.must_read("c", 1), "never seen");
        assert!(
            !heads.must_read("c", 0),
            "decided empty: the insert collides if not"
        );
        heads.forget(["a"]);
        assert!(heads.must_read("a", 3), "forgotten after a collision");
        assert_eq!(heads.version("b"), Some(7));
    }
}
