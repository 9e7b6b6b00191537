//! The command executor.

use chrono::{DateTime, Utc};
use domain::codec::{decode, encode, DecodeError};
use domain::stream::Aggregate;
use domain::user::{self, RegisterUser};
use domain::wallet::{self, Deposit, Transfer, Withdraw};
use domain::{
    Currency, DomainError, Email, Event, Role, StreamId, StreamWrite, TransactionId, User, UserId,
    Versioned, Wallet, WalletId,
};
use event_store::{append, EventStore, NewEvent, StoreError, StreamAppend};
use rust_decimal::Decimal;
use serde_json::Value;
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
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Register { .. } => "RegisterUser",
            Command::Deposit(_) => "Deposit",
            Command::Withdraw(_) => "Withdraw",
            Command::Transfer(_) => "Transfer",
            Command::GrantRole { .. } => "GrantRole",
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
}

/// The answer to a command.
#[derive(Debug, Clone)]
pub enum Executed {
    /// The command ran now; its events end at `position`.
    Fresh {
        /// What it produced.
        outcome: Outcome,
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
pub type Respond<'a> = &'a (dyn Fn(&Outcome, i64) -> (u16, Value) + Send + Sync);

enum CachedState {
    User(String, Versioned<User>),
    Wallet(String, Versioned<Wallet>),
}

struct Plan {
    writes: Vec<StreamWrite>,
    credentials: Option<(UserId, Email, String)>,
    outcome: Outcome,
    after: Vec<CachedState>,
}

enum CommitError {
    Conflict,
    IdempotencyRace,
    Failed(CommandError),
}

/// The write side of the ledger.
#[derive(Debug)]
pub struct Ledger {
    store: EventStore,
    users: StateCache<User>,
    wallets: StateCache<Wallet>,
}

impl Ledger {
    /// A ledger writing to `store`.
    pub fn new(store: EventStore) -> Self {
        Self {
            store,
            users: StateCache::new(),
            wallets: StateCache::new(),
        }
    }

    /// The event store.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Executes a command: decides from fresh state, appends atomically, retries conflicts,
    /// honours the context's idempotency key. `respond` renders the response stored with
    /// the key.
    pub async fn execute(
        &self,
        ctx: &CommandContext,
        cmd: Command,
        respond: Respond<'_>,
    ) -> Result<Executed, CommandError> {
        if let Some(done) = self.replay_idempotent(ctx).await? {
            return Ok(done);
        }
        for attempt in 0..CONFLICT_RETRIES_MAX {
            let plan = self.plan(&cmd).await?;
            let mut plan = plan;
            match self.commit(ctx, cmd.name(), &mut plan, respond).await {
                Ok(position) => {
                    for s in plan.after {
                        match s {
                            CachedState::User(k, v) => self.users.put(&k, &v),
                            CachedState::Wallet(k, v) => self.wallets.put(&k, &v),
                        }
                    }
                    return Ok(Executed::Fresh {
                        outcome: plan.outcome,
                        position,
                    });
                }
                Err(CommitError::Conflict) => {
                    tracing::debug!(attempt, command = cmd.name(), "version conflict, retrying");
                    // Let the winner's siblings finish before we re-read.
                    if attempt > 4 {
                        tokio::task::yield_now().await;
                    }
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
        Err(CommandError::Busy)
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
        respond: Respond<'_>,
    ) -> Result<i64, CommitError> {
        let fail = |e: StoreError| match e {
            StoreError::Conflict { .. } => CommitError::Conflict,
            StoreError::UniqueViolation { constraint } if constraint == "credentials_email_key" => {
                CommitError::Failed(CommandError::EmailTaken)
            }
            StoreError::UniqueViolation { constraint } if constraint == "idempotency_keys_pkey" => {
                CommitError::IdempotencyRace
            }
            other => CommitError::Failed(CommandError::Store(other)),
        };
        let metadata = ctx.metadata(name);
        let appends: Vec<StreamAppend> = plan
            .writes
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
                            event_id: Uuid::now_v7(),
                            event_type: event_type.to_owned(),
                            schema_version,
                            data,
                            metadata: metadata.clone(),
                        }
                    })
                    .collect(),
            })
            .collect();

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
        let position = recorded.last().map_or(0, |e| e.position);
        if let Some(first) = recorded.first() {
            // The response shows the stored time, so a replay answers identically.
            match &mut plan.outcome {
                Outcome::Wallet(w) => w.recorded_at = first.recorded_at,
                Outcome::Registered(r) | Outcome::RoleGranted(r) => {
                    r.recorded_at = first.recorded_at
                }
            }
        }
        if let Some(rec) = &ctx.idempotency {
            let (status, body) = respond(&plan.outcome, position);
            rec.save(&mut tx, status as i16, &body)
                .await
                .map_err(fail)?;
        }
        tx.commit().await.map_err(|e| fail(e.into()))?;
        Ok(position)
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

    async fn plan(&self, cmd: &Command) -> Result<Plan, CommandError> {
        match cmd {
            Command::Register {
                user_id,
                email,
                password_hash,
            } => {
                let current = self.user(*user_id).await?;
                let writes = user::register(
                    &current,
                    &RegisterUser {
                        user_id: *user_id,
                        email: email.clone(),
                    },
                )?;
                Ok(Plan {
                    after: after_states(&writes, &[&current], &[&Versioned::default()]),
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
                let current = self.user(*user_id).await?;
                let writes = user::grant_role(&current, *role)?;
                Ok(Plan {
                    after: after_states(&writes, &[&current], &[]),
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
            Command::Deposit(d) => {
                let wallet_id = WalletId::of(d.user_id, d.currency);
                let owner = self.user(d.user_id).await?;
                let w = self.wallet(wallet_id).await?;
                let writes = wallet::deposit(&owner, &w, d)?;
                let after = after_states(&writes, &[], &[&w]);
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
                let w = self.wallet(wallet_id).await?;
                let writes = wallet::withdraw(&w, d)?;
                let after = after_states(&writes, &[], &[&w]);
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
                let payer = self.wallet(from).await?;
                let payee = self.user(t.to_user_id).await?;
                let payee_wallet = self.wallet(to).await?;
                let writes = wallet::transfer(&payer, &payee, &payee_wallet, t)?;
                let after = after_states(&writes, &[], &[&payer, &payee_wallet]);
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
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn wallet_plan(
    writes: Vec<StreamWrite>,
    after: Vec<CachedState>,
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
        .find_map(|s| match s {
            CachedState::Wallet(k, v) if k == subject.as_str() => Some(v.state.balance),
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
/// decision was based on, plus the new events. Used for the response and the cache.
fn after_states(
    writes: &[StreamWrite],
    users: &[&Versioned<User>],
    wallets: &[&Versioned<Wallet>],
) -> Vec<CachedState> {
    writes
        .iter()
        .map(|w| {
            let key = w.stream.as_str().to_owned();
            if w.stream.category() == "user" {
                let base = users
                    .iter()
                    .find(|u| {
                        u.version == w.expected_version
                            && u.state
                                .id
                                .map(StreamId::user)
                                .as_ref()
                                .is_none_or(|s| *s == w.stream)
                    })
                    .map_or_else(Versioned::default, |u| (*u).clone());
                CachedState::User(key, fold(base, w))
            } else {
                let base = wallets
                    .iter()
                    .find(|v| {
                        v.version == w.expected_version
                            && v.state
                                .id
                                .map(StreamId::wallet)
                                .as_ref()
                                .is_none_or(|s| *s == w.stream)
                    })
                    .map_or_else(Versioned::default, |v| (*v).clone());
                CachedState::Wallet(key, fold(base, w))
            }
        })
        .collect()
}

/// Applies a write's events to the state it was decided from.
fn fold<T: Aggregate + Clone>(mut base: Versioned<T>, w: &StreamWrite) -> Versioned<T> {
    debug_assert_eq!(base.version, w.expected_version);
    for e in &w.events {
        base.apply(e);
    }
    base
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
