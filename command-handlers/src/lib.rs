//! The write side: load aggregate state from the event store, let the pure domain decide,
//! append every touched stream in one transaction, and record the idempotency key with it.
//!
//! Version conflicts (another writer touched a stream between our read and our append) are
//! retried here from fresh state, up to [`CONFLICT_RETRIES_MAX`] times, so a client only
//! sees a conflict when its own precondition fails.

mod cache;
mod context;
mod group;
mod ledger;

pub use context::{Actor, CommandContext};
pub use ledger::{
    is_money_event, Command, CommandError, ContractChange, DisputeChange, Executed, Ledger,
    LedgerCore, LoginRecord, Observer, Outcome, Registered, Respond, UserStatusChange,
    WalletChange,
};

/// How many times one command is re-decided after a stream version conflict before giving
/// up with [`CommandError::Busy`]. Each retry re-reads only the streams' new tails, so even
/// a hot wallet with 64 concurrent writers settles well within this bound.
pub const CONFLICT_RETRIES_MAX: usize = 64;
