//! The command executor.
//!
//! Past 600 lines: commands, outcomes, planning and execution still share this file and
//! one `impl`; splitting them by concern (decide per command family, state loading, the
//! committer) is open issue 33, which this file waits for rather than a partial split.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use domain::codec::{decode, encode, DecodeError};
use domain::contract::{self, CreateContract, ResolveDispute};
use domain::stream::Aggregate;
use domain::user::{self, RegisterUser};
use domain::wallet::{self, Deposit, Transfer, Withdraw};
use domain::{
    Amount, Contract, ContractId, Currency, Dispute, DisputeId, DomainError, Email, Event, Role,
    StreamId, StreamWrite, Timestamp, TransactionId, User, UserId, Versioned, Wallet, WalletId,
};
use event_store::{append, EventStore, NewEvent, StoreError, StreamAppend};
use rust_decimal::Decimal;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use crate::cache::StateCache;
use crate::context::CommandContext;
use crate::CONFLICT_RETRIES_MAX;

/// Why a command did not take effect. Nothing was written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The domain refused the command.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Another account already uses this e-mail address.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// The `Idempotency-Key` was first used with a different request.
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    /// Conflicts persisted past [`CONFLICT_RETRIES_MAX`] retries.
    #[error("the affected accounts are too busy; retry the request")]
    Busy,
    /// A stored event could not be read back: a bug or a newer schema.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The database failed.
    #[error(transparent)]
    Store(StoreError),
    /// The database failed in a way that retrying later can fix (reported for a command
    /// whose group commit failed).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database failed in a way retrying will not fix (a group commit's failure).
    #[error("the database failed: {0}")]
    Internal(String),
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        CommandError::Store(e)
    }
}

/// A command the ledger can execute.
#[derive(Debug, Clone)]
pub enum Command {
    /// Create an account with its USD wallet.
    Register {
        /// The new user's id.
        user_id: UserId,
        /// Its normalised address.
        email: Email,
        /// The argon2id PHC string, stored outside the events.
        password_hash: String,
    },
    /// Money in.
    Deposit(Deposit),
    /// Money out.
    Withdraw(Withdraw),
    /// Money between two users.
    Transfer(Transfer),
    /// Give a user the arbiter or admin role.
    GrantRole {
        /// The user.
        user_id: UserId,
        /// The role.
        role: Role,
    },
    /// Suspend an account (an admin).
    SuspendUser {
        /// The user.
        user_id: UserId,
        /// Why.
        reason: domain::Description,
    },
    /// Lift an account's suspension (an admin).
    ReactivateUser {
        /// The user.
        user_id: UserId,
    },
    /// Draft an escrow contract.
    CreateContract(CreateContract),
    /// The buyer funds the contract: its price moves into escrow.
    FundContract {
        /// The contract.
        contract_id: ContractId,
        /// Who asks.
        actor: UserId,
        /// The movement's id.
        transaction_id: TransactionId,
    },
    /// The seller marks the contract delivered.
    DeliverContract {
        /// The contract.
        contract_id: ContractId,
        /// Who asks.
        actor: UserId,
        /// Now.
        now: Timestamp,
    },
    /// Pay held money to the seller (the buyer, or the system after the inspection window).
    ReleaseContract {
        /// The contract.
        contract_id: ContractId,
        /// Who asks.
        actor: domain::Actor,
        /// How much (everything held when absent); checked against the contract's currency.
        amount: Option<Decimal>,
        /// Now.
        now: Timestamp,
        /// The movement's id.
        transaction_id: TransactionId,
    },
    /// Return held money to the buyer (the seller).
    RefundContract {
        /// The contract.
        contract_id: ContractId,
        /// Who asks.
        actor: UserId,
        /// How much (everything held when absent).
        amount: Option<Decimal>,
        /// The movement's id.
        transaction_id: TransactionId,
    },
    /// Call off a draft.
    CancelContract {
        /// The contract.
        contract_id: ContractId,
        /// Who asks.
        actor: UserId,
    },
    /// A party disputes an active contract.
    RaiseDispute {
        /// The id minted for the dispute.
        dispute_id: DisputeId,
        /// The contract.
        contract_id: ContractId,
        /// Who asks.
        actor: UserId,
        /// What is wrong.
        description: String,
        /// Now.
        now: Timestamp,
    },
    /// An arbiter decides a dispute.
    ResolveDispute {
        /// The dispute.
        dispute_id: DisputeId,
        /// Who decides.
        actor: domain::Actor,
        /// The decision.
        decision: ResolveDispute,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Register { .. } => "RegisterUser",
            Command::Deposit(_) => "Deposit",
            Command::Withdraw(_) => "Withdraw",
            Command::Transfer(_) => "Transfer",
            Command::GrantRole { .. } => "GrantRole",
            Command::SuspendUser { .. } => "SuspendUser",
            Command::ReactivateUser { .. } => "ReactivateUser",
            Command::CreateContract(_) => "CreateContract",
            Command::FundContract { .. } => "FundContract",
            Command::DeliverContract { .. } => "DeliverContract",
            Command::ReleaseContract { .. } => "ReleaseContract",
            Command::RefundContract { .. } => "RefundContract",
            Command::CancelContract { .. } => "CancelContract",
            Command::RaiseDispute { .. } => "RaiseDispute",
            Command::ResolveDispute { .. } => "ResolveDispute",
        }
    }
}

