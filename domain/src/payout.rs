//! Payouts: money a user sends out of the ledger through the marketplace's payment
//! provider. The owner asks (`PENDING`: the amount leaves its available balance at once,
//! into the wallet's payouts in flight); the service (or an admin) then records the
//! provider's answer: `COMPLETED` (the money leaves the ledger) or `FAILED` (the amount
//! returns to the available balance). Each step happens once: the payout's stream is
//! version-checked, and a failure writes the wallet in the same transaction.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::error::DomainError;
use crate::event::Event;
use crate::ids::{PayoutId, Timestamp, TransactionId, UserId, WalletId};
use crate::money::{Amount, Currency};
use crate::payin::{service, text};
use crate::stream::{Aggregate, StreamId, StreamWrite, Versioned};
use crate::text::Description;
use crate::wallet::{open_for_credit, require_funds, Wallet};

/// Longest destination, in characters.
pub const DESTINATION_CHARS_MAX: usize = 200;
/// Longest provider reference, in characters.
pub const PROVIDER_REFERENCE_CHARS_MAX: usize = 100;
/// Longest reason for a failure, in characters.
pub const REASON_CHARS_MAX: usize = 500;

const SERVICE_ONLY: &str = "only the service role or an admin may complete or fail payouts";

/// Where a payout is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PayoutStatus {
    /// Asked for: the amount is in the wallet's payouts in flight.
    #[default]
    Pending,
    /// Paid by the provider: the money left the ledger.
    Completed,
    /// Not paid: the amount went back to the wallet.
    Failed,
}

impl PayoutStatus {
    /// The JSON name.
    pub fn as_str(&self) -> &'static str {
        match self {
            PayoutStatus::Pending => "PENDING",
            PayoutStatus::Completed => "COMPLETED",
            PayoutStatus::Failed => "FAILED",
        }
    }

    /// Parses a JSON name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            PayoutStatus::Pending,
            PayoutStatus::Completed,
            PayoutStatus::Failed,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// State of one payout, folded from its stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payout {
    /// Set once requested.
    pub id: Option<PayoutId>,
    /// The owner.
    pub user_id: Option<UserId>,
    /// The wallet it leaves.
    pub wallet_id: Option<WalletId>,
    /// How much.
    pub amount: Decimal,
    /// In which currency.
    pub currency: Option<Currency>,
    /// Where it goes.
    pub destination: String,
    /// Statement text.
    pub description: Option<Description>,
    /// Where it is.
    pub status: PayoutStatus,
    /// The wallet's movement when it was asked for.
    pub transaction_id: Option<TransactionId>,
    /// When it was asked for.
    pub requested_at: Option<Timestamp>,
    /// The provider's reference, once completed.
    pub provider_reference: Option<String>,
    /// Why it failed.
    pub reason: Option<String>,
    /// The wallet's movement that returned the money, once failed.
    pub return_transaction_id: Option<TransactionId>,
}

impl Aggregate for Payout {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::PayoutRequested {
                payout_id,
                user_id,
                wallet_id,
                amount,
                currency,
                destination,
                description,
                transaction_id,
                requested_at,
            } => {
                self.id = Some(*payout_id);
                self.user_id = Some(*user_id);
                self.wallet_id = Some(*wallet_id);
                self.amount = amount.value();
                self.currency = Some(*currency);
                self.destination = destination.clone();
                self.description = description.clone();
                self.transaction_id = Some(*transaction_id);
                self.requested_at = Some(*requested_at);
                self.status = PayoutStatus::Pending;
            }
            Event::PayoutCompleted {
                provider_reference, ..
            } => {
                self.status = PayoutStatus::Completed;
                self.provider_reference = Some(provider_reference.clone());
            }
            Event::PayoutFailed {
                reason,
                transaction_id,
                ..
            } => {
                self.status = PayoutStatus::Failed;
                self.reason = Some(reason.clone());
                self.return_transaction_id = Some(*transaction_id);
            }
            _ => {}
        }
    }
}

/// Ask for a payout from one's own wallet.
#[derive(Debug, Clone)]
pub struct RequestPayout {
    /// Who asks: only the wallet's owner may.
    pub actor: Actor,
    /// The new payout's id.
    pub payout_id: PayoutId,
    /// The wallet's movement.
    pub transaction_id: TransactionId,
    /// Which of the owner's wallets.
    pub currency: Currency,
    /// How much (already checked against `currency`).
    pub amount: Amount,
    /// Where it goes (1 to 200 characters).
    pub destination: String,
    /// Statement text.
    pub description: Option<Description>,
    /// Now.
    pub now: Timestamp,
}

