//! Pay-ins: money a payment provider is bringing in for a user. The marketplace's service
//! (or an admin) announces it (`PENDING`, nothing credited), then confirms it (`CONFIRMED`:
//! the user's wallet is credited, a `DEPOSIT` in its history) or fails it (`FAILED`:
//! nothing moves). Each step happens once: a pay-in's stream is version-checked, and its
//! id is derived from its creator and reference, so a reference names one pay-in.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::error::DomainError;
use crate::event::{DepositChannel, Event};
use crate::ids::{PayinId, Timestamp, TransactionId, UserId};
use crate::money::{Amount, Currency};
use crate::stream::{Aggregate, StreamId, StreamWrite, Versioned};
use crate::text::Description;
use crate::user::{Role, User};
use crate::wallet::{open_for_credit, Wallet};

/// Longest reference, in characters.
pub const REFERENCE_CHARS_MAX: usize = 100;
/// Longest reason for a failure, in characters.
pub const REASON_CHARS_MAX: usize = 500;

/// Where a pay-in is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PayinStatus {
    /// Announced; nothing credited.
    #[default]
    Pending,
    /// Arrived: the wallet was credited.
    Confirmed,
    /// Will not arrive.
    Failed,
}

impl PayinStatus {
    /// The JSON name.
    pub fn as_str(&self) -> &'static str {
        match self {
            PayinStatus::Pending => "PENDING",
            PayinStatus::Confirmed => "CONFIRMED",
            PayinStatus::Failed => "FAILED",
        }
    }

    /// Parses a JSON name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            PayinStatus::Pending,
            PayinStatus::Confirmed,
            PayinStatus::Failed,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// State of one pay-in, folded from its stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payin {
    /// Set once created.
    pub id: Option<PayinId>,
    /// Whose wallet it is for.
    pub user_id: Option<UserId>,
    /// How much.
    pub amount: Decimal,
    /// In which currency.
    pub currency: Option<Currency>,
    /// The provider's reference.
    pub reference: String,
    /// Statement text.
    pub description: Option<Description>,
    /// Where it is.
    pub status: PayinStatus,
    /// The service or admin that created it.
    pub created_by: Option<UserId>,
    /// When.
    pub created_at: Option<Timestamp>,
    /// The deposit, once confirmed.
    pub transaction_id: Option<TransactionId>,
    /// Why it failed.
    pub reason: Option<String>,
}

impl Aggregate for Payin {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::PayinCreated {
                payin_id,
                user_id,
                amount,
                currency,
                reference,
                description,
                created_by,
                created_at,
            } => {
                self.id = Some(*payin_id);
                self.user_id = Some(*user_id);
                self.amount = amount.value();
                self.currency = Some(*currency);
                self.reference = reference.clone();
                self.description = description.clone();
                self.created_by = Some(*created_by);
                self.created_at = Some(*created_at);
                self.status = PayinStatus::Pending;
            }
            Event::PayinConfirmed { transaction_id, .. } => {
                self.status = PayinStatus::Confirmed;
                self.transaction_id = Some(*transaction_id);
            }
            Event::PayinFailed { reason, .. } => {
                self.status = PayinStatus::Failed;
                self.reason = Some(reason.clone());
            }
            _ => {}
        }
    }
}

/// Only the marketplace's service and admins record what the payment provider did
/// (`refusal` says what the caller may not do).
pub(crate) fn service(actor: Actor, refusal: &'static str) -> Result<UserId, DomainError> {
    match actor {
        Actor::User {
            id,
            role: Role::Service | Role::Admin,
        } => Ok(id),
        _ => Err(DomainError::Forbidden(refusal)),
    }
}

const PAYINS_ONLY: &str = "only the service role or an admin may record pay-ins";

/// `raw` trimmed, if it is 1 to `max` characters without control characters.
pub(crate) fn text(raw: &str, max: usize, what: &'static str) -> Result<String, DomainError> {
    let s = raw.trim();
    if s.is_empty() || s.chars().count() > max || s.chars().any(char::is_control) {
        return Err(DomainError::InvalidText(what));
    }
    Ok(s.to_owned())
}

/// Announce a pay-in.
#[derive(Debug, Clone)]
pub struct CreatePayin {
    /// Who asks (the service role or an admin).
    pub actor: Actor,
    /// Whose wallet it is for.
    pub user_id: UserId,
    /// How much (already checked against `currency`).
    pub amount: Amount,
    /// In which currency.
    pub currency: Currency,
    /// The provider's reference (1 to 100 characters), unique per creator.
    pub reference: String,
    /// Statement text.
    pub description: Option<Description>,
    /// Now.
    pub now: Timestamp,
}

