//! The commands the ledger executes, what each produces, and why one may not take effect.
//! Past 600 lines: one enum of every command beside one of every outcome, so that what a
//! command may answer is read next to the command.

use chrono::{DateTime, Utc};
use domain::codec::DecodeError;
use domain::contract::{CreateContract, ResolveDispute};
use domain::wallet::{Deposit, Transfer, Withdraw};
use domain::{
    Contract, ContractId, Currency, Dispute, DisputeId, DomainError, Email, Event, FeeTerms, Role,
    Timestamp, TransactionId, UserId, WalletId,
};
use event_store::{StoreError, StoredAnswer};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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
    /// Conflicts persisted past [`crate::CONFLICT_RETRIES_MAX`] retries.
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
    /// Record an application's own audit entry about a user (the user itself, or an
    /// admin).
    RecordActivity {
        /// Who asks.
        actor: domain::Actor,
        /// The user it concerns.
        user_id: UserId,
        /// The entry.
        entry: domain::user::RecordActivity,
    },
    /// An admin freezes a wallet (`reason`) or lifts its freeze (`None`).
    SetWalletFrozen {
        /// Who asks (refused unless an admin).
        actor: domain::Actor,
        /// The wallet's owner.
        user_id: UserId,
        /// Which of the owner's wallets.
        currency: Currency,
        /// Why it is frozen; `None` unfreezes it.
        reason: Option<String>,
        /// Now.
        now: Timestamp,
    },
    /// The service (or an admin) announces a pay-in.
    CreatePayin(domain::payin::CreatePayin),
    /// The service (or an admin) confirms a pay-in: the wallet is credited.
    ConfirmPayin {
        /// The pay-in.
        payin_id: domain::PayinId,
        /// Who asks.
        actor: domain::Actor,
        /// The deposit's movement.
        transaction_id: TransactionId,
        /// Now.
        now: Timestamp,
    },
    /// The service (or an admin) fails a pay-in: nothing is credited.
    FailPayin {
        /// The pay-in.
        payin_id: domain::PayinId,
        /// Who asks.
        actor: domain::Actor,
        /// Why.
        reason: String,
        /// Now.
        now: Timestamp,
    },
    /// The owner asks for a payout: the amount moves to the wallet's payouts in flight.
    RequestPayout(domain::payout::RequestPayout),
    /// The service (or an admin) records that the provider paid the payout.
    CompletePayout {
        /// The payout.
        payout_id: domain::PayoutId,
        /// Who asks.
        actor: domain::Actor,
        /// The provider's reference for the payment.
        provider_reference: String,
        /// Now.
        now: Timestamp,
    },
    /// An admin (or, to disable it, the ledger) changes a webhook endpoint.
    ChangeWebhook(domain::webhook::ChangeWebhook),
    /// The service (or an admin) records that the payout failed: the amount returns.
    FailPayout {
        /// The payout.
        payout_id: domain::PayoutId,
        /// Who asks.
        actor: domain::Actor,
        /// Why.
        reason: String,
        /// The wallet's movement that returns the money.
        transaction_id: TransactionId,
        /// Now.
        now: Timestamp,
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
        /// Now (checked against the funding deadline).
        now: Timestamp,
    },
    /// The seller marks the contract delivered.
    DeliverContract {
        /// The contract.
        contract_id: ContractId,
        /// Who asks.
        actor: UserId,
        /// One milestone (from 1); every milestone not delivered yet when absent.
        milestone: Option<u16>,
        /// Now.
        now: Timestamp,
    },
    /// Pay held money to the seller (the buyer, or the system after the inspection window).
    ReleaseContract {
        /// The contract.
        contract_id: ContractId,
        /// Who asks.
        actor: domain::Actor,
        /// One milestone (from 1, all it holds); the contract as a whole when absent.
        milestone: Option<u16>,
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
        /// One milestone (from 1, all it holds); the contract as a whole when absent.
        milestone: Option<u16>,
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
    /// The system expires a draft whose funding deadline has passed.
    ExpireContract {
        /// The contract.
        contract_id: ContractId,
        /// Now.
        now: Timestamp,
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
    /// An admin sets a currency's fee schedule.
    SetFeeSchedule {
        /// Who asks (refused unless an admin).
        actor: domain::Actor,
        /// The currency.
        currency: Currency,
        /// The rule.
        terms: FeeTerms,
        /// Now.
        now: Timestamp,
    },
    /// An admin moves platform revenue out of the ledger.
    WithdrawRevenue {
        /// Who asks (refused unless an admin).
        actor: domain::Actor,
        /// The currency.
        currency: Currency,
        /// How much (already checked against `currency`).
        amount: domain::Amount,
        /// The movement's id.
        transaction_id: TransactionId,
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
    /// The command's name in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Register { .. } => "RegisterUser",
            Command::Deposit(_) => "Deposit",
            Command::Withdraw(_) => "Withdraw",
            Command::SetWalletFrozen {
                reason: Some(_), ..
            } => "FreezeWallet",
            Command::SetWalletFrozen { reason: None, .. } => "UnfreezeWallet",
            Command::CreatePayin(_) => "CreatePayin",
            Command::ConfirmPayin { .. } => "ConfirmPayin",
            Command::FailPayin { .. } => "FailPayin",
            Command::RequestPayout(_) => "RequestPayout",
            Command::CompletePayout { .. } => "CompletePayout",
            Command::FailPayout { .. } => "FailPayout",
            Command::ChangeWebhook(c) => match c.change {
                domain::webhook::WebhookChange::Create { .. } => "CreateWebhookEndpoint",
                domain::webhook::WebhookChange::Update { .. } => "UpdateWebhookEndpoint",
                domain::webhook::WebhookChange::Delete => "DeleteWebhookEndpoint",
                domain::webhook::WebhookChange::RotateSecret { .. } => "RotateWebhookSecret",
                domain::webhook::WebhookChange::Disable { .. } => "DisableWebhookEndpoint",
            },
            Command::Transfer(_) => "Transfer",
            Command::GrantRole { .. } => "GrantRole",
            Command::SuspendUser { .. } => "SuspendUser",
            Command::ReactivateUser { .. } => "ReactivateUser",
            Command::RecordActivity { .. } => "RecordActivity",
            Command::CreateContract(_) => "CreateContract",
            Command::FundContract { .. } => "FundContract",
            Command::DeliverContract { .. } => "DeliverContract",
            Command::ReleaseContract { .. } => "ReleaseContract",
            Command::RefundContract { .. } => "RefundContract",
            Command::CancelContract { .. } => "CancelContract",
            Command::ExpireContract { .. } => "ExpireContract",
            Command::RaiseDispute { .. } => "RaiseDispute",
            Command::ResolveDispute { .. } => "ResolveDispute",
            Command::SetFeeSchedule { .. } => "SetFeeSchedule",
            Command::WithdrawRevenue { .. } => "WithdrawRevenue",
        }
    }
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalletChange {
    /// The movement.
    pub transaction_id: TransactionId,
    /// `DEPOSIT`, `WITHDRAWAL` or `TRANSFER`.
    pub kind: String,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
    /// From [`Command::RecordActivity`]: the entry as recorded.
    Activity(ActivityChange),
    /// From [`Command::SetFeeSchedule`]: the schedule now in force.
    FeeSchedule(FeeScheduleChange),
    /// From [`Command::WithdrawRevenue`]: the revenue account after it.
    Revenue(RevenueChange),
    /// From [`Command::SetWalletFrozen`]: the wallet after it.
    WalletStatus(WalletStatusChange),
    /// From the pay-in commands: the pay-in after it.
    Payin(PayinChange),
    /// From the payout commands: the payout after it.
    Payout(PayoutChange),
    /// From [`Command::ChangeWebhook`]: the endpoint after it.
    Webhook(WebhookChange),
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
            Outcome::Activity(a) => a.recorded_at = at,
            Outcome::FeeSchedule(f) => f.recorded_at = at,
            Outcome::Revenue(r) => r.recorded_at = at,
            Outcome::WalletStatus(w) => w.recorded_at = at,
            Outcome::Payin(p) => p.recorded_at = at,
            Outcome::Payout(p) => p.recorded_at = at,
            Outcome::Webhook(w) => w.recorded_at = at,
        }
    }
}

