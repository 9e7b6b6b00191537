//! The dispute aggregate: raised by a party of an active contract, resolved by an arbiter.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::ids::{ContractId, DisputeId, Timestamp, UserId};
use crate::stream::Aggregate;

/// How a dispute ends for the money held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DisputeOutcome {
    /// Everything held goes to the seller.
    Release,
    /// Everything held goes back to the buyer.
    Refund,
    /// `sellerAmount` to the seller, `buyerAmount` to the buyer, summing to what is held.
    Split,
}

impl DisputeOutcome {
    /// The JSON name.
    pub fn as_str(&self) -> &'static str {
        match self {
            DisputeOutcome::Release => "RELEASE",
            DisputeOutcome::Refund => "REFUND",
            DisputeOutcome::Split => "SPLIT",
        }
    }
}

/// Where a dispute is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DisputeStatus {
    /// Raised, waiting for an arbiter.
    #[default]
    Open,
    /// Decided.
    Resolved,
}

impl DisputeStatus {
    /// The JSON name.
    pub fn as_str(&self) -> &'static str {
        match self {
            DisputeStatus::Open => "OPEN",
            DisputeStatus::Resolved => "RESOLVED",
        }
    }
}

/// State of one dispute, folded from its stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dispute {
    /// Set once raised.
    pub id: Option<DisputeId>,
    /// The contract in dispute.
    pub contract_id: Option<ContractId>,
    /// The party that raised it.
    pub raised_by: Option<UserId>,
    /// Open or resolved.
    pub status: DisputeStatus,
    /// The decision, once resolved.
    pub outcome: Option<DisputeOutcome>,
    /// Paid to the seller by the decision.
    pub seller_amount: Decimal,
    /// Returned to the buyer by the decision.
    pub buyer_amount: Decimal,
    /// What the raising party said.
    pub description: String,
    /// When it was raised.
    pub raised_at: Option<Timestamp>,
    /// The arbiter's reasoning.
    pub resolution: Option<String>,
    /// Who decided.
    pub resolved_by: Option<UserId>,
    /// When it was decided.
    pub resolved_at: Option<Timestamp>,
}

impl Aggregate for Dispute {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::DisputeRaised {
                dispute_id,
                contract_id,
                raised_by,
                description,
                raised_at,
            } => {
                self.description = description.clone();
                self.raised_at = Some(*raised_at);
                self.id = Some(*dispute_id);
                self.contract_id = Some(*contract_id);
                self.raised_by = Some(*raised_by);
                self.status = DisputeStatus::Open;
            }
            Event::DisputeResolved {
                outcome,
                seller_amount,
                buyer_amount,
                resolution,
                resolved_by,
                resolved_at,
                ..
            } => {
                self.resolution = Some(resolution.clone());
                self.resolved_by = Some(*resolved_by);
                self.resolved_at = Some(*resolved_at);
                self.status = DisputeStatus::Resolved;
                self.outcome = Some(*outcome);
                self.seller_amount = *seller_amount;
                self.buyer_amount = *buyer_amount;
            }
            _ => {}
        }
    }
}
