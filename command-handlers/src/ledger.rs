//! The ledger: executes a command by deciding it (`decide`) from the states `load` gives,
//! handing the decision to the committer, and deciding again from fresh state when the
//! committer finds it was made from a state that moved. It also answers the write side's
//! own questions: an aggregate's current state, and an address's credentials.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use domain::{
    Contract, ContractId, Dispute, DisputeId, Email, StreamId, User, UserId, Versioned, Wallet,
    WalletId,
};
use event_store::{EventStore, StoreError};
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use crate::command::{replayed, Command, CommandError, Executed, LoginRecord};
use crate::committer::{Batched, Committer, Submission};
use crate::context::CommandContext;
use crate::decide::{decide, Reads};
use crate::load::{Cached, States};
use crate::observer::Observer;
use crate::CONFLICT_RETRIES_MAX;

/// The write side of the ledger. Creating one starts its committer; [`Ledger::shutdown`]
/// stops it (dropping the ledger lets it finish on its own).
pub struct Ledger {
    states: Arc<States>,
    committer: Committer,
    observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("store", self.states.store())
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger writing to `store`, with its committer started.
    pub fn new(store: EventStore) -> Self {
        Self::start(store, None)
    }

    /// A ledger writing to `store` that reports commands and appends to `observer`.
    pub fn observed(store: EventStore, observer: Arc<dyn Observer>) -> Self {
        Self::start(store, Some(observer))
    }

    fn start(store: EventStore, observer: Option<Arc<dyn Observer>>) -> Self {
        let states = Arc::new(States::new(store));
        let committer = Committer::start(states.clone(), observer.clone());
        Ledger {
            states,
            committer,
            observer,
        }
    }

    /// Commits the commands already handed to the committer, refuses later ones (as
    /// unavailable), and waits for the committer's thread to end.
    pub async fn shutdown(&self) {
        self.committer.stop().await;
    }

    /// The event store.
    pub fn store(&self) -> &EventStore {
        self.states.store()
    }

    /// Executes a command: decides from fresh state, appends atomically, retries conflicts,
    /// honours the context's idempotency key (a replay answers what the first use produced).
    ///
    /// Runs in a `command` span carrying the command's name, request id and correlation id
    /// (so every log line below it names the request), and reports to the observer.
    pub async fn execute(
        &self,
        ctx: &CommandContext,
        cmd: Command,
    ) -> Result<Executed, CommandError> {
        let name = cmd.name();
        let span = tracing::info_span!(
            "command",
            command = name,
            request_id = %ctx.request_id,
            correlation_id = %ctx.correlation_id,
            outcome = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        let started = Instant::now();
        let attempts = AtomicU32::new(0);
        // Boxed: the decision's future is ~4 KB, and every async caller up to the HTTP
        // handler's own box would otherwise copy it into its state once more.
        let result = Box::pin(self.decide_and_commit(ctx, cmd, &attempts))
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(Executed::Fresh { .. }) => "ok",
            Ok(Executed::Replayed { .. } | Executed::ReplayedResponse { .. }) => "replayed",
            Err(CommandError::Domain(e)) => e.code(),
            Err(CommandError::Busy) => "busy",
            Err(CommandError::IdempotencyMismatch) => "idempotency_mismatch",
            Err(CommandError::EmailTaken) => "email_taken",
            Err(
                CommandError::Decode(_)
                | CommandError::Store(_)
                | CommandError::Unavailable(_)
                | CommandError::Internal(_),
            ) => "error",
        };
        let attempts = attempts.into_inner();
        span.record("outcome", outcome);
        span.record("attempts", attempts);
        let seconds = started.elapsed().as_secs_f64();
        if outcome == "error" {
            if let Err(e) = &result {
                span.in_scope(|| tracing::error!(error = %e, seconds, "command failed"));
            }
        } else {
            span.in_scope(|| tracing::debug!(seconds, "command finished"));
        }
        if let Some(o) = &self.observer {
            o.command(name, outcome, seconds, attempts);
        }
        result
    }