/// A registered user.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The id.
    pub user_id: UserId,
    /// The normalised address.
    pub email: Email,
    /// Its role.
    pub role: Role,
    /// When the events were recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A user whose suspension changed.
#[derive(Debug, Clone)]
pub struct UserStatusChange {
    /// The id.
    pub user_id: UserId,
    /// The normalised address.
    pub email: Email,
    /// Its role.
    pub role: Role,
    /// Why it is suspended, while it is.
    pub suspended: Option<domain::Description>,
    /// When the events were recorded.
    pub recorded_at: DateTime<Utc>,
}

/// The effect of a money command on the caller's wallet.
#[derive(Debug, Clone)]
pub struct WalletChange {
    /// The movement.
    pub transaction_id: TransactionId,
    /// `DEPOSIT`, `WITHDRAWAL` or `TRANSFER`.
    pub kind: &'static str,
    /// Debited wallet, if any.
    pub from_wallet_id: Option<WalletId>,
    /// Credited wallet, if any.
    pub to_wallet_id: Option<WalletId>,
    /// How much.
    pub amount: Decimal,
    /// In which currency.
    pub currency: Currency,
    /// The statement text.
    pub description: Option<String>,
    /// The caller's wallet.
    pub wallet_id: WalletId,
    /// Its owner.
    pub user_id: UserId,
    /// Its balance right after the command.
    pub balance: Decimal,
    /// When the events were recorded.
    pub recorded_at: DateTime<Utc>,
}

/// What a successful command produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// From [`Command::Register`].
    Registered(Registered),
    /// From a money command.
    Wallet(WalletChange),
    /// From [`Command::GrantRole`].
    RoleGranted(Registered),
    /// From [`Command::SuspendUser`] and [`Command::ReactivateUser`].
    UserStatus(UserStatusChange),
    /// From a contract command: the contract as it is after the command.
    Contract(ContractChange),
    /// From a dispute command: the dispute and its contract after the command.
    Dispute(DisputeChange),
}

impl Outcome {
    /// Sets the time its events were recorded (the response shows the stored time, so a
    /// replay answers identically).
    pub(crate) fn set_recorded_at(&mut self, at: DateTime<Utc>) {
        match self {
            Outcome::Wallet(w) => w.recorded_at = at,
            Outcome::Registered(r) | Outcome::RoleGranted(r) => r.recorded_at = at,
            Outcome::UserStatus(u) => u.recorded_at = at,
            Outcome::Contract(c) => c.recorded_at = at,
            Outcome::Dispute(d) => d.recorded_at = at,
        }
    }
}

/// A contract after a command.
#[derive(Debug, Clone)]
pub struct ContractChange {
    /// The contract's state.
    pub contract: Contract,
    /// When the command's events were recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A dispute after a command.
#[derive(Debug, Clone)]
pub struct DisputeChange {
    /// The dispute's state.
    pub dispute: Dispute,
    /// Its contract's state.
    pub contract: Contract,
    /// When the command's events were recorded.
    pub recorded_at: DateTime<Utc>,
}

/// The answer to a command.
#[derive(Debug, Clone)]
pub enum Executed {
    /// The command ran now; its events end at `position`.
    Fresh {
        /// What it produced.
        outcome: Box<Outcome>,
        /// Global position of its last event.
        position: i64,
    },
    /// The same request was already executed under this `Idempotency-Key`: here is what
    /// was answered then.
    Replayed {
        /// The stored HTTP status.
        status: u16,
        /// The stored JSON body.
        body: Value,
    },
}

/// Login data kept outside the event stream.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    /// The user.
    pub user_id: UserId,
    /// The argon2id PHC string.
    pub password_hash: String,
}

/// Builds the HTTP response (status, body) for an outcome at a position, so that it can be
/// stored with the idempotency key in the command's own transaction.
pub type Respond = fn(&Outcome, i64) -> (u16, Value);

/// Loaded or resulting state of one stream, by aggregate type.
#[derive(Debug, Clone)]
pub(crate) enum State {
    User(Versioned<User>),
    Wallet(Versioned<Wallet>),
    Contract(Versioned<Contract>),
    Dispute(Versioned<Dispute>),
}

impl State {
    fn empty_for(stream: &StreamId) -> State {
        match stream.category() {
            "user" => State::User(Versioned::default()),
            "contract" => State::Contract(Versioned::default()),
            "dispute" => State::Dispute(Versioned::default()),
            _ => State::Wallet(Versioned::default()),
        }
    }

    fn apply(&mut self, e: &Event) {
        match self {
            State::User(v) => v.apply(e),
            State::Wallet(v) => v.apply(e),
            State::Contract(v) => v.apply(e),
            State::Dispute(v) => v.apply(e),
        }
    }

    pub(crate) fn version(&self) -> u64 {
        match self {
            State::User(v) => v.version,
            State::Wallet(v) => v.version,
            State::Contract(v) => v.version,
            State::Dispute(v) => v.version,
        }
    }
}

pub(crate) struct Plan {
    pub(crate) writes: Vec<StreamWrite>,
    pub(crate) credentials: Option<(UserId, Email, String)>,
    pub(crate) outcome: Outcome,
    /// The state of every written stream once the writes commit (for the cache).
    pub(crate) after: Vec<(StreamId, State)>,
}

/// States decided earlier in the same group commit, by stream: later commands of the batch
/// are decided on top of them.
pub(crate) type Overlay = HashMap<String, State>;

