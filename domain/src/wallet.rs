//! The wallet aggregate: one per (user, currency), never below zero; an admin may freeze
//! it (it receives money, sends none).

use rust_decimal::Decimal;

use crate::actor::Actor;
use crate::error::DomainError;
use crate::event::{DepositChannel, Event};
use crate::ids::{Timestamp, TransactionId, UserId, WalletId};
use crate::money::{Amount, Currency};
use crate::stream::{Aggregate, StreamId, StreamWrite, Versioned};
use crate::text::Description;
use crate::user::{Role, User};

/// State of one wallet, folded from its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wallet {
    /// Set once `WalletOpened` has been folded.
    pub id: Option<WalletId>,
    /// The owner.
    pub owner: Option<UserId>,
    /// The wallet's currency.
    pub currency: Option<Currency>,
    /// Money available to spend. Never negative.
    pub balance: Decimal,
    /// Why an admin froze it: it receives money but sends none. `None`: not frozen.
    pub frozen: Option<String>,
}

impl Aggregate for Wallet {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::WalletOpened {
                wallet_id,
                user_id,
                currency,
            } => {
                self.id = Some(*wallet_id);
                self.owner = Some(*user_id);
                self.currency = Some(*currency);
            }
            Event::FundsDeposited { amount, .. }
            | Event::TransferReceived { amount, .. }
            | Event::EscrowPaymentReceived { amount, .. }
            | Event::EscrowRefundReceived { amount, .. }
            | Event::FeeReturned { amount, .. }
            | Event::PayoutFundsReturned { amount, .. } => {
                // Saturating: decisions keep balances at most BALANCE_MAX, so only a
                // tampered store reaches the bound, and folding it must not panic.
                self.balance = self.balance.saturating_add(amount.value());
            }
            Event::WalletFrozen { reason, .. } => self.frozen = Some(reason.clone()),
            Event::WalletUnfrozen { .. } => self.frozen = None,
            Event::FundsWithdrawn { amount, .. }
            | Event::TransferSent { amount, .. }
            | Event::EscrowHeld { amount, .. }
            | Event::FeeHeld { amount, .. }
            | Event::FeeCharged { amount, .. }
            | Event::PayoutFundsReserved { amount, .. } => {
                self.balance = self.balance.saturating_sub(amount.value());
            }
            _ => {}
        }
        // No assertion that the balance stays at or above zero: folding must take whatever
        // a tampered store says, so that `verify` can name the wallet instead of stopping.
        // The decisions keep it there (the property tests check every state they reach).
    }
}

/// Put money into a user's wallet from outside the ledger.
#[derive(Debug, Clone)]
pub struct Deposit {
    /// The movement's id.
    pub transaction_id: TransactionId,
    /// Whose wallet.
    pub user_id: UserId,
    /// Which of the user's wallets (opened by this deposit if it does not exist yet).
    pub currency: Currency,
    /// How much (already checked against `currency`).
    pub amount: Amount,
    /// Free text for the statement.
    pub description: Option<Description>,
    /// How the money came in.
    pub channel: DepositChannel,
}

/// Take money out of a user's wallet to outside the ledger.
#[derive(Debug, Clone)]
pub struct Withdraw {
    /// The movement's id.
    pub transaction_id: TransactionId,
    /// Whose wallet.
    pub user_id: UserId,
    /// Which wallet.
    pub currency: Currency,
    /// How much.
    pub amount: Amount,
    /// Free text for the statement.
    pub description: Option<Description>,
}

/// Move money between two users' wallets of the same currency.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The movement's id, shared by both legs.
    pub transaction_id: TransactionId,
    /// The payer.
    pub from_user_id: UserId,
    /// The payee.
    pub to_user_id: UserId,
    /// Currency of both wallets.
    pub currency: Currency,
    /// How much.
    pub amount: Amount,
    /// Free text for both statements.
    pub description: Option<Description>,
}

