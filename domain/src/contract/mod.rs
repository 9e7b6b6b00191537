//! The escrow contract aggregate and every decision that moves its money.
//!
//! Funding, delivery, cancellation and expiry are in [`lifecycle`]; payments out of escrow
//! (release and refund) in [`payments`]; disputes' decisions, which freeze a contract and
//! settle its money, in [`settlement`]; how its milestones fold, in [`milestones`].
//!
//! Lifecycle: `DRAFT` → fund (buyer) → `ACTIVE` → release (buyer, or the system when the
//! inspection window expires) → `COMPLETED`; refund (seller) → `REFUNDED`; cancel (a party,
//! draft only) → `CANCELLED`; not funded by `fundBy` (the system) → `EXPIRED`; dispute (a
//! party, active) → `DISPUTED` → resolve (arbiter or admin, never a party) →
//! `COMPLETED`/`REFUNDED`/`SETTLED`.
//!
//! Every decision that moves money returns writes for the contract stream *and* every
//! wallet stream it touches, each at the version it was decided from.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::dispute::{Dispute, DisputeOutcome, DisputeStatus};
use crate::error::DomainError;
use crate::event::Event;
use crate::fees::{collect, fee_returned, some_amount, FeeSchedule, FeeTerms, PaymentFee, Revenue};
use crate::ids::{ContractId, DisputeId, Timestamp, TransactionId, UserId};
use crate::money::{Amount, Currency};
use crate::stream::{Aggregate, StreamId, StreamWrite, Versioned};
use crate::text::Description;
use crate::user::{Role, User};
use crate::wallet::{open_for_credit, Wallet};

mod lifecycle;
mod milestones;
mod payments;
mod settlement;
pub use lifecycle::{cancel, deliver, expire, fund};
pub use milestones::{
    check_terms, Milestone, MilestoneStatus, MilestoneTerms, Milestones, MILESTONES_MAX,
};
pub use payments::{refund, release, Payout};
pub use settlement::{raise_dispute, resolve_dispute, ResolveDispute};

/// Longest contract title, in characters.
pub const TITLE_CHARS_MAX: usize = 200;
/// Longest dispute description or resolution, in characters.
pub const STATEMENT_CHARS_MAX: usize = 2_000;
/// Longest inspection window, in hours (one year).
pub const INSPECTION_HOURS_MAX: u32 = 24 * 366;
/// Furthest a funding deadline may lie ahead, in days (one year, leap day included).
pub const FUND_BY_DAYS_MAX: u32 = 366;

/// Where a contract is in its lifecycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContractStatus {
    /// Created, not funded.
    #[default]
    Draft,
    /// Funded: money held.
    Active,
    /// Frozen by an open dispute.
    Disputed,
    /// Everything held was paid to the seller.
    Completed,
    /// Everything held went back to the buyer.
    Refunded,
    /// A dispute split the money.
    Settled,
    /// Called off before funding.
    Cancelled,
    /// Not funded by its deadline.
    Expired,
}

impl ContractStatus {
    /// Where an arbiter's decision leaves a disputed contract.
    pub fn settled(outcome: DisputeOutcome) -> Self {
        match outcome {
            DisputeOutcome::Release => ContractStatus::Completed,
            DisputeOutcome::Refund => ContractStatus::Refunded,
            DisputeOutcome::Split => ContractStatus::Settled,
        }
    }