/// How a plan reads its streams.
#[derive(Clone, Copy, Default)]
pub(crate) struct Planning<'a> {
    /// Read every stream's tail even when its state is cached (a retry, or a decision
    /// inside the committer). Otherwise cached state is used as is: the committer checks
    /// every version read against the streams' heads before anything is written.
    pub(crate) fresh: bool,
    /// States of this group commit, used before anything else.
    pub(crate) overlay: Option<&'a Overlay>,
}

/// Picks one aggregate's state out of a [`State`].
pub(crate) trait FromState: Sized {
    fn from_state(s: &State) -> Option<Versioned<Self>>;
}

macro_rules! from_state {
    ($ty:ty, $variant:ident) => {
        impl FromState for $ty {
            fn from_state(s: &State) -> Option<Versioned<Self>> {
                match s {
                    State::$variant(v) => Some(v.clone()),
                    _ => None,
                }
            }
        }
    };
}
from_state!(User, User);
from_state!(Wallet, Wallet);
from_state!(Contract, Contract);
from_state!(Dispute, Dispute);

enum CommitError {
    Conflict,
    IdempotencyRace,
    Failed(CommandError),
}

/// Told about every executed command and every append (metrics live outside this crate).
pub trait Observer: Send + Sync {
    /// A command finished: its name, its outcome (`ok`, `replayed`, a domain error code,
    /// `busy`, `idempotency_mismatch`, `email_taken`, `error`), how long it took in seconds,
    /// and how many times it was decided.
    fn command(&self, command: &'static str, outcome: &str, seconds: f64, attempts: u32);
    /// One append transaction committed: how many commands, streams and events it held.
    fn append(&self, commands: usize, streams: usize, events: usize);
    /// The events of a transaction that just committed: `(position, stream, version)`.
    fn committed(&self, _events: &[(i64, &str, i64)]) {}
}

/// The write side of the ledger: decides commands and commits them in groups (see
/// `group.rs`). Its queries (`user`, `wallet`, …) are those of [`LedgerCore`].
pub struct Ledger {
    core: Arc<LedgerCore>,
    /// The group committer of this process, started on the first command.
    committer: OnceLock<mpsc::Sender<crate::group::Submission>>,
}

/// The ledger's state and its decisions; the committer task shares it.
pub struct LedgerCore {
    pub(crate) store: EventStore,
    pub(crate) users: StateCache<User>,
    pub(crate) wallets: StateCache<Wallet>,
    pub(crate) contracts: StateCache<Contract>,
    pub(crate) disputes: StateCache<Dispute>,
    pub(crate) observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("store", &self.core.store)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Ledger {
    type Target = LedgerCore;

    fn deref(&self) -> &LedgerCore {
        &self.core
    }
}

impl Ledger {
    /// A ledger writing to `store`.
    pub fn new(store: EventStore) -> Self {
        Self {
            core: Arc::new(LedgerCore {
                store,
                users: StateCache::new(),
                wallets: StateCache::new(),
                contracts: StateCache::new(),
                disputes: StateCache::new(),
                observer: None,
            }),
            committer: OnceLock::new(),
        }
    }

    /// The same ledger, reporting commands and appends to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        if let Some(core) = Arc::get_mut(&mut self.core) {
            core.observer = Some(observer);
        }
        self
    }

    fn committer(&self) -> &mpsc::Sender<crate::group::Submission> {
        self.committer.get_or_init(|| {
            let (tx, rx) = mpsc::channel(crate::group::QUEUED_COMMANDS_MAX);
            let core = self.core.clone();
            // The committer runs on a thread of its own, in a runtime of its own, on a
            // connection of its own (see `group::run`): the answer to its statement then
            // wakes it at once, where on the shared runtime it waited behind the HTTP tasks
            // queued on both workers. Measured with `bench/cpu.sh transfers 64 25`, three
            // alternating pairs: 6,086 / 5,867 / 5,842 against 5,757 / 5,696 / 5,750
            // commands/s, the statement's round trip 3.9 against 4.4 ms (docs/performance.md).
            let spawned = std::thread::Builder::new()
                .name("escrow-committer".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(crate::group::run(core, rx)),
                        // Commands then fail as the closed queue says ("unavailable").
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start the committer's runtime")
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the committer's thread");
            }
            tx
        })
    }

    /// Executes a command: decides from fresh state, appends atomically, retries conflicts,
    /// honours the context's idempotency key. `respond` renders the response stored with
    /// the key.
    ///
    /// Runs in a `command` span carrying the command's name, request id and correlation id
    /// (so every log line below it names the request), and reports to the observer.
    pub async fn execute(
        &self,
        ctx: &CommandContext,
        cmd: Command,
        respond: Respond,
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
        let result =
            Box::pin(
                self.core
                    .decide_and_commit(ctx, cmd, respond, &attempts, self.committer()),
            )
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(Executed::Fresh { .. }) => "ok",
            Ok(Executed::Replayed { .. }) => "replayed",
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
        if let Err(
            e @ (CommandError::Decode(_)
            | CommandError::Store(_)
            | CommandError::Unavailable(_)
            | CommandError::Internal(_)),
        ) = &result
        {
            span.in_scope(|| tracing::error!(error = %e, seconds, "command failed"));
        } else {
            span.in_scope(|| tracing::debug!(seconds, "command finished"));
        }
        if let Some(o) = &self.observer {
            o.command(name, outcome, seconds, attempts);
        }
        result
    }
}

