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
//! done: everything that arrived during a write goes into the next one, so a command waits
//! about one and a half writes.

use std::collections::{HashMap, HashSet};

use event_store::{
    read_heads, write_batch, BatchKey, BatchOutcome, BatchWrite, IdempotencyRow, StreamAppend,
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{fail_all, failed, stream_appends, Batched, Shared, Submission};
use crate::command::stored_answer;
use crate::decide::{decide, Plan};
use crate::load::{Overlaid, Overlay};

/// Commands committed in one transaction at most.
pub const BATCH_COMMANDS_MAX: usize = 256;
/// Streams whose heads the committer remembers before it starts over (about 150 bytes
/// each: the memory stays under ~15 MB, and every active account of a busy ledger fits).
const KNOWN_HEADS_MAX: usize = 100_000;
/// Rounds a batch gets when its statement refuses it (a key or a read stream moved)
/// before the commands still waiting decide again by themselves. A round is one statement;
/// each refusal removes at least one command, so this bounds the work a batch can cause.
const REFUSED_ROUNDS_MAX: usize = 3;

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

    pub(super) fn forget<'a>(&mut self, streams: impl IntoIterator<Item = &'a str>) {
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

impl Shared {
    /// Commits a batch: reads the heads it needs, then sequences and writes it (again
    /// after a refusal, bounded by [`REFUSED_ROUNDS_MAX`]). Gives back the connection
    /// unless a statement failed.
    pub(super) async fn commit_batch(
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
                let from = Overlaid {
                    overlay: &overlay,
                    states: &self.states,
                };
                match decide(&sub.cmd, from, &mut reads).await {
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
            // The answer shows the stored time, so a replay answers identically. Its
            // position is set by the statement, which is where positions are assigned.
            a.sub.plan.outcome.set_recorded_at(recorded_at);
            if let Some(rec) = &a.sub.idempotency {
                keys.push(BatchKey {
                    row: IdempotencyRow {
                        record: rec.clone(),
                        answer: stored_answer(&a.sub.plan.outcome),
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
                    self.states.remember(&a.sub.plan.after);
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
                            Batched::Replayed(stored.clone())
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
            Err(e) if e.is_key_taken() || e.is_race() => self.race(accepted, heads),
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