/// A pay-in after a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayinChange {
    /// Its state.
    pub payin: domain::Payin,
    /// When the change was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A payout after a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayoutChange {
    /// Its state.
    pub payout: domain::Payout,
    /// When the change was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A webhook endpoint after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookChange {
    /// Its id.
    pub webhook_id: domain::WebhookId,
    /// Its state.
    pub endpoint: domain::WebhookEndpoint,
    /// When the change was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A wallet after an admin froze or unfroze it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalletStatusChange {
    /// The wallet.
    pub wallet_id: WalletId,
    /// Its owner.
    pub user_id: UserId,
    /// Its currency.
    pub currency: Currency,
    /// Its balance.
    pub balance: Decimal,
    /// Why it is frozen; `None`: it is not.
    pub frozen: Option<String>,
    /// When the change was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A contract after a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractChange {
    /// The contract's state.
    pub contract: Contract,
    /// When the command's events were recorded.
    pub recorded_at: DateTime<Utc>,
}

/// An application audit entry as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityChange {
    /// The user it concerns.
    pub user_id: UserId,
    /// Who recorded it.
    pub recorded_by: UserId,
    /// What happened (trimmed).
    pub action: String,
    /// The kind of thing it concerns.
    pub resource: Option<String>,
    /// Which one.
    pub resource_id: Option<String>,
    /// Anything else.
    pub details: Option<Value>,
    /// When the events were recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A fee schedule after it was set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeeScheduleChange {
    /// Its currency.
    pub currency: Currency,
    /// The rule in force.
    pub terms: FeeTerms,
    /// When the command's events were recorded.
    pub recorded_at: DateTime<Utc>,
}