    /// The JSON name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ContractStatus::Draft => "DRAFT",
            ContractStatus::Active => "ACTIVE",
            ContractStatus::Disputed => "DISPUTED",
            ContractStatus::Completed => "COMPLETED",
            ContractStatus::Refunded => "REFUNDED",
            ContractStatus::Settled => "SETTLED",
            ContractStatus::Cancelled => "CANCELLED",
            ContractStatus::Expired => "EXPIRED",
        }
    }

    /// Parses a JSON name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            ContractStatus::Draft,
            ContractStatus::Active,
            ContractStatus::Disputed,
            ContractStatus::Completed,
            ContractStatus::Refunded,
            ContractStatus::Settled,
            ContractStatus::Cancelled,
            ContractStatus::Expired,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// State of one contract, folded from its stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contract {
    /// Set once created.
    pub id: Option<ContractId>,
    /// Who pays.
    pub buyer: Option<UserId>,
    /// Who gets paid.
    pub seller: Option<UserId>,
    /// The price.
    pub amount: Decimal,
    /// Its currency.
    pub currency: Option<Currency>,
    /// What the escrow account holds now.
    pub held: Decimal,
    /// Lifecycle status.
    pub status: ContractStatus,
    /// Hours the buyer has after delivery.
    pub inspection_period_hours: Option<u32>,
    /// When the seller delivered.
    pub delivered_at: Option<Timestamp>,
    /// When held funds release by themselves.
    pub auto_release_at: Option<Timestamp>,
    /// A draft not funded by then expires.
    #[serde(default)]
    pub fund_by: Option<Timestamp>,
    /// The platform fee it copied when it was created. (This and the three below default
    /// when absent, so outcomes stored before fees existed still read.)
    #[serde(default)]
    pub fee: Option<FeeTerms>,
    /// Paid to the seller so far, fees included (what the fee is computed on).
    #[serde(default)]
    pub paid: Decimal,
    /// The buyer's prepaid fee still held in escrow beside `held`.
    #[serde(default)]
    pub fee_held: Decimal,
    /// Fees collected so far, both shares.
    #[serde(default)]
    pub fee_charged: Decimal,
    /// Its stages: at least one (see [`milestones`]). Defaults when absent, so outcomes
    /// stored before milestones existed still read.
    #[serde(default)]
    pub milestones: Milestones,
    /// The open (or last) dispute.
    pub dispute: Option<DisputeId>,
    /// Title.
    pub title: String,
    /// Terms.
    pub description: Option<Description>,
    /// When it was drafted.
    pub created_at: Option<Timestamp>,
}

impl Contract {
    fn is_party(&self, u: UserId) -> bool {
        self.buyer == Some(u) || self.seller == Some(u)
    }

    fn currency(&self) -> Currency {
        self.currency.unwrap_or(Currency::USD)
    }
}