impl LedgerCore {
    /// The event store.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    async fn decide_and_commit(
        &self,
        ctx: &CommandContext,
        cmd: Command,
        respond: Respond,
        attempts: &AtomicU32,
        committer: &mpsc::Sender<crate::group::Submission>,
    ) -> Result<Executed, CommandError> {
        for attempt in 0..CONFLICT_RETRIES_MAX {
            attempts.fetch_add(1, Ordering::Relaxed);
            let mut reads = Vec::with_capacity(4);
            // The first attempt decides from cached state; the committer checks every
            // version read against the streams' heads. Retries read the streams' tails.
            let how = Planning {
                fresh: attempt > 0,
                overlay: None,
            };
            let mut plan = match self.plan(&cmd, &mut reads, how).await {
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
                // A registration commits alone, so a taken e-mail fails only itself.
                if let Some(done) = self.replay_idempotent(ctx).await? {
                    return Ok(done);
                }
                match self.commit(ctx, cmd.name(), &mut plan, respond).await {
                    Ok(position) => {
                        self.remember(&plan.after);
                        return Ok(Executed::Fresh {
                            outcome: Box::new(plan.outcome),
                            position,
                        });
                    }
                    Err(CommitError::Conflict) => {
                        tracing::debug!(attempt, "version conflict, retrying");
                        backoff(attempt).await;
                        continue;
                    }
                    Err(CommitError::IdempotencyRace) => {
                        return self
                            .replay_idempotent(ctx)
                            .await?
                            .ok_or(CommandError::IdempotencyMismatch);
                    }
                    Err(CommitError::Failed(e)) => return Err(e),
                }
            }
            let (reply, answer) = oneshot::channel();
            let submission = crate::group::Submission {
                metadata: ctx.metadata(cmd.name()),
                idempotency: ctx.idempotency.clone(),
                cmd: cmd.clone(),
                reads,
                plan,
                respond,
                reply,
            };
            if committer.send(submission).await.is_err() {
                return Err(CommandError::Unavailable(
                    "the committer has stopped".into(),
                ));
            }
            match answer.await {
                Ok(crate::group::Batched::Committed { position, outcome }) => {
                    return Ok(Executed::Fresh { outcome, position })
                }
                Ok(crate::group::Batched::Replayed { status, body }) => {
                    return Ok(Executed::Replayed { status, body })
                }
                Ok(crate::group::Batched::IdempotencyMismatch) => {
                    return Err(CommandError::IdempotencyMismatch)
                }
                Ok(crate::group::Batched::Conflict) => {
                    tracing::debug!(attempt, "decided from a moved state, retrying");
                    backoff(attempt).await;
                }
                Ok(crate::group::Batched::Failed { transient, message }) => {
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

    /// Keeps committed states in the caches.
    pub(crate) fn remember(&self, after: &[(StreamId, State)]) {
        for (stream, state) in after {
            let k = stream.as_str();
            match state {
                State::User(v) => self.users.put(k, v),
                State::Wallet(v) => self.wallets.put(k, v),
                State::Contract(v) => self.contracts.put(k, v),
                State::Dispute(v) => self.disputes.put(k, v),
            }
        }
    }

    async fn replay_idempotent(
        &self,
        ctx: &CommandContext,
    ) -> Result<Option<Executed>, CommandError> {
        let Some(rec) = &ctx.idempotency else {
            return Ok(None);
        };
        match self.store.find_idempotent(&rec.scope, &rec.key).await? {
            None => Ok(None),
            Some(stored) if stored.request_hash == rec.request_hash => {
                Ok(Some(Executed::Replayed {
                    status: u16::try_from(stored.status).unwrap_or(200),
                    body: stored.body,
                }))
            }
            Some(_) => Err(CommandError::IdempotencyMismatch),
        }
    }

    async fn commit(
        &self,
        ctx: &CommandContext,
        name: &str,
        plan: &mut Plan,
        respond: Respond,
    ) -> Result<i64, CommitError> {
        let fail = |e: StoreError| match e {
            StoreError::Conflict { .. } => CommitError::Conflict,
            // A deadlock or serialization failure is a race like a version conflict: decide
            // again from fresh state rather than failing the client.
            StoreError::Database(sqlx::Error::Database(ref db))
                if matches!(db.code().as_deref(), Some("40P01") | Some("40001")) =>
            {
                CommitError::Conflict
            }
            StoreError::UniqueViolation { constraint } if constraint == "credentials_email_key" => {
                CommitError::Failed(CommandError::EmailTaken)
            }
            StoreError::UniqueViolation { constraint } if constraint == "idempotency_keys_pkey" => {
                CommitError::IdempotencyRace
            }
            other => CommitError::Failed(CommandError::Store(other)),
        };
        let metadata = ctx.metadata(name);
        let appends = stream_appends(&plan.writes, &metadata, Uuid::now_v7);

        let mut tx = self.store.begin().await.map_err(fail)?;
        if let Some((user_id, email, hash)) = &plan.credentials {
            sqlx::query(
                "INSERT INTO credentials (user_id, email, password_hash) VALUES ($1, $2, $3)",
            )
            .bind(user_id.0)
            .bind(email.as_str())
            .bind(hash)
            .execute(&mut *tx)
            .await
            .map_err(|e| fail(e.into()))?;
        }
        let recorded = append(&mut tx, &appends).await.map_err(fail)?;
        let position = recorded.iter().map(|e| e.position).max().unwrap_or(0);
        if let Some(first) = recorded.first() {
            // The response shows the stored time, so a replay answers identically.
            plan.outcome.set_recorded_at(first.recorded_at);
        }
        if let Some(rec) = &ctx.idempotency {
            let (status, body) = respond(&plan.outcome, position);
            rec.save(&mut tx, status as i16, &body)
                .await
                .map_err(fail)?;
        }
        tx.commit().await.map_err(|e| fail(e.into()))?;
        if let Some(o) = &self.observer {
            o.append(1, appends.len(), recorded.len());
            let committed: Vec<(i64, &str, i64)> = recorded
                .iter()
                .map(|e| (e.position, e.stream_id.as_str(), e.version))
                .collect();
            o.committed(&committed);
        }
        Ok(position)
    }

    /// Loads a stream and remembers which version was read, so a rejection can be checked
    /// against a consistent view (see [`Ledger::reads_still_current`]).
    async fn load_tracked<T: Aggregate + Clone + FromState>(
        &self,
        cache: &StateCache<T>,
        stream: &StreamId,
        reads: &mut Vec<(String, i64)>,
        how: Planning<'_>,
    ) -> Result<Versioned<T>, CommandError> {
        let v = self.load_with(cache, stream, how).await?;
        reads.push((stream.as_str().to_owned(), v.version as i64));
        Ok(v)
    }

    /// Loads a contract and the wallet (in the contract's currency) of one of its parties.
    async fn contract_and_party_wallet(
        &self,
        id: ContractId,
        party: fn(&Contract) -> Option<UserId>,
        reads: &mut Vec<(String, i64)>,
        how: Planning<'_>,
    ) -> Result<(Versioned<Contract>, WalletId, Versioned<Wallet>), CommandError> {
        let c = self
            .load_tracked(&self.contracts, &StreamId::contract(id), reads, how)
            .await?;
        let owner = party(&c.state).ok_or(DomainError::ContractNotFound)?;
        let wallet_id = WalletId::of(owner, c.state.currency.unwrap_or(Currency::USD));
        let w = self
            .load_tracked(&self.wallets, &StreamId::wallet(wallet_id), reads, how)
            .await?;
        Ok((c, wallet_id, w))
    }

    /// Whether every stream read while planning is still at the version read. Streams are
    /// read one after another, so a rejection decided from them could mix a stale read
    /// with a fresh one (a contract still DRAFT, a wallet already debited by its funding);
    /// a rejection stands only if nothing moved meanwhile.
    async fn reads_still_current(&self, reads: &[(String, i64)]) -> Result<bool, CommandError> {
        let streams: Vec<&str> = reads.iter().map(|(s, _)| s.as_str()).collect();
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT s.stream_id, e.version FROM UNNEST($1::text[]) AS s(stream_id) \
             CROSS JOIN LATERAL (SELECT version FROM events WHERE stream_id = s.stream_id \
                                 ORDER BY version DESC LIMIT 1) e",
        )
        .bind(&streams)
        .fetch_all(self.store.pool())
        .await
        .map_err(StoreError::from)?;
        Ok(reads
            .iter()
            .all(|(s, v)| rows.iter().find(|(r, _)| r == s).map_or(0, |(_, rv)| *rv) == *v))
    }

    /// A stream's state for a decision: this group commit's state of it, else the cached
    /// state (unless `how.fresh`), else the cached state brought up to date from the store.
    async fn load_with<T: Aggregate + Clone + FromState>(
        &self,
        cache: &StateCache<T>,
        stream: &StreamId,
        how: Planning<'_>,
    ) -> Result<Versioned<T>, CommandError> {
        if let Some(state) = how
            .overlay
            .and_then(|o| o.get(stream.as_str()))
            .and_then(T::from_state)
        {
            return Ok(state);
        }
        if !how.fresh {
            let cached = cache.get(stream.as_str());
            if cached.version > 0 {
                return Ok(cached);
            }
        }
        self.load(cache, stream).await
    }

    async fn load<T: Aggregate + Clone>(
        &self,
        cache: &StateCache<T>,
        stream: &StreamId,
    ) -> Result<Versioned<T>, CommandError> {
        let mut state = cache.get(stream.as_str());
        let tail = self
            .store
            .read_stream(stream.as_str(), state.version as i64)
            .await?;
        for e in &tail {
            debug_assert_eq!(
                e.version as u64,
                state.version + 1,
                "stream versions must be contiguous"
            );
            state.apply(&decode(&e.event_type, e.schema_version, &e.data)?);
        }
        if !tail.is_empty() {
            cache.put(stream.as_str(), &state);
        }
        Ok(state)
    }

    /// The current state of a user, straight from its stream.
    pub async fn user(&self, id: UserId) -> Result<Versioned<User>, CommandError> {
        self.load(&self.users, &StreamId::user(id)).await
    }

    /// The current state of a wallet, straight from its stream.
    pub async fn wallet(&self, id: WalletId) -> Result<Versioned<Wallet>, CommandError> {
        self.load(&self.wallets, &StreamId::wallet(id)).await
    }

    /// The current state of a contract, straight from its stream.
    pub async fn contract(&self, id: ContractId) -> Result<Versioned<Contract>, CommandError> {
        self.load(&self.contracts, &StreamId::contract(id)).await
    }

    /// The current state of a dispute, straight from its stream.
    pub async fn dispute(&self, id: DisputeId) -> Result<Versioned<Dispute>, CommandError> {
        self.load(&self.disputes, &StreamId::dispute(id)).await
    }

    /// Finds the credentials of an e-mail address.
    pub async fn find_login(&self, email: &Email) -> Result<Option<LoginRecord>, CommandError> {
        let row: Option<(Uuid, String)> =
            sqlx::query_as("SELECT user_id, password_hash FROM credentials WHERE email = $1")
                .bind(email.as_str())
                .fetch_optional(self.store.pool())
                .await
                .map_err(StoreError::from)?;
        Ok(row.map(|(id, password_hash)| LoginRecord {
            user_id: UserId(id),
            password_hash,
        }))
    }

    pub(crate) async fn plan(
        &self,
        cmd: &Command,
        reads: &mut Vec<(String, i64)>,
        how: Planning<'_>,
    ) -> Result<Plan, CommandError> {
        match cmd {
            Command::Register {
                user_id,
                email,
                password_hash,
            } => {
                let current = self
                    .load_tracked(&self.users, &StreamId::user(*user_id), reads, how)
                    .await?;
                let writes = user::register(
                    &current,
                    &RegisterUser {
                        user_id: *user_id,
                        email: email.clone(),
                    },
                )?;
                Ok(Plan {
                    after: after_states(
                        &writes,
                        vec![(StreamId::user(*user_id), State::User(current.clone()))],
                    ),
                    writes,
                    credentials: Some((*user_id, email.clone(), password_hash.clone())),
                    outcome: Outcome::Registered(Registered {
                        user_id: *user_id,
                        email: email.clone(),
                        role: Role::User,
                        recorded_at: Utc::now(),
                    }),
                })
            }
            Command::GrantRole { user_id, role } => {
                let current = self
                    .load_tracked(&self.users, &StreamId::user(*user_id), reads, how)
                    .await?;
                let writes = user::grant_role(&current, *role)?;
                Ok(Plan {
                    after: after_states(
                        &writes,
                        vec![(StreamId::user(*user_id), State::User(current.clone()))],
                    ),
                    writes,
                    credentials: None,
                    outcome: Outcome::RoleGranted(Registered {
                        user_id: *user_id,
                        email: current
                            .state
                            .email
                            .clone()
                            .ok_or(DomainError::UnknownUser)?,
                        role: *role,
                        recorded_at: Utc::now(),
                    }),
                })
            }
            Command::SuspendUser { user_id, .. } | Command::ReactivateUser { user_id } => {
                let current = self
                    .load_tracked(&self.users, &StreamId::user(*user_id), reads, how)
                    .await?;
                let writes = match cmd {
                    Command::SuspendUser { reason, .. } => user::suspend(&current, reason)?,
                    _ => user::reactivate(&current)?,
                };
                let after = after_states(
                    &writes,
                    vec![(StreamId::user(*user_id), State::User(current.clone()))],
                );
                let mut changed = current.state.clone();
                writes
                    .iter()
                    .flat_map(|w| &w.events)
                    .for_each(|e| domain::stream::Aggregate::apply(&mut changed, e));
                Ok(Plan {
                    after,
                    writes,
                    credentials: None,
                    outcome: Outcome::UserStatus(UserStatusChange {
                        user_id: *user_id,
                        email: changed.email.clone().ok_or(DomainError::UnknownUser)?,
                        role: changed.role,
                        suspended: changed.suspended,
                        recorded_at: Utc::now(),
                    }),
                })
            }
            Command::Deposit(d) => {
                let wallet_id = WalletId::of(d.user_id, d.currency);
                let owner = self
                    .load_tracked(&self.users, &StreamId::user(d.user_id), reads, how)
                    .await?;
                let w = self
                    .load_tracked(&self.wallets, &StreamId::wallet(wallet_id), reads, how)
                    .await?;
                let writes = wallet::deposit(&owner, &w, d)?;
                let after = after_states(
                    &writes,
                    vec![(StreamId::wallet(wallet_id), State::Wallet(w))],
                );
                wallet_plan(
                    writes,
                    after,
                    wallet_id,
                    d.user_id,
                    d.currency,
                    "DEPOSIT",
                    None,
                    Some(wallet_id),
                    d.transaction_id,
                    d.amount.value(),
                    d.description.as_ref().map(|s| s.as_str().to_owned()),
                )
            }
            Command::Withdraw(d) => {
                let wallet_id = WalletId::of(d.user_id, d.currency);
                let w = self
                    .load_tracked(&self.wallets, &StreamId::wallet(wallet_id), reads, how)
                    .await?;
                let writes = wallet::withdraw(&w, d)?;
                let after = after_states(
                    &writes,
                    vec![(StreamId::wallet(wallet_id), State::Wallet(w))],
                );
                wallet_plan(
                    writes,
                    after,
                    wallet_id,
                    d.user_id,
                    d.currency,
                    "WITHDRAWAL",
                    Some(wallet_id),
                    None,
                    d.transaction_id,
                    d.amount.value(),
                    d.description.as_ref().map(|s| s.as_str().to_owned()),
                )
            }
            Command::Transfer(t) => {
                let from = WalletId::of(t.from_user_id, t.currency);
                let to = WalletId::of(t.to_user_id, t.currency);
                if from == to {
                    return Err(DomainError::SelfTransfer.into());
                }
                let payer = self
                    .load_tracked(&self.wallets, &StreamId::wallet(from), reads, how)
                    .await?;
                let payee = self
                    .load_tracked(&self.users, &StreamId::user(t.to_user_id), reads, how)
                    .await?;
                let payee_wallet = self
                    .load_tracked(&self.wallets, &StreamId::wallet(to), reads, how)
                    .await?;
                let writes = wallet::transfer(&payer, &payee, &payee_wallet, t)?;
                let after = after_states(
                    &writes,
                    vec![
                        (StreamId::wallet(from), State::Wallet(payer)),
                        (StreamId::wallet(to), State::Wallet(payee_wallet)),
                    ],
                );
                wallet_plan(
                    writes,
                    after,
                    from,
                    t.from_user_id,
                    t.currency,
                    "TRANSFER",
                    Some(from),
                    Some(to),
                    t.transaction_id,
                    t.amount.value(),
                    t.description.as_ref().map(|s| s.as_str().to_owned()),
                )
            }
            Command::CreateContract(c) => {
                let existing = self
                    .load_tracked(
                        &self.contracts,
                        &StreamId::contract(c.contract_id),
                        reads,
                        how,
                    )
                    .await?;
                let buyer = self
                    .load_tracked(&self.users, &StreamId::user(c.buyer_id), reads, how)
                    .await?;
                let seller = self
                    .load_tracked(&self.users, &StreamId::user(c.seller_id), reads, how)
                    .await?;
                let writes = contract::create(&existing, &buyer, &seller, c)?;
                Ok(contract_plan(writes, vec![], c.contract_id))
            }
            Command::FundContract {
                contract_id,
                actor,
                transaction_id,
            } => {
                let (c, wallet_id, w) = self
                    .contract_and_party_wallet(*contract_id, |c| c.buyer, reads, how)
                    .await?;
                let writes = contract::fund(&c, &w, *actor, *transaction_id)?;
                Ok(contract_plan(
                    writes,
                    with_wallet(*contract_id, c, wallet_id, w),
                    *contract_id,
                ))
            }
            Command::DeliverContract {
                contract_id,
                actor,
                now,
            } => {
                let c = self
                    .load_tracked(
                        &self.contracts,
                        &StreamId::contract(*contract_id),
                        reads,
                        how,
                    )
                    .await?;
                let writes = contract::deliver(&c, *actor, *now)?;
                Ok(contract_plan(
                    writes,
                    vec![(StreamId::contract(*contract_id), State::Contract(c))],
                    *contract_id,
                ))
            }
            Command::ReleaseContract {
                contract_id,
                actor,
                amount,
                now,
                transaction_id,
            } => {
                let (c, wallet_id, w) = self
                    .contract_and_party_wallet(*contract_id, |c| c.seller, reads, how)
                    .await?;
                let amount = payout(*amount, &c.state)?;
                let writes = contract::release(&c, &w, *actor, amount, *now, *transaction_id)?;
                Ok(contract_plan(
                    writes,
                    with_wallet(*contract_id, c, wallet_id, w),
                    *contract_id,
                ))
            }
            Command::RefundContract {
                contract_id,
                actor,
                amount,
                transaction_id,
            } => {
                let (c, wallet_id, w) = self
                    .contract_and_party_wallet(*contract_id, |c| c.buyer, reads, how)
                    .await?;
                let amount = payout(*amount, &c.state)?;
                let writes = contract::refund(&c, &w, *actor, amount, *transaction_id)?;
                Ok(contract_plan(
                    writes,
                    with_wallet(*contract_id, c, wallet_id, w),
                    *contract_id,
                ))
            }
            Command::CancelContract { contract_id, actor } => {
                let c = self
                    .load_tracked(
                        &self.contracts,
                        &StreamId::contract(*contract_id),
                        reads,
                        how,
                    )
                    .await?;
                let writes = contract::cancel(&c, *actor)?;
                Ok(contract_plan(
                    writes,
                    vec![(StreamId::contract(*contract_id), State::Contract(c))],
                    *contract_id,
                ))
            }
            Command::RaiseDispute {
                dispute_id,
                contract_id,
                actor,
                description,
                now,
            } => {
                let c = self
                    .load_tracked(
                        &self.contracts,
                        &StreamId::contract(*contract_id),
                        reads,
                        how,
                    )
                    .await?;
                let writes = contract::raise_dispute(&c, *dispute_id, *actor, description, *now)?;
                let contract_state = c.state.clone();
                Ok(dispute_plan(
                    writes,
                    vec![(StreamId::contract(*contract_id), State::Contract(c))],
                    *dispute_id,
                    contract_state,
                ))
            }
            Command::ResolveDispute {
                dispute_id,
                actor,
                decision,
            } => {
                let d = self
                    .load_tracked(&self.disputes, &StreamId::dispute(*dispute_id), reads, how)
                    .await?;
                let contract_id = d.state.contract_id.ok_or(DomainError::DisputeNotFound)?;
                let c = self
                    .load_tracked(
                        &self.contracts,
                        &StreamId::contract(contract_id),
                        reads,
                        how,
                    )
                    .await?;
                let currency = c.state.currency.unwrap_or(Currency::USD);
                let seller = c.state.seller.ok_or(DomainError::ContractNotFound)?;
                let buyer = c.state.buyer.ok_or(DomainError::ContractNotFound)?;
                let (sw_id, bw_id) = (
                    WalletId::of(seller, currency),
                    WalletId::of(buyer, currency),
                );
                let sw = self
                    .load_tracked(&self.wallets, &StreamId::wallet(sw_id), reads, how)
                    .await?;
                let bw = self
                    .load_tracked(&self.wallets, &StreamId::wallet(bw_id), reads, how)
                    .await?;
                let writes = contract::resolve_dispute(&d, &c, &sw, &bw, *actor, decision)?;
                let contract_state = c.state.clone();
                let loaded = vec![
                    (StreamId::dispute(*dispute_id), State::Dispute(d)),
                    (StreamId::contract(contract_id), State::Contract(c)),
                    (StreamId::wallet(sw_id), State::Wallet(sw)),
                    (StreamId::wallet(bw_id), State::Wallet(bw)),
                ];
                Ok(dispute_plan(writes, loaded, *dispute_id, contract_state))
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn wallet_plan(
    writes: Vec<StreamWrite>,
    after: Vec<(StreamId, State)>,
    wallet_id: WalletId,
    user_id: UserId,
    currency: Currency,
    kind: &'static str,
    from_wallet_id: Option<WalletId>,
    to_wallet_id: Option<WalletId>,
    transaction_id: TransactionId,
    amount: Decimal,
    description: Option<String>,
) -> Result<Plan, CommandError> {
    let subject = StreamId::wallet(wallet_id);
    let balance = after
        .iter()
        .find_map(|(k, s)| match s {
            State::Wallet(v) if *k == subject => Some(v.state.balance),
            _ => None,
        })
        .unwrap_or_default();
    Ok(Plan {
        writes,
        credentials: None,
        after,
        outcome: Outcome::Wallet(WalletChange {
            transaction_id,
            kind,
            from_wallet_id,
            to_wallet_id,
            amount,
            currency,
            description,
            wallet_id,
            user_id,
            balance,
            recorded_at: Utc::now(),
        }),
    })
}

/// The state each written stream will have once the writes commit: the loaded state the
/// decision was based on (matched by stream), plus the new events.
fn after_states(writes: &[StreamWrite], loaded: Vec<(StreamId, State)>) -> Vec<(StreamId, State)> {
    writes
        .iter()
        .map(|w| {
            let mut state = loaded
                .iter()
                .find(|(s, _)| *s == w.stream)
                .map_or_else(|| State::empty_for(&w.stream), |(_, st)| st.clone());
            debug_assert_eq!(
                state.version(),
                w.expected_version,
                "decided from the loaded version"
            );
            for e in &w.events {
                state.apply(e);
            }
            (w.stream.clone(), state)
        })
        .collect()
}

fn contract_after(after: &[(StreamId, State)], id: ContractId) -> Contract {
    let key = StreamId::contract(id);
    after
        .iter()
        .find_map(|(k, s)| match s {
            State::Contract(v) if *k == key => Some(v.state.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn dispute_after(after: &[(StreamId, State)], id: DisputeId) -> Dispute {
    let key = StreamId::dispute(id);
    after
        .iter()
        .find_map(|(k, s)| match s {
            State::Dispute(v) if *k == key => Some(v.state.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The loaded states of a contract and one wallet, for [`after_states`].
fn with_wallet(
    id: ContractId,
    c: Versioned<Contract>,
    wallet_id: WalletId,
    w: Versioned<Wallet>,
) -> Vec<(StreamId, State)> {
    vec![
        (StreamId::contract(id), State::Contract(c)),
        (StreamId::wallet(wallet_id), State::Wallet(w)),
    ]
}

fn contract_plan(writes: Vec<StreamWrite>, loaded: Vec<(StreamId, State)>, id: ContractId) -> Plan {
    let after = after_states(&writes, loaded);
    Plan {
        outcome: Outcome::Contract(ContractChange {
            contract: contract_after(&after, id),
            recorded_at: Utc::now(),
        }),
        writes,
        credentials: None,
        after,
    }
}

fn dispute_plan(
    writes: Vec<StreamWrite>,
    loaded: Vec<(StreamId, State)>,
    id: DisputeId,
    contract: Contract,
) -> Plan {
    let after = after_states(&writes, loaded);
    let contract = contract
        .id
        .map_or(contract.clone(), |cid| contract_after(&after, cid));
    Plan {
        outcome: Outcome::Dispute(DisputeChange {
            dispute: dispute_after(&after, id),
            contract,
            recorded_at: Utc::now(),
        }),
        writes,
        credentials: None,
        after,
    }
}

/// Checks an optional payout amount against the contract's currency.
fn payout(amount: Option<Decimal>, c: &Contract) -> Result<Option<Amount>, DomainError> {
    match amount {
        None => Ok(None),
        Some(d) => Ok(Some(Amount::new(d, c.currency.unwrap_or(Currency::USD))?)),
    }
}

/// The event types that carry money, for readers that only need those.
pub fn is_money_event(e: &Event) -> bool {
    matches!(
        e,
        Event::FundsDeposited { .. }
            | Event::FundsWithdrawn { .. }
            | Event::TransferSent { .. }
            | Event::TransferReceived { .. }
    )
}

/// The store's form of a plan's writes: each event encoded, with an id from `next_id` and
/// the command's metadata.
pub(crate) fn stream_appends(
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
                    let (event_type, schema_version, data) = encode(e);
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