/// The platform's revenue account after a withdrawal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevenueChange {
    /// Its currency.
    pub currency: Currency,
    /// The balance after it.
    pub balance: Decimal,
    /// The withdrawal.
    pub transaction_id: TransactionId,
    /// How much was withdrawn.
    pub amount: Decimal,
    /// When the command's events were recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A dispute after a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The same request was already executed under this `Idempotency-Key`: what it
    /// produced then, to be answered exactly as then.
    Replayed {
        /// What it produced.
        outcome: Box<Outcome>,
        /// Global position of its last event.
        position: i64,
    },
    /// A key stored before outcomes were kept (see the `idempotent_outcomes` migration):
    /// the response as it was rendered then.
    ReplayedResponse {
        /// The stored HTTP status.
        status: u16,
        /// The stored JSON body.
        body: Value,
    },
}

/// The form an idempotency key keeps its answer in: the command's outcome (the position is
/// kept beside it), or the rendered response of a key stored before outcomes were.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum StoredForm {
    Outcome(Box<Outcome>),
    Rendered { status: u16, body: Value },
}

/// What an idempotency key keeps for `outcome`.
pub(crate) fn stored_answer(outcome: &Outcome) -> Value {
    json!({ "outcome": outcome })
}

/// The replay of what a key keeps.
pub(crate) fn replayed(stored: StoredAnswer) -> Result<Executed, CommandError> {
    let form: StoredForm = serde_json::from_value(stored.answer)
        .map_err(|e| CommandError::Internal(format!("a stored answer is unreadable: {e}")))?;
    Ok(match (form, stored.position) {
        (StoredForm::Outcome(outcome), Some(position)) => Executed::Replayed { outcome, position },
        (StoredForm::Outcome(_), None) => {
            return Err(CommandError::Internal(
                "a stored outcome has no position".into(),
            ))
        }
        (StoredForm::Rendered { status, body }, _) => Executed::ReplayedResponse { status, body },
    })
}

/// Login data kept outside the event stream.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    /// The user.
    pub user_id: UserId,
    /// The argon2id PHC string.
    pub password_hash: String,
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