impl CreatePayin {
    /// The pay-in this command names: derived from its creator and reference.
    pub fn payin_id(&self) -> PayinId {
        // The system never creates pay-ins; `service` refuses it before the id matters.
        let creator = self.actor.user().unwrap_or(UserId(uuid::Uuid::nil()));
        PayinId::of(creator, self.reference.trim())
    }
}

/// Decides a pay-in's announcement. A reference its creator used before is refused with
/// 409 `PAYIN_EXISTS`, naming the first pay-in.
pub fn create(
    existing: &Versioned<Payin>,
    user: &Versioned<User>,
    cmd: &CreatePayin,
) -> Result<Vec<StreamWrite>, DomainError> {
    let by = service(cmd.actor, PAYINS_ONLY)?;
    let reference = text(
        &cmd.reference,
        REFERENCE_CHARS_MAX,
        "reference must be 1 to 100 characters without control characters",
    )?;
    if !user.state.exists() {
        return Err(DomainError::UnknownUser);
    }
    let id = cmd.payin_id();
    if existing.version > 0 {
        return Err(DomainError::InvalidTransition {
            code: "PAYIN_EXISTS",
            detail: format!("a pay-in with reference {reference:?} exists already: {id}"),
        });
    }
    Ok(vec![StreamWrite {
        stream: StreamId::payin(id),
        expected_version: 0,
        events: vec![Event::PayinCreated {
            payin_id: id,
            user_id: cmd.user_id,
            amount: cmd.amount,
            currency: cmd.currency,
            reference,
            description: cmd.description.clone(),
            created_by: by,
            created_at: cmd.now,
        }],
    }])
}

fn pending(payin: &Versioned<Payin>, what: &str) -> Result<PayinId, DomainError> {
    let id = payin.state.id.ok_or(DomainError::PayinNotFound)?;
    if payin.state.status != PayinStatus::Pending {
        return Err(DomainError::InvalidTransition {
            code: "PAYIN_NOT_PENDING",
            detail: format!(
                "cannot {what} a pay-in that is {}",
                payin.state.status.as_str()
            ),
        });
    }
    Ok(id)
}

/// Decides a confirmation: the user's wallet (opened if needed) is credited with the
/// amount, in the same transaction.
pub fn confirm(
    payin: &Versioned<Payin>,
    wallet: &Versioned<Wallet>,
    actor: Actor,
    transaction_id: TransactionId,
    now: Timestamp,
) -> Result<Vec<StreamWrite>, DomainError> {
    let by = service(actor, PAYINS_ONLY)?;
    let id = pending(payin, "confirm")?;
    let p = &payin.state;
    let user = p.user_id.ok_or(DomainError::PayinNotFound)?;
    let currency = p.currency.unwrap_or(Currency::USD);
    let amount = Amount::try_from(p.amount)?;
    let mut wallet_events = Vec::with_capacity(2);
    let wallet_id = open_for_credit(wallet, user, currency, p.amount, &mut wallet_events)?;
    wallet_events.push(Event::FundsDeposited {
        transaction_id,
        amount,
        description: p.description.clone(),
        channel: DepositChannel::Payin,
    });
    Ok(vec![
        StreamWrite {
            stream: StreamId::payin(id),
            expected_version: payin.version,
            events: vec![Event::PayinConfirmed {
                transaction_id,
                confirmed_by: by,
                confirmed_at: now,
            }],
        },
        StreamWrite {
            stream: StreamId::wallet(wallet_id),
            expected_version: wallet.version,
            events: wallet_events,
        },
    ])
}

/// Decides a failure: nothing is credited.
pub fn fail(
    payin: &Versioned<Payin>,
    actor: Actor,
    reason: &str,
    now: Timestamp,
) -> Result<Vec<StreamWrite>, DomainError> {
    let by = service(actor, PAYINS_ONLY)?;
    let reason = text(
        reason,
        REASON_CHARS_MAX,
        "reason must be 1 to 500 characters without control characters",
    )?;
    let id = pending(payin, "fail")?;
    Ok(vec![StreamWrite {
        stream: StreamId::payin(id),
        expected_version: payin.version,
        events: vec![Event::PayinFailed {
            reason,
            failed_by: by,
            failed_at: now,
        }],
    }])
}