/// Decides a payout request: the owner's wallet (not frozen, with the amount available)
/// moves the amount to its payouts in flight, in the same transaction as the payout's
/// first event. `wallet` is the caller's wallet in `cmd.currency`.
pub fn request(
    existing: &Versioned<Payout>,
    wallet: &Versioned<Wallet>,
    cmd: &RequestPayout,
) -> Result<Vec<StreamWrite>, DomainError> {
    let Actor::User { id: owner, .. } = cmd.actor else {
        return Err(DomainError::Forbidden(
            "only a wallet's owner may pay out of it",
        ));
    };
    let destination = text(
        &cmd.destination,
        DESTINATION_CHARS_MAX,
        "destination must be 1 to 200 characters without control characters",
    )?;
    let wallet_id = WalletId::of(owner, cmd.currency);
    if wallet.state.id != Some(wallet_id) {
        return Err(DomainError::WalletNotFound(cmd.currency));
    }
    require_funds(&wallet.state, cmd.amount, cmd.currency)?;
    if existing.version > 0 {
        return Err(DomainError::InvalidTransition {
            code: "PAYOUT_EXISTS",
            detail: format!("payout {} exists already", cmd.payout_id),
        });
    }
    Ok(vec![
        StreamWrite {
            stream: StreamId::payout(cmd.payout_id),
            expected_version: 0,
            events: vec![Event::PayoutRequested {
                payout_id: cmd.payout_id,
                user_id: owner,
                wallet_id,
                amount: cmd.amount,
                currency: cmd.currency,
                destination,
                description: cmd.description.clone(),
                transaction_id: cmd.transaction_id,
                requested_at: cmd.now,
            }],
        },
        StreamWrite {
            stream: StreamId::wallet(wallet_id),
            expected_version: wallet.version,
            events: vec![Event::PayoutFundsReserved {
                transaction_id: cmd.transaction_id,
                payout_id: cmd.payout_id,
                amount: cmd.amount,
                description: cmd.description.clone(),
            }],
        },
    ])
}

fn pending(payout: &Versioned<Payout>, what: &str) -> Result<PayoutId, DomainError> {
    let id = payout.state.id.ok_or(DomainError::PayoutNotFound)?;
    if payout.state.status != PayoutStatus::Pending {
        return Err(DomainError::InvalidTransition {
            code: "PAYOUT_NOT_PENDING",
            detail: format!(
                "cannot {what} a payout that is {}",
                payout.state.status.as_str()
            ),
        });
    }
    Ok(id)
}

/// Decides a completion: the money leaves the ledger from the wallet's payouts in flight.
/// Only the payout's stream is written: the wallet's available balance does not change.
pub fn complete(
    payout: &Versioned<Payout>,
    actor: Actor,
    provider_reference: &str,
    now: Timestamp,
) -> Result<Vec<StreamWrite>, DomainError> {
    let by = service(actor, SERVICE_ONLY)?;
    let provider_reference = text(
        provider_reference,
        PROVIDER_REFERENCE_CHARS_MAX,
        "providerReference must be 1 to 100 characters without control characters",
    )?;
    let id = pending(payout, "complete")?;
    let p = &payout.state;
    let wallet_id = p.wallet_id.ok_or(DomainError::PayoutNotFound)?;
    Ok(vec![StreamWrite {
        stream: StreamId::payout(id),
        expected_version: payout.version,
        events: vec![Event::PayoutCompleted {
            payout_id: id,
            wallet_id,
            amount: Amount::try_from(p.amount)?,
            currency: p.currency.unwrap_or(Currency::USD),
            provider_reference,
            completed_by: by,
            completed_at: now,
        }],
    }])
}

/// Decides a failure: the amount returns from the payouts in flight to the wallet's
/// available balance, in the same transaction. The wallet may be frozen meanwhile:
/// money coming back is money received.
pub fn fail(
    payout: &Versioned<Payout>,
    wallet: &Versioned<Wallet>,
    actor: Actor,
    reason: &str,
    transaction_id: TransactionId,
    now: Timestamp,
) -> Result<Vec<StreamWrite>, DomainError> {
    let by = service(actor, SERVICE_ONLY)?;
    let reason = text(
        reason,
        REASON_CHARS_MAX,
        "reason must be 1 to 500 characters without control characters",
    )?;
    let id = pending(payout, "fail")?;
    let p = &payout.state;
    let wallet_id = p.wallet_id.ok_or(DomainError::PayoutNotFound)?;
    let (Some(owner), Some(currency)) = (p.user_id, p.currency) else {
        return Err(DomainError::PayoutNotFound);
    };
    if wallet.state.id != Some(wallet_id) {
        return Err(DomainError::PayoutNotFound);
    }
    // The wallet exists, so this only checks the balance limit: it opens nothing.
    let mut opened = Vec::new();
    open_for_credit(wallet, owner, currency, p.amount, &mut opened)?;
    let amount = Amount::try_from(p.amount)?;
    Ok(vec![
        StreamWrite {
            stream: StreamId::payout(id),
            expected_version: payout.version,
            events: vec![Event::PayoutFailed {
                payout_id: id,
                reason,
                transaction_id,
                failed_by: by,
                failed_at: now,
            }],
        },
        StreamWrite {
            stream: StreamId::wallet(wallet_id),
            expected_version: wallet.version,
            events: vec![Event::PayoutFundsReturned {
                transaction_id,
                payout_id: id,
                amount,
            }],
        },
    ])
}
