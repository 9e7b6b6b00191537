//! Platform fees: the schedule an admin sets per currency, the terms a contract copies from
//! it when it is created, what each payment's fee is, and the platform's revenue account.
//!
//! How partial payments add up. `F(x)` is the fee on an amount `x` paid to the seller so
//! far: `x × percentBps / 10 000`, rounded half-up to the currency's minor unit, clamped to
//! `[minimum, maximum]`, and never above `x`. A payment's fee is `F(paid after) − F(paid
//! before)`: however a price is paid out (partial releases, an automatic release, the
//! seller's part of a split), the fees of its payments add up to `F(total paid)`, which is
//! never more than `F(price)`; and because `F` never rises faster than `x`, no payment's fee
//! exceeds the payment. The buyer's share `B(x)` is `F(x)` when the buyer pays, `⌊F(x)/2⌋`
//! for a split (the odd minor unit is the seller's half), nothing when the seller pays; the
//! seller's share is `F(x) − B(x)`. The buyer prepays `B(price)` at funding, held in escrow
//! beside the price; each payment moves its buyer's share of the fee to revenue, and a refund
//! returns `B(paid + held before) − B(paid + held after)`, so the prepaid fee still held is
//! always `B(paid + held) − B(paid)`, and nothing of it is left once nothing is held.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::error::DomainError;
use crate::event::Event;
use crate::ids::{ContractId, FeeScheduleId, RevenueId, Timestamp, TransactionId};
use crate::money::{Amount, Currency};
use crate::stream::{Aggregate, StreamId, StreamWrite, Versioned};
use crate::user::Role;

/// The highest fee rate an admin may set: 50 %.
pub const PERCENT_BPS_MAX: u16 = 5_000;

/// Who pays a contract's fee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FeePayer {
    /// Deducted from every payment to the seller.
    Seller,
    /// Paid by the buyer on the full price at funding, held until payment.
    Buyer,
    /// Half each: the buyer's half at funding, the seller's half from payments.
    Split,
}

impl FeePayer {
    /// The JSON name.
    pub fn as_str(&self) -> &'static str {
        match self {
            FeePayer::Seller => "SELLER",
            FeePayer::Buyer => "BUYER",
            FeePayer::Split => "SPLIT",
        }
    }

    /// Parses a JSON name.
    pub fn parse(s: &str) -> Option<Self> {
        [FeePayer::Seller, FeePayer::Buyer, FeePayer::Split]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// A fee rule: the schedule in force for a currency, and the copy a contract keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeeTerms {
    /// Basis points of each payment (0 to [`PERCENT_BPS_MAX`]).
    pub percent_bps: u16,
    /// The least fee on a payment (never above the payment itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<Amount>,
    /// The most fee on a payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<Amount>,
    /// Who pays.
    pub payer: FeePayer,
}

impl FeeTerms {
    /// Checks the rule an admin asks for.
    pub fn check(&self) -> Result<(), DomainError> {
        if self.percent_bps > PERCENT_BPS_MAX {
            return Err(DomainError::InvalidFee(
                "percentBps must be from 0 to 5000 (50 %)",
            ));
        }
        if let (Some(min), Some(max)) = (self.minimum, self.maximum) {
            if min > max {
                return Err(DomainError::InvalidFee("minimum must not be above maximum"));
            }
        }
        Ok(())
    }

    /// `F(x)`: the whole fee on `paid` paid to the seller so far.
    pub fn fee(&self, currency: Currency, paid: Decimal) -> Decimal {
        if paid <= Decimal::ZERO {
            return Decimal::ZERO;
        }
        // Amounts are at most 10^9 and the rate at most 5000: no overflow is possible, and
        // saturating keeps the function total regardless.
        let raw = paid
            .saturating_mul(Decimal::from(self.percent_bps))
            .checked_div(Decimal::from(10_000))
            .unwrap_or(Decimal::ZERO);
        let mut fee = raw.round_dp_with_strategy(
            currency.minor_units(),
            RoundingStrategy::MidpointAwayFromZero,
        );
        if let Some(min) = self.minimum {
            fee = fee.max(min.value());
        }
        if let Some(max) = self.maximum {
            fee = fee.min(max.value());
        }
        fee.min(paid)
    }

    /// `B(x)`: the buyer's share of the fee on `paid`.
    pub fn buyer_share(&self, currency: Currency, paid: Decimal) -> Decimal {
        let fee = self.fee(currency, paid);
        match self.payer {
            FeePayer::Seller => Decimal::ZERO,
            FeePayer::Buyer => fee,
            FeePayer::Split => (fee / Decimal::TWO)
                .round_dp_with_strategy(currency.minor_units(), RoundingStrategy::ToZero),
        }
    }

    /// The seller's share of the fee on `paid`: `F(x) − B(x)`.
    pub fn seller_share(&self, currency: Currency, paid: Decimal) -> Decimal {
        self.fee(currency, paid) - self.buyer_share(currency, paid)
    }
}

/// The fees of one payment of `gross` after `paid` was paid to the seller before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PaymentFee {
    /// Deducted from the payment.
    pub seller: Decimal,
    /// Moved from the buyer's prepaid fee.
    pub buyer: Decimal,
}

impl PaymentFee {
    /// What the payment's fee is under `terms` (none without terms).
    pub fn of(terms: Option<&FeeTerms>, currency: Currency, paid: Decimal, gross: Decimal) -> Self {
        let Some(t) = terms else {
            return PaymentFee::default();
        };
        let after = paid.saturating_add(gross);
        PaymentFee {
            seller: t.seller_share(currency, after) - t.seller_share(currency, paid),
            buyer: t.buyer_share(currency, after) - t.buyer_share(currency, paid),
        }
    }

