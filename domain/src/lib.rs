//! The pure core of the escrow ledger: money, identities, aggregates, commands and events.
//!
//! Nothing in this crate performs IO, spawns tasks or reads a clock: every decision is a
//! function of the events already recorded and of the command (which carries any time or
//! id it needs). That is what lets the write side retry a command from fresh state and lets
//! replay rebuild every read model exactly.
//!
//! The shape follows the classic event-sourcing split:
//! * `evolve` (here [`User::apply`], [`Wallet::apply`]) folds recorded events into state;
//! * `decide` (the functions in [`user`] and [`wallet`]) turns state plus a command into new
//!   events for every stream the command touches, or a [`DomainError`].

pub mod actor;
pub mod codec;
pub mod contract;
pub mod dispute;
pub mod email;
pub mod error;
pub mod event;
pub mod fees;
pub mod ids;
pub mod ledger;
pub mod money;
pub mod payin;
pub mod payout;
pub mod stream;
pub mod text;
pub mod user;
pub mod wallet;
pub mod webhook;

pub use actor::Actor;
pub use contract::{Contract, ContractStatus};
pub use dispute::{Dispute, DisputeOutcome, DisputeStatus};
pub use email::Email;
pub use error::DomainError;
pub use event::{DepositChannel, Event};
pub use fees::{FeePayer, FeeSchedule, FeeTerms, Revenue};
pub use ids::{
    ContractId, DisputeId, FeeScheduleId, PayinId, PayoutId, RevenueId, Timestamp, TransactionId,
    UserId, WalletId, WebhookId,
};
pub use money::{Amount, Currency, MoneyError};
pub use payin::{Payin, PayinStatus};
pub use payout::{Payout, PayoutStatus};
pub use stream::{StreamId, StreamWrite, Versioned};
pub use text::Description;
pub use user::{Role, User};
pub use wallet::Wallet;
pub use webhook::{WebhookEndpoint, WebhookStatus};
