//! Milestones: a contract's price paid in stages, each delivered, inspected and released
//! (or refunded) on its own.
//!
//! Every contract has at least one. A contract created without `milestones` has one
//! implicit milestone carrying its title, price and inspection window, so every contract,
//! and every event stored before milestones existed, reads the same way: the fold makes
//! that milestone from `ContractCreated`, and events without a `milestone` number act on
//! the contract as a whole.
//!
//! How a contract-wide movement meets its milestones. A release or refund of the whole
//! contract (no `milestone` in the event) takes money from the milestones still holding
//! any, lowest number first; a milestone whose held amount reaches zero closes as
//! `RELEASED` or `REFUNDED` by the movement that emptied it. A dispute's settlement closes
//! every milestone still holding money as the outcome says (`RELEASED`, `REFUNDED` or
//! `SETTLED` for a split). The contract closes when nothing is held: `REFUNDED` when every
//! milestone was refunded, `SETTLED` after a split, `COMPLETED` otherwise (every milestone
//! released, or a mix).
//!
//! Events name a milestone only on contracts with more than one, so a contract without
//! milestones writes exactly the events it wrote before they existed.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{check_text, ContractStatus, INSPECTION_HOURS_MAX, TITLE_CHARS_MAX};
use crate::dispute::DisputeOutcome;
use crate::error::DomainError;
use crate::ids::Timestamp;
use crate::money::{Amount, Currency};

/// Most milestones on one contract.
pub const MILESTONES_MAX: usize = 50;

/// One stage as the contract's creator states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MilestoneTerms {
    /// What is delivered (1 to 200 characters).
    pub title: String,
    /// Its part of the price.
    pub amount: Amount,
    /// Its own inspection window; the contract's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection_period_hours: Option<u32>,
}

/// Checks the stages asked for against the price (if one is given) and returns the terms to
/// record and the price: the sum of the stages.
pub fn check_terms(
    terms: &[MilestoneTerms],
    amount: Option<Amount>,
    currency: Currency,
) -> Result<(Vec<MilestoneTerms>, Amount), DomainError> {
    if terms.is_empty() || terms.len() > MILESTONES_MAX {
        return Err(DomainError::InvalidMilestones(
            "milestones must list 1 to 50 items",
        ));
    }
    let mut checked = Vec::with_capacity(terms.len());
    let mut sum = Decimal::ZERO;
    for t in terms {
        let title = check_text(
            &t.title,
            TITLE_CHARS_MAX,
            "a milestone's title must be 1 to 200 characters without control characters",
        )?;
        if t.inspection_period_hours
            .is_some_and(|h| h == 0 || h > INSPECTION_HOURS_MAX)
        {
            return Err(DomainError::InvalidMilestones(
                "a milestone's inspectionPeriodHours must be from 1 to 8784",
            ));
        }
        // 50 amounts of at most 10^9 each: far from any Decimal bound.
        sum = sum.saturating_add(t.amount.value());
        checked.push(MilestoneTerms {
            title,
            amount: t.amount,
            inspection_period_hours: t.inspection_period_hours,
        });
    }
    let total = Amount::new(sum, currency)?;
    if let Some(price) = amount {
        if price.value() != total.value() {
            return Err(DomainError::MilestonesMismatch {
                amount: currency.format(price.value()),
                sum: currency.format(sum),
            });
        }
    }
    Ok((checked, total))
}

/// Where a milestone is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MilestoneStatus {
    /// Not delivered yet (its money is held once the contract is funded).
    #[default]
    Pending,
    /// Delivered; its inspection window runs.
    Delivered,
    /// Paid to the seller.
    Released,
    /// Returned to the buyer.
    Refunded,
    /// Split by an arbiter.
    Settled,
}

impl MilestoneStatus {
    /// The JSON name.
    pub fn as_str(&self) -> &'static str {
        match self {
            MilestoneStatus::Pending => "PENDING",
            MilestoneStatus::Delivered => "DELIVERED",
            MilestoneStatus::Released => "RELEASED",
            MilestoneStatus::Refunded => "REFUNDED",
            MilestoneStatus::Settled => "SETTLED",
        }
    }

    /// Still open: delivered or not, its money is (or will be) held.
    pub fn is_open(&self) -> bool {
        matches!(self, MilestoneStatus::Pending | MilestoneStatus::Delivered)
    }
}

/// One stage of a contract, folded from its stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Milestone {
    /// Counted from 1.
    pub number: u16,
    /// What is delivered.
    pub title: String,
    /// Its part of the price.
    pub amount: Decimal,
    /// What escrow holds for it now.
    pub held_amount: Decimal,
    /// Where it is.
    pub status: MilestoneStatus,
    /// Hours the buyer has after its delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection_period_hours: Option<u32>,
    /// When the seller delivered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<Timestamp>,
    /// When its held money releases by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_release_at: Option<Timestamp>,
}

/// A contract's milestones, in order. The fold's rules live here, so the write side's
/// state and the read model apply them the same way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Milestones(pub Vec<Milestone>);