/// Refuses money leaving a frozen wallet.
pub(crate) fn require_unfrozen(wallet: &Wallet, currency: Currency) -> Result<(), DomainError> {
    if wallet.frozen.is_some() {
        return Err(DomainError::InvalidTransition {
            code: "WALLET_FROZEN",
            detail: format!(
                "the {} wallet is frozen: it receives money but sends none",
                currency.code()
            ),
        });
    }
    Ok(())
}

/// What money leaving a wallet needs: the wallet not frozen, and `amount` available.
pub(crate) fn require_funds(
    wallet: &Wallet,
    amount: Amount,
    currency: Currency,
) -> Result<(), DomainError> {
    require_unfrozen(wallet, currency)?;
    if wallet.balance < amount.value() {
        return Err(DomainError::InsufficientFunds {
            balance: currency.format(wallet.balance),
            requested: currency.format(amount.value()),
        });
    }
    Ok(())
}

/// The most one wallet may hold: far below what a `Decimal` can represent, so that no
/// balance, and no sum of balances over every wallet of a currency, can overflow.
pub const BALANCE_MAX: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0);

/// Opens `user`'s wallet in `currency` if it does not exist yet (the event goes first into
/// `events`), checking that it can receive `amount` without passing [`BALANCE_MAX`].
pub(crate) fn open_for_credit(
    wallet: &Versioned<Wallet>,
    user: UserId,
    currency: Currency,
    amount: Decimal,
    events: &mut Vec<Event>,
) -> Result<WalletId, DomainError> {
    if wallet
        .state
        .balance
        .checked_add(amount)
        .is_none_or(|after| after > BALANCE_MAX)
    {
        return Err(DomainError::InvalidTransition {
            code: "WALLET_BALANCE_LIMIT",
            detail: format!(
                "the wallet would hold more than {}",
                currency.format(BALANCE_MAX)
            ),
        });
    }
    let id = WalletId::of(user, currency);
    if wallet.version == 0 {
        events.push(Event::WalletOpened {
            wallet_id: id,
            user_id: user,
            currency,
        });
    }
    Ok(id)
}

/// Decides a deposit. `wallet` is the (possibly not yet opened) wallet
/// `WalletId::of(cmd.user_id, cmd.currency)`.
pub fn deposit(
    user: &Versioned<User>,
    wallet: &Versioned<Wallet>,
    cmd: &Deposit,
) -> Result<Vec<StreamWrite>, DomainError> {
    if !user.state.exists() {
        return Err(DomainError::UnknownUser);
    }
    let mut events = Vec::with_capacity(2);
    let id = open_for_credit(
        wallet,
        cmd.user_id,
        cmd.currency,
        cmd.amount.value(),
        &mut events,
    )?;
    events.push(Event::FundsDeposited {
        transaction_id: cmd.transaction_id,
        amount: cmd.amount,
        description: cmd.description.clone(),
        channel: cmd.channel,
    });
    Ok(vec![StreamWrite {
        stream: StreamId::wallet(id),
        expected_version: wallet.version,
        events,
    }])
}

/// Decides a withdrawal: the wallet must exist and cover the amount.
pub fn withdraw(
    wallet: &Versioned<Wallet>,
    cmd: &Withdraw,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = wallet
        .state
        .id
        .ok_or(DomainError::WalletNotFound(cmd.currency))?;
    require_funds(&wallet.state, cmd.amount, cmd.currency)?;
    Ok(vec![StreamWrite {
        stream: StreamId::wallet(id),
        expected_version: wallet.version,
        events: vec![Event::FundsWithdrawn {
            transaction_id: cmd.transaction_id,
            amount: cmd.amount,
            description: cmd.description.clone(),
        }],
    }])
}

