//! Rejections the domain can give. Each has a stable machine-readable code.

use crate::email::EmailError;
use crate::money::{Currency, MoneyError};
use crate::text::DescriptionError;

/// Why a command was refused. Refusals change nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The amount or currency is not valid money.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// The e-mail address is malformed.
    #[error(transparent)]
    Email(#[from] EmailError),
    /// The description is too long or contains control characters.
    #[error(transparent)]
    Description(#[from] DescriptionError),
    /// A user with this id already exists.
    #[error("user already exists")]
    UserAlreadyExists,
    /// The user named by the command does not exist.
    #[error("user not found")]
    UnknownUser,
    /// The user has no wallet in this currency.
    #[error("the user has no {0} wallet")]
    WalletNotFound(Currency),
    /// The wallet balance does not cover the amount.
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds {
        /// The balance at decision time, formatted in the wallet's currency.
        balance: String,
        /// The amount asked for, formatted in the wallet's currency.
        requested: String,
    },
    /// A transfer whose payer and payee are the same user.
    #[error("cannot transfer to yourself")]
    SelfTransfer,
    /// The actor may not do this (`detail` says why).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The contract does not exist.
    #[error("contract not found")]
    ContractNotFound,
    /// The dispute does not exist.
    #[error("dispute not found")]
    DisputeNotFound,
    /// The command is not allowed in the aggregate's current state; `code` names the rule.
    #[error("{detail}")]
    InvalidTransition {
        /// Stable code, such as `CONTRACT_NOT_DRAFT`.
        code: &'static str,
        /// Explanation.
        detail: String,
    },
    /// Buyer and seller are the same user.
    #[error("buyer and seller must be different users")]
    SameParties,
    /// A release or refund larger than what is held.
    #[error("amount {requested} exceeds the {held} held in escrow")]
    ExceedsHeld {
        /// Held amount, formatted.
        held: String,
        /// Requested amount, formatted.
        requested: String,
    },
    /// Settlement amounts that do not add up to what is held.
    #[error("sellerAmount + buyerAmount must equal the held amount {held}")]
    SplitMismatch {
        /// Held amount, formatted.
        held: String,
    },
    /// Free text that is required was empty or too long.
    #[error("{0}")]
    InvalidText(&'static str),
    /// Free-form JSON over its size limit, or holding a NUL character (which no stored
    /// event can keep: PostgreSQL's `jsonb` refuses it).
    #[error("{0}")]
    InvalidDetails(&'static str),
    /// A fee schedule that breaks a rule.
    #[error("{0}")]
    InvalidFee(&'static str),
    /// A funding deadline in the past or too far ahead.
    #[error("{0}")]
    InvalidFundBy(&'static str),
    /// Milestones that break a rule (count, title, amount, inspection window).
    #[error("{0}")]
    InvalidMilestones(&'static str),
    /// Milestones whose amounts do not add up to the contract's price.
    #[error("the milestones add up to {sum}, not to the amount {amount}")]
    MilestonesMismatch {
        /// The price asked for, formatted.
        amount: String,
        /// What the milestones add up to, formatted.
        sum: String,
    },
    /// The pay-in does not exist.
    #[error("pay-in not found")]
    PayinNotFound,
    /// The payout does not exist.
    #[error("payout not found")]
    PayoutNotFound,
    /// The webhook endpoint does not exist (or was deleted).
    #[error("webhook endpoint not found")]
    WebhookNotFound,
    /// A webhook endpoint's field is malformed.
    #[error("{0}")]
    InvalidWebhook(&'static str),
    /// A webhook filter entry names no event type or category.
    #[error("unknown event filter {0:?}: use an event type such as ContractFunded, a category such as contract.*, or *")]
    UnknownEventFilter(String),
    /// The contract has no milestone with this number.
    #[error("the contract has no milestone {0}")]
    MilestoneNotFound(u16),
    /// The role is already held.
    #[error("the user already has role {0}")]
    RoleAlreadyHeld(&'static str),
}

impl DomainError {
    /// A stable, upper-snake-case code for API clients and logs.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Money(MoneyError::UnknownCurrency(_)) => "UNKNOWN_CURRENCY",
            DomainError::Money(MoneyError::TooLarge { .. }) => "AMOUNT_TOO_LARGE",
            DomainError::Money(MoneyError::TooPrecise { .. }) => "AMOUNT_TOO_PRECISE",
            DomainError::Money(MoneyError::NotPositive) => "AMOUNT_NOT_POSITIVE",
            DomainError::Money(MoneyError::NotANumber) => "INVALID_AMOUNT",
            DomainError::Email(_) => "INVALID_EMAIL",
            DomainError::Description(_) => "INVALID_DESCRIPTION",
            DomainError::UserAlreadyExists => "USER_ALREADY_EXISTS",
            DomainError::UnknownUser => "USER_NOT_FOUND",
            DomainError::WalletNotFound(_) => "WALLET_NOT_FOUND",
            DomainError::InsufficientFunds { .. } => "INSUFFICIENT_FUNDS",
            DomainError::SelfTransfer => "SELF_TRANSFER",
            DomainError::RoleAlreadyHeld(_) => "ROLE_ALREADY_HELD",
            DomainError::Forbidden(_) => "FORBIDDEN",
            DomainError::ContractNotFound => "CONTRACT_NOT_FOUND",
            DomainError::DisputeNotFound => "DISPUTE_NOT_FOUND",
            DomainError::InvalidTransition { code, .. } => code,
            DomainError::SameParties => "SAME_PARTIES",
            DomainError::ExceedsHeld { .. } => "AMOUNT_EXCEEDS_HELD",
            DomainError::SplitMismatch { .. } => "SPLIT_MISMATCH",
            DomainError::InvalidText(_) => "INVALID_TEXT",
            DomainError::InvalidFundBy(_) => "INVALID_FUND_BY",
            DomainError::InvalidFee(_) => "INVALID_FEE_SCHEDULE",
            DomainError::InvalidDetails(_) => "INVALID_DETAILS",
            DomainError::InvalidMilestones(_) => "INVALID_MILESTONES",
            DomainError::MilestonesMismatch { .. } => "MILESTONES_MISMATCH",
            DomainError::MilestoneNotFound(_) => "MILESTONE_NOT_FOUND",
            DomainError::PayinNotFound => "PAYIN_NOT_FOUND",
            DomainError::PayoutNotFound => "PAYOUT_NOT_FOUND",
            DomainError::WebhookNotFound => "WEBHOOK_NOT_FOUND",
            DomainError::InvalidWebhook(_) => "INVALID_WEBHOOK",
            DomainError::UnknownEventFilter(_) => "UNKNOWN_EVENT_FILTER",
        }
    }
}
