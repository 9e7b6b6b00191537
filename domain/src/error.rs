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
        }
    }
}
