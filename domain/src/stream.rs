//! Streams: one per aggregate instance, named `<category>-<uuid>`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::ids::{ContractId, DisputeId, FeeScheduleId, RevenueId, UserId, WalletId};

/// The name of one event stream, such as `wallet-0190c6c1-…`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    /// The stream of a user aggregate.
    pub fn user(id: UserId) -> Self {
        StreamId(format!("user-{}", id.0))
    }

    /// The stream of a wallet aggregate.
    pub fn wallet(id: WalletId) -> Self {
        StreamId(format!("wallet-{}", id.0))
    }

    /// The stream of a contract aggregate (and its escrow account).
    pub fn contract(id: ContractId) -> Self {
        StreamId(format!("contract-{}", id.0))
    }

    /// The stream of a dispute aggregate.
    pub fn dispute(id: DisputeId) -> Self {
        StreamId(format!("dispute-{}", id.0))
    }

    /// The stream of a currency's fee schedule.
    pub fn fee_schedule(id: FeeScheduleId) -> Self {
        StreamId(format!("feeschedule-{}", id.0))
    }

    /// The stream of the platform's revenue account in a currency.
    pub fn revenue(id: RevenueId) -> Self {
        StreamId(format!("revenue-{}", id.0))
    }

    /// The stream of a pay-in.
    pub fn payin(id: crate::ids::PayinId) -> Self {
        StreamId(format!("payin-{}", id.0))
    }

    /// The stream of a payout.
    pub fn payout(id: crate::ids::PayoutId) -> Self {
        StreamId(format!("payout-{}", id.0))
    }

    /// The stream of a webhook endpoint.
    pub fn webhook(id: crate::ids::WebhookId) -> Self {
        StreamId(format!("webhook-{}", id.0))
    }

    /// Wraps a stored stream name without checking it (it came from the event store).
    pub fn from_stored(name: String) -> Self {
        StreamId(name)
    }

    /// The stream name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The aggregate category: the part before the first `-` (`wallet`, `user`, …).
    pub fn category(&self) -> &str {
        self.0.split_once('-').map_or(self.0.as_str(), |(c, _)| c)
    }

    /// The aggregate id: the part after the first `-`.
    pub fn aggregate_id(&self) -> &str {
        self.0.split_once('-').map_or("", |(_, id)| id)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

/// An aggregate's state together with the stream version it was folded up to.
/// Version 0 means the stream has no events (the aggregate does not exist yet).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Versioned<T> {
    /// The folded state.
    pub state: T,
    /// How many events of the stream were folded.
    pub version: u64,
}

/// Anything that can be rebuilt by folding its stream's events in order.
pub trait Aggregate: Default {
    /// Folds one event. Events that do not concern this aggregate are ignored.
    fn apply(&mut self, event: &Event);
}

impl<T: Aggregate> Versioned<T> {
    /// Folds events that follow `self.version`, in stream order.
    pub fn apply(&mut self, event: &Event) {
        self.state.apply(event);
        self.version += 1;
    }

    /// Builds state from a complete stream history.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut v = Versioned::default();
        for e in events {
            v.apply(e);
        }
        v
    }
}

/// New events for one stream, to be appended only if the stream is still at
/// `expected_version` (0: the stream must not exist yet).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamWrite {
    /// The stream to append to.
    pub stream: StreamId,
    /// The version the decision was based on.
    pub expected_version: u64,
    /// The events, in order; never empty.
    pub events: Vec<Event>,
}