impl Aggregate for Contract {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::ContractCreated {
                contract_id,
                buyer_id,
                seller_id,
                amount,
                currency,
                inspection_period_hours,
                fund_by,
                fee,
                milestones,
                title,
                description,
                created_at,
                ..
            } => {
                self.milestones = Milestones::created(
                    milestones.as_deref(),
                    title,
                    amount.value(),
                    *inspection_period_hours,
                );
                self.fund_by = *fund_by;
                self.fee = *fee;
                self.title = title.clone();
                self.description = description.clone();
                self.created_at = Some(*created_at);
                self.id = Some(*contract_id);
                self.buyer = Some(*buyer_id);
                self.seller = Some(*seller_id);
                self.amount = amount.value();
                self.currency = Some(*currency);
                self.inspection_period_hours = *inspection_period_hours;
                self.status = ContractStatus::Draft;
            }
            Event::ContractFunded {
                amount, fee_held, ..
            } => {
                // Saturating, as `Wallet::apply` is: only a tampered store gets near it.
                self.held = self.held.saturating_add(amount.value());
                self.fee_held = self.fee_held.saturating_add(value(fee_held));
                self.status = ContractStatus::Active;
                self.milestones.funded();
            }
            Event::ContractDelivered {
                delivered_at,
                auto_release_at,
                milestone,
            } => {
                self.delivered_at = Some(*delivered_at);
                self.milestones
                    .delivered(*milestone, *delivered_at, *auto_release_at);
                self.auto_release_at = self.milestones.next_auto_release();
            }
            Event::ContractReleased {
                amount,
                seller_fee,
                buyer_fee,
                milestone,
                ..
            } => {
                self.milestones
                    .paid(*milestone, amount.value(), MilestoneStatus::Released);
                self.auto_release_at = self.milestones.next_auto_release();
                self.held = self.held.saturating_sub(amount.value());
                self.paid = self.paid.saturating_add(amount.value());
                self.fee_held = self.fee_held.saturating_sub(value(buyer_fee));
                self.fee_charged = self
                    .fee_charged
                    .saturating_add(value(seller_fee))
                    .saturating_add(value(buyer_fee));
                if self.held.is_zero() {
                    self.status = self.milestones.closing_status();
                    self.auto_release_at = None;
                }
            }
            Event::ContractRefunded {
                amount,
                fee_returned,
                milestone,
                ..
            } => {
                self.milestones
                    .paid(*milestone, amount.value(), MilestoneStatus::Refunded);
                self.auto_release_at = self.milestones.next_auto_release();
                self.held = self.held.saturating_sub(amount.value());
                self.fee_held = self.fee_held.saturating_sub(value(fee_returned));
                if self.held.is_zero() {
                    self.status = self.milestones.closing_status();
                    self.auto_release_at = None;
                }
            }
            Event::ContractCancelled { .. } => self.status = ContractStatus::Cancelled,
            Event::ContractExpired { .. } => self.status = ContractStatus::Expired,
            Event::ContractDisputed { dispute_id } => {
                self.status = ContractStatus::Disputed;
                self.dispute = Some(*dispute_id);
            }
            Event::ContractSettled {
                outcome,
                seller_amount,
                seller_fee,
                buyer_fee,
                fee_returned,
                ..
            } => {
                self.held = Decimal::ZERO;
                self.paid = self.paid.saturating_add(*seller_amount);
                self.fee_held = self
                    .fee_held
                    .saturating_sub(value(buyer_fee))
                    .saturating_sub(value(fee_returned));
                self.fee_charged = self
                    .fee_charged
                    .saturating_add(value(seller_fee))
                    .saturating_add(value(buyer_fee));
                self.auto_release_at = None;
                self.milestones.settled(*outcome);
                self.status = self.milestones.closing_status();
            }
            _ => {}
        }
        // Not asserted to stay at or above zero: folding takes what a tampered store says,
        // so that `verify` names it (see `Wallet::apply`).
    }
}

fn value(a: &Option<Amount>) -> Decimal {
    a.map_or(Decimal::ZERO, |a| a.value())
}

fn transition(code: &'static str, detail: impl Into<String>) -> DomainError {
    DomainError::InvalidTransition {
        code,
        detail: detail.into(),
    }
}

fn check_text(raw: &str, max: usize, what: &'static str) -> Result<String, DomainError> {
    let s = raw.trim();
    if s.is_empty()
        || s.chars().count() > max
        || s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(DomainError::InvalidText(what));
    }
    Ok(s.to_owned())
}

/// Draft a contract.
#[derive(Debug, Clone)]
pub struct CreateContract {
    /// The id minted for it.
    pub contract_id: ContractId,
    /// Who drafts it (must be the buyer or the seller).
    pub actor: UserId,
    /// Who pays.
    pub buyer_id: UserId,
    /// Who gets paid.
    pub seller_id: UserId,
    /// Title (1 to 200 characters).
    pub title: String,
    /// Terms.
    pub description: Option<Description>,
    /// Price; the milestones' sum when absent (then `milestones` is required).
    pub amount: Option<Amount>,
    /// The stages the price is paid in; one implicit milestone when absent.
    pub milestones: Option<Vec<MilestoneTerms>>,
    /// Currency.
    pub currency: Currency,
    /// Inspection window after delivery, in hours.
    pub inspection_period_hours: Option<u32>,
    /// Funding deadline: after `now`, at most [`FUND_BY_DAYS_MAX`] days ahead.
    pub fund_by: Option<Timestamp>,
    /// When the command is decided.
    pub now: Timestamp,
}