/// Decides a transfer. Both legs are written together or not at all; the payee's wallet
/// is opened by the transfer if it does not exist yet.
pub fn transfer(
    payer_wallet: &Versioned<Wallet>,
    payee: &Versioned<User>,
    payee_wallet: &Versioned<Wallet>,
    cmd: &Transfer,
) -> Result<Vec<StreamWrite>, DomainError> {
    if cmd.from_user_id == cmd.to_user_id {
        return Err(DomainError::SelfTransfer);
    }
    if !payee.state.exists() {
        return Err(DomainError::UnknownUser);
    }
    let from_id = payer_wallet
        .state
        .id
        .ok_or(DomainError::WalletNotFound(cmd.currency))?;
    require_funds(&payer_wallet.state, cmd.amount, cmd.currency)?;
    let mut payee_events = Vec::with_capacity(2);
    let to_id = open_for_credit(
        payee_wallet,
        cmd.to_user_id,
        cmd.currency,
        cmd.amount.value(),
        &mut payee_events,
    )?;
    payee_events.push(Event::TransferReceived {
        transaction_id: cmd.transaction_id,
        from_wallet_id: from_id,
        from_user_id: cmd.from_user_id,
        amount: cmd.amount,
        description: cmd.description.clone(),
    });
    Ok(vec![
        StreamWrite {
            stream: StreamId::wallet(from_id),
            expected_version: payer_wallet.version,
            events: vec![Event::TransferSent {
                transaction_id: cmd.transaction_id,
                to_wallet_id: to_id,
                to_user_id: cmd.to_user_id,
                amount: cmd.amount,
                description: cmd.description.clone(),
            }],
        },
        StreamWrite {
            stream: StreamId::wallet(to_id),
            expected_version: payee_wallet.version,
            events: payee_events,
        },
    ])
}

/// Longest reason for a freeze, in characters.
pub const FREEZE_REASON_CHARS_MAX: usize = 500;

fn admin(actor: Actor, what: &'static str) -> Result<UserId, DomainError> {
    match actor {
        Actor::User {
            id,
            role: Role::Admin,
        } => Ok(id),
        _ => Err(DomainError::Forbidden(what)),
    }
}

/// Decides a freeze, by an admin: the wallet keeps receiving money, but no transfer,
/// withdrawal or funding leaves it until it is unfrozen.
pub fn freeze(
    wallet: &Versioned<Wallet>,
    actor: Actor,
    currency: Currency,
    reason: &str,
    now: Timestamp,
) -> Result<Vec<StreamWrite>, DomainError> {
    let by = admin(actor, "only an admin may freeze a wallet")?;
    let reason = reason.trim();
    if reason.is_empty()
        || reason.chars().count() > FREEZE_REASON_CHARS_MAX
        || reason
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(DomainError::InvalidText(
            "reason must be 1 to 500 characters without control characters",
        ));
    }
    let id = wallet
        .state
        .id
        .ok_or(DomainError::WalletNotFound(currency))?;
    if wallet.state.frozen.is_some() {
        return Err(DomainError::InvalidTransition {
            code: "WALLET_ALREADY_FROZEN",
            detail: "the wallet is already frozen".into(),
        });
    }
    Ok(vec![StreamWrite {
        stream: StreamId::wallet(id),
        expected_version: wallet.version,
        events: vec![Event::WalletFrozen {
            reason: reason.to_owned(),
            frozen_by: by,
            frozen_at: now,
        }],
    }])
}

/// Decides lifting a freeze, by an admin.
pub fn unfreeze(
    wallet: &Versioned<Wallet>,
    actor: Actor,
    currency: Currency,
    now: Timestamp,
) -> Result<Vec<StreamWrite>, DomainError> {
    let by = admin(actor, "only an admin may unfreeze a wallet")?;
    let id = wallet
        .state
        .id
        .ok_or(DomainError::WalletNotFound(currency))?;
    if wallet.state.frozen.is_none() {
        return Err(DomainError::InvalidTransition {
            code: "WALLET_NOT_FROZEN",
            detail: "the wallet is not frozen".into(),
        });
    }
    Ok(vec![StreamWrite {
        stream: StreamId::wallet(id),
        expected_version: wallet.version,
        events: vec![Event::WalletUnfrozen {
            unfrozen_by: by,
            unfrozen_at: now,
        }],
    }])
}