    async fn decide_and_commit(
        &self,
        ctx: &CommandContext,
        cmd: Command,
        attempts: &AtomicU32,
    ) -> Result<Executed, CommandError> {
        for attempt in 0..CONFLICT_RETRIES_MAX {
            attempts.fetch_add(1, Ordering::Relaxed);
            let mut reads = Reads::with_capacity(4);
            // The first attempt decides from cached state; the committer checks every
            // version read against the streams' heads. Retries read the streams' tails.
            let from = Cached {
                states: &self.states,
                fresh: attempt > 0,
            };
            let plan = match decide(&cmd, from, &mut reads).await {
                Ok(p) => p,
                Err(CommandError::Domain(e)) => {
                    // A retried request answers what it answered the first time.
                    if let Some(done) = self.replay_idempotent(ctx).await? {
                        return Ok(done);
                    }
                    if self.reads_still_current(&reads).await? {
                        return Err(CommandError::Domain(e));
                    }
                    // Decided from a view that moved while it was read: decide again.
                    continue;
                }
                Err(e) => return Err(e),
            };
            if plan.credentials.is_some() {
                // A registration's key is checked before it is written alone (a batch
                // checks its keys in its statement).
                if let Some(done) = self.replay_idempotent(ctx).await? {
                    return Ok(done);
                }
            }
            let (reply, answer) = oneshot::channel();
            let submission = Submission {
                metadata: ctx.metadata(cmd.name()),
                idempotency: ctx.idempotency.clone(),
                cmd: cmd.clone(),
                reads,
                plan,
                reply,
            };
            if self.committer.submit(submission).await.is_err() {
                return Err(CommandError::Unavailable(
                    "the committer has stopped".into(),
                ));
            }
            match answer.await {
                Ok(Batched::Committed { position, outcome }) => {
                    return Ok(Executed::Fresh { outcome, position })
                }
                Ok(Batched::Replayed(stored)) => return replayed(stored),
                Ok(Batched::IdempotencyMismatch) => return Err(CommandError::IdempotencyMismatch),
                Ok(Batched::KeyTaken) => {
                    return self
                        .replay_idempotent(ctx)
                        .await?
                        .ok_or(CommandError::IdempotencyMismatch)
                }
                Ok(Batched::EmailTaken) => return Err(CommandError::EmailTaken),
                Ok(Batched::Conflict) => {
                    tracing::debug!(attempt, "decided from a moved state, retrying");
                    backoff(attempt).await;
                }
                Ok(Batched::Failed { transient, message }) => {
                    return Err(if transient {
                        CommandError::Unavailable(message)
                    } else {
                        CommandError::Internal(message)
                    })
                }
                Err(_) => {
                    return Err(CommandError::Unavailable(
                        "the committer stopped before answering".into(),
                    ))
                }
            }
        }
        Err(CommandError::Busy)
    }

    async fn replay_idempotent(
        &self,
        ctx: &CommandContext,
    ) -> Result<Option<Executed>, CommandError> {
        let Some(rec) = &ctx.idempotency else {
            return Ok(None);
        };
        match self.store().find_idempotent(&rec.scope, &rec.key).await? {
            None => Ok(None),
            Some(stored) if stored.request_hash == rec.request_hash => replayed(stored).map(Some),
            Some(_) => Err(CommandError::IdempotencyMismatch),
        }
    }

    /// Whether every stream read while deciding is still at the version read. Streams are
    /// read one after another, so a rejection decided from them could mix a stale read
    /// with a fresh one (a contract still DRAFT, a wallet already debited by its funding);
    /// a rejection stands only if nothing moved meanwhile.
    async fn reads_still_current(&self, reads: &Reads) -> Result<bool, CommandError> {
        let streams: Vec<&str> = reads.iter().map(|(s, _)| s.as_str()).collect();
        let heads = self.store().stream_versions(&streams).await?;
        Ok(reads
            .iter()
            .all(|(s, v)| heads.get(s).copied().unwrap_or(0) == *v))
    }

    /// The current state of a user, straight from its stream.
    pub async fn user(&self, id: UserId) -> Result<Versioned<User>, CommandError> {
        self.states.current(&StreamId::user(id)).await
    }

    /// The current state of a wallet, straight from its stream.
    pub async fn wallet(&self, id: WalletId) -> Result<Versioned<Wallet>, CommandError> {
        self.states.current(&StreamId::wallet(id)).await
    }

    /// The current state of a contract, straight from its stream.
    pub async fn contract(&self, id: ContractId) -> Result<Versioned<Contract>, CommandError> {
        self.states.current(&StreamId::contract(id)).await
    }

    /// The current state of a dispute, straight from its stream.
    pub async fn dispute(&self, id: DisputeId) -> Result<Versioned<Dispute>, CommandError> {
        self.states.current(&StreamId::dispute(id)).await
    }

    /// Finds the credentials of an e-mail address.
    pub async fn find_login(&self, email: &Email) -> Result<Option<LoginRecord>, CommandError> {
        let row: Option<(Uuid, String)> =
            sqlx::query_as("SELECT user_id, password_hash FROM credentials WHERE email = $1")
                .bind(email.as_str())
                .fetch_optional(self.store().pool())
                .await
                .map_err(StoreError::from)?;
        Ok(row.map(|(id, password_hash)| LoginRecord {
            user_id: UserId(id),
            password_hash,
        }))
    }
}

/// After a few conflicts on a hot stream, wait a little (growing, jittered, at most ~20 ms)
/// so that racing commands spread out instead of colliding again in lockstep.
async fn backoff(attempt: usize) {
    if attempt < 3 {
        tokio::task::yield_now().await;
        return;
    }
    let jitter = u64::from(Uuid::now_v7().as_bytes()[15] % 8);
    let ms = (attempt as u64).min(12) + jitter;
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}