    /// Both shares together.
    pub fn total(&self) -> Decimal {
        self.seller + self.buyer
    }
}

/// The buyer's prepaid fee a refund of `refund` returns, when `paid` was paid to the seller
/// and `held` is held before the refund.
pub fn fee_returned(
    terms: Option<&FeeTerms>,
    currency: Currency,
    paid: Decimal,
    held: Decimal,
    refund: Decimal,
) -> Decimal {
    let Some(t) = terms else {
        return Decimal::ZERO;
    };
    let before = paid.saturating_add(held);
    t.buyer_share(currency, before) - t.buyer_share(currency, before - refund)
}

/// Some amount, or none for zero (events carry no zero amounts).
pub(crate) fn some_amount(value: Decimal) -> Result<Option<Amount>, DomainError> {
    if value.is_zero() {
        Ok(None)
    } else {
        Ok(Some(Amount::try_from(value)?))
    }
}

/// The fee schedule of one currency, folded from its `feeschedule-<id>` stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeeSchedule {
    /// Its currency, once set.
    pub currency: Option<Currency>,
    /// The rule in force (none: no fee).
    pub terms: Option<FeeTerms>,
    /// When it was last set.
    pub set_at: Option<Timestamp>,
}

impl Aggregate for FeeSchedule {
    fn apply(&mut self, event: &Event) {
        if let Event::FeeScheduleSet {
            currency,
            terms,
            set_at,
            ..
        } = event
        {
            self.currency = Some(*currency);
            self.terms = Some(*terms);
            self.set_at = Some(*set_at);
        }
    }
}

/// The platform's revenue account in one currency, folded from its `revenue-<id>` stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Revenue {
    /// Its currency, once it has a movement.
    pub currency: Option<Currency>,
    /// Fees collected less withdrawals.
    pub balance: Decimal,
}

impl Aggregate for Revenue {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::FeeCollected {
                currency, amount, ..
            } => {
                self.currency = Some(*currency);
                self.balance = self.balance.saturating_add(amount.value());
            }
            Event::RevenueWithdrawn {
                currency, amount, ..
            } => {
                self.currency = Some(*currency);
                self.balance = self.balance.saturating_sub(amount.value());
            }
            _ => {}
        }
    }
}

fn require_admin(actor: Actor, what: &'static str) -> Result<(), DomainError> {
    match actor {
        Actor::User {
            role: Role::Admin, ..
        } => Ok(()),
        _ => Err(DomainError::Forbidden(what)),
    }
}

/// Decides a new fee schedule for `currency` (an admin). It applies to contracts created
/// from now on; existing contracts keep the terms they copied.
pub fn set_schedule(
    schedule: &Versioned<FeeSchedule>,
    actor: Actor,
    currency: Currency,
    terms: FeeTerms,
    now: Timestamp,
) -> Result<Vec<StreamWrite>, DomainError> {
    require_admin(actor, "only admins set the fee schedule")?;
    terms.check()?;
    let set_by = match actor {
        Actor::User { id, .. } => Some(id),
        Actor::System => None,
    };
    Ok(vec![StreamWrite {
        stream: StreamId::fee_schedule(FeeScheduleId::of(currency)),
        expected_version: schedule.version,
        events: vec![Event::FeeScheduleSet {
            currency,
            terms,
            set_by,
            set_at: now,
        }],
    }])
}

/// Decides a withdrawal from the platform's revenue in `currency` (an admin), never below
/// zero.
pub fn withdraw_revenue(
    revenue: &Versioned<Revenue>,
    actor: Actor,
    currency: Currency,
    amount: Amount,
    transaction_id: TransactionId,
) -> Result<Vec<StreamWrite>, DomainError> {
    require_admin(actor, "only admins withdraw platform revenue")?;
    if revenue.state.balance < amount.value() {
        return Err(DomainError::InsufficientFunds {
            balance: currency.format(revenue.state.balance),
            requested: currency.format(amount.value()),
        });
    }
    let withdrawn_by = match actor {
        Actor::User { id, .. } => Some(id),
        Actor::System => None,
    };
    Ok(vec![StreamWrite {
        stream: StreamId::revenue(RevenueId::of(currency)),
        expected_version: revenue.version,
        events: vec![Event::RevenueWithdrawn {
            transaction_id,
            currency,
            amount,
            withdrawn_by,
        }],
    }])
}

/// The fee movements of one payment of a contract's held money to its seller: the seller's
/// share as a debit on the seller's wallet (after the payment's credit), and the whole fee
/// into the revenue account. Nothing when the payment carries no fee.
pub(crate) fn collect(
    revenue: Option<&Versioned<Revenue>>,
    contract_id: ContractId,
    currency: Currency,
    payment: TransactionId,
    fee: PaymentFee,
    seller_wallet_events: &mut Vec<Event>,
) -> Result<Option<StreamWrite>, DomainError> {
    let Some(total) = some_amount(fee.total())? else {
        return Ok(None);
    };
    let transaction_id = payment.fee();
    if let Some(amount) = some_amount(fee.seller)? {
        seller_wallet_events.push(Event::FeeCharged {
            transaction_id,
            contract_id,
            amount,
        });
    }
    // A fee is only decided with the revenue stream loaded; without it the decision
    // cannot name the version it appends at.
    let revenue = revenue.ok_or(DomainError::InvalidFee(
        "the revenue account was not loaded for a payment with a fee",
    ))?;
    Ok(Some(StreamWrite {
        stream: StreamId::revenue(RevenueId::of(currency)),
        expected_version: revenue.version,
        events: vec![Event::FeeCollected {
            transaction_id,
            contract_id,
            currency,
            amount: total,
            from_escrow: some_amount(fee.buyer)?,
        }],
    }))
}
