//! Read models built from the event stream: `rm_users`, `rm_wallets`, `rm_transactions`.
//!
//! One apply function serves both the live worker (JetStream durable pull consumer) and
//! replay (the Postgres feed). An event is applied only when it is the next version of its
//! stream, in the same transaction that records that version, so redelivered or
//! duplicated messages change nothing (exactly-once effect).

mod apply;
mod escrow_rows;
mod freshness;
mod payout_rows;
mod platform_rows;
pub mod read;
pub mod replay;
mod wallet_rows;
mod webhook_rows;
mod worker;

pub use apply::{
    apply_batch, checkpoints, reset, stream_version, ApplyReport, Incoming, PROJECTION,
};
pub use freshness::Freshness;
pub use worker::{lease_name, ProjectionWorker, WorkerSettings};