impl Milestones {
    /// The milestones a `ContractCreated` makes: the ones it lists, or the one implicit
    /// milestone of a contract created without any.
    pub fn created(
        terms: Option<&[MilestoneTerms]>,
        title: &str,
        price: Decimal,
        inspection_period_hours: Option<u32>,
    ) -> Self {
        let list = match terms {
            Some(terms) if !terms.is_empty() => terms
                .iter()
                .zip(1u16..)
                .map(|(t, number)| Milestone {
                    number,
                    title: t.title.clone(),
                    amount: t.amount.value(),
                    held_amount: Decimal::ZERO,
                    status: MilestoneStatus::Pending,
                    inspection_period_hours: t.inspection_period_hours.or(inspection_period_hours),
                    delivered_at: None,
                    auto_release_at: None,
                })
                .collect(),
            _ => vec![Milestone {
                number: 1,
                title: title.to_owned(),
                amount: price,
                held_amount: Decimal::ZERO,
                status: MilestoneStatus::Pending,
                inspection_period_hours,
                delivered_at: None,
                auto_release_at: None,
            }],
        };
        Milestones(list)
    }

    /// Milestone `n` (from 1).
    pub fn get(&self, n: u16) -> Option<&Milestone> {
        self.0.iter().find(|m| m.number == n)
    }

    /// How events refer to milestone `n`: by number only when there are several.
    pub fn reference(&self, n: u16) -> Option<u16> {
        (self.0.len() > 1).then_some(n)
    }

    fn targets(&mut self, milestone: Option<u16>) -> impl Iterator<Item = &mut Milestone> {
        self.0
            .iter_mut()
            .filter(move |m| milestone.is_none_or(|n| m.number == n))
    }

    /// Funding: each milestone's part of the price is held.
    pub fn funded(&mut self) {
        for m in &mut self.0 {
            m.held_amount = m.amount;
        }
    }

    /// A delivery of milestone `n`, or of every open milestone not delivered yet.
    pub fn delivered(
        &mut self,
        milestone: Option<u16>,
        at: Timestamp,
        auto_release_at: Option<Timestamp>,
    ) {
        for m in self.targets(milestone) {
            if m.status == MilestoneStatus::Pending {
                m.status = MilestoneStatus::Delivered;
                m.delivered_at = Some(at);
                m.auto_release_at = auto_release_at;
            }
        }
    }

    /// `amount` left escrow for milestone `n`, or for the contract as a whole (lowest
    /// number first); a milestone emptied by it closes as `closed`.
    pub fn paid(&mut self, milestone: Option<u16>, amount: Decimal, closed: MilestoneStatus) {
        let mut left = amount;
        for m in self.targets(milestone) {
            if left <= Decimal::ZERO {
                break;
            }
            if m.held_amount <= Decimal::ZERO {
                continue;
            }
            let part = left.min(m.held_amount);
            m.held_amount = m.held_amount.saturating_sub(part);
            left = left.saturating_sub(part);
            if m.held_amount.is_zero() {
                m.status = closed;
                m.auto_release_at = None;
            }
        }
    }

    /// An arbiter settled everything still held.
    pub fn settled(&mut self, outcome: DisputeOutcome) {
        let closed = match outcome {
            DisputeOutcome::Release => MilestoneStatus::Released,
            DisputeOutcome::Refund => MilestoneStatus::Refunded,
            DisputeOutcome::Split => MilestoneStatus::Settled,
        };
        for m in &mut self.0 {
            if m.held_amount > Decimal::ZERO || m.status.is_open() {
                m.held_amount = Decimal::ZERO;
                m.status = closed;
                m.auto_release_at = None;
            }
        }
    }

    /// The first moment a delivered milestone releases by itself.
    pub fn next_auto_release(&self) -> Option<Timestamp> {
        self.0
            .iter()
            .filter(|m| m.status == MilestoneStatus::Delivered && m.held_amount > Decimal::ZERO)
            .filter_map(|m| m.auto_release_at)
            .min()
    }

    /// The lowest-numbered delivered milestone whose inspection window has ended at `now`.
    pub fn due(&self, now: Timestamp) -> Option<&Milestone> {
        self.0.iter().find(|m| {
            m.status == MilestoneStatus::Delivered
                && m.held_amount > Decimal::ZERO
                && m.auto_release_at.is_some_and(|t| t <= now)
        })
    }

    /// The open milestones not delivered yet.
    pub fn undelivered(&self) -> impl Iterator<Item = &Milestone> {
        self.0
            .iter()
            .filter(|m| m.status == MilestoneStatus::Pending)
    }

    /// How a contract whose escrow is empty closes (see the module's documentation).
    pub fn closing_status(&self) -> ContractStatus {
        if self.0.iter().any(|m| m.status == MilestoneStatus::Settled) {
            ContractStatus::Settled
        } else if !self.0.is_empty() && self.0.iter().all(|m| m.status == MilestoneStatus::Refunded)
        {
            ContractStatus::Refunded
        } else {
            ContractStatus::Completed
        }
    }
}
