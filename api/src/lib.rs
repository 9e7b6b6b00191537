//! The HTTP face of the ledger (axum), its configuration, and the process that runs the
//! API, the outbox relay and the projection worker together or apart.

pub mod admin;
pub mod auth;
pub mod client_addr;
pub mod clock;
pub mod config;
pub mod error;
pub mod extract;
pub mod limits;
pub mod login_guard;
pub mod metrics;
pub mod notify;
pub mod openapi;
pub mod otel;
pub mod pages;
pub mod query_node;
pub mod retention;
pub mod routes;
pub mod scheduler;
pub mod server;
pub mod sessions;
pub mod state;
pub mod telemetry;
pub mod verify;

use chrono::{DateTime, SecondsFormat, Utc};

pub use config::{ServeConfig, WorkerRole};
pub use server::{start, start_with_clock, Running};

/// Formats a time as RFC 3339 in UTC with millisecond precision (`2026-11-23T10:00:00.123Z`).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
