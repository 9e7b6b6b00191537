//! The write side: load aggregate state from the event store, let the pure domain decide,
//! append every touched stream in one transaction, and record the idempotency key with it.
//!
//! - `command`: the commands, their outcomes and their errors.
//! - `load`: how a decision reads state (the cache, or a batch's overlay over it).
//! - `decide`: one module per command family, calling into `domain`.
//! - `committer`: the only write path, in batches; started and stopped by the ledger.
//! - `ledger`: executes a command: decide, commit, decide again after a conflict.
//!
//! Version conflicts (another writer touched a stream between our read and our append) are
//! retried here from fresh state, up to [`CONFLICT_RETRIES_MAX`] times, so a client only
//! sees a conflict when its own precondition fails.

mod cache;
mod command;
mod committer;
mod context;
mod decide;
mod ledger;
mod load;
mod observer;

pub use command::{
    is_money_event, Command, CommandError, ContractChange, DisputeChange, Executed, LoginRecord,
    Outcome, Registered, UserStatusChange, WalletChange,
};
pub use context::{Actor, CommandContext};
pub use ledger::Ledger;
pub use observer::Observer;

/// How many times one command is re-decided after a stream version conflict before giving
/// up with [`CommandError::Busy`]. Each retry re-reads only the streams' new tails, so even
/// a hot wallet with 64 concurrent writers settles well within this bound.
pub const CONFLICT_RETRIES_MAX: usize = 64;