/// Decides a contract's creation. It copies the fee schedule in force for its currency;
/// later changes of the schedule never alter it.
pub fn create(
    existing: &Versioned<Contract>,
    buyer: &Versioned<User>,
    seller: &Versioned<User>,
    schedule: &FeeSchedule,
    cmd: &CreateContract,
) -> Result<Vec<StreamWrite>, DomainError> {
    let title = check_text(
        &cmd.title,
        TITLE_CHARS_MAX,
        "title must be 1 to 200 characters without control characters",
    )?;
    if cmd
        .inspection_period_hours
        .is_some_and(|h| h == 0 || h > INSPECTION_HOURS_MAX)
    {
        return Err(DomainError::InvalidText(
            "inspectionPeriodHours must be from 1 to 8784",
        ));
    }
    if let Some(fund_by) = cmd.fund_by {
        if fund_by <= cmd.now {
            return Err(DomainError::InvalidFundBy("fundBy must be in the future"));
        }
        if fund_by > cmd.now.plus_days(FUND_BY_DAYS_MAX) {
            return Err(DomainError::InvalidFundBy(
                "fundBy must be at most a year (366 days) ahead",
            ));
        }
    }
    let (milestones, amount) = match &cmd.milestones {
        Some(terms) => {
            let (terms, total) = check_terms(terms, cmd.amount, cmd.currency)?;
            (Some(terms), total)
        }
        None => (
            None,
            cmd.amount.ok_or(DomainError::InvalidMilestones(
                "amount is required unless milestones are given",
            ))?,
        ),
    };
    if cmd.buyer_id == cmd.seller_id {
        return Err(DomainError::SameParties);
    }
    if cmd.actor != cmd.buyer_id && cmd.actor != cmd.seller_id {
        return Err(DomainError::Forbidden(
            "only the buyer or the seller may create a contract",
        ));
    }
    if !buyer.state.exists() || !seller.state.exists() {
        return Err(DomainError::UnknownUser);
    }
    if existing.version > 0 {
        return Err(transition("CONTRACT_EXISTS", "the contract already exists"));
    }
    Ok(vec![StreamWrite {
        stream: StreamId::contract(cmd.contract_id),
        expected_version: 0,
        events: vec![Event::ContractCreated {
            contract_id: cmd.contract_id,
            buyer_id: cmd.buyer_id,
            seller_id: cmd.seller_id,
            title,
            description: cmd.description.clone(),
            amount,
            currency: cmd.currency,
            inspection_period_hours: cmd.inspection_period_hours,
            fund_by: cmd.fund_by,
            milestones,
            fee: schedule
                .terms
                .filter(|_| schedule.currency == Some(cmd.currency)),
            created_by: cmd.actor,
            created_at: cmd.now,
        }],
    }])
}

fn existing(contract: &Versioned<Contract>) -> Result<ContractId, DomainError> {
    contract.state.id.ok_or(DomainError::ContractNotFound)
}

fn require_active(c: &Contract, what: &str) -> Result<(), DomainError> {
    match c.status {
        ContractStatus::Active => Ok(()),
        ContractStatus::Disputed => Err(transition(
            "CONTRACT_DISPUTED",
            format!("cannot {what}: the contract is frozen by an open dispute"),
        )),
        other => Err(transition(
            "CONTRACT_NOT_ACTIVE",
            format!("cannot {what} a contract that is {}", other.as_str()),
        )),
    }
}

/// Milestone `n` of an active contract, still holding money: what a milestone's delivery,
/// release or refund needs.
fn open_milestone<'c>(c: &'c Contract, n: u16, what: &str) -> Result<&'c Milestone, DomainError> {
    let m = c
        .milestones
        .get(n)
        .ok_or(DomainError::MilestoneNotFound(n))?;
    require_active(c, what)?;
    if !m.status.is_open() || m.held_amount <= Decimal::ZERO {
        return Err(transition(
            "MILESTONE_CLOSED",
            format!("cannot {what} milestone {n}: it is {}", m.status.as_str()),
        ));
    }
    Ok(m)
}
