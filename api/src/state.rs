//! Shared application state handed to every handler.

use std::sync::Arc;
use std::time::Duration;

use command_handlers::Ledger;
use event_store::EventStore;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::auth::TokenKeys;
use crate::clock::Clock;

/// Everything a handler needs, behind one `Arc`: extractors clone the state for every
/// request, and cloning the fields one by one (a `String`, a watch receiver, nine reference
/// counts) is work every request pays for nothing.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Wraps the shared parts.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    /// The write side.
    pub ledger: Arc<Ledger>,
    /// The database (event store and read models).
    pub pool: PgPool,
    /// Token signing and checking.
    pub tokens: Arc<TokenKeys>,
    /// The NATS connection, for readiness.
    pub nats: Option<escrow_nats::Nats>,
    /// Wakes the relay after a command commits, so publication does not wait for a poll.
    pub relay_wake: Arc<Notify>,
    /// An argon2id hash of a random password, verified against when an e-mail is unknown
    /// so that unknown-user and wrong-password logins take the same time.
    pub dummy_hash: Arc<String>,
    /// How long a query with `minPosition` waits for the read models.
    pub read_wait: Duration,
    /// Whether users may deposit into their own wallets (`SELF_DEPOSITS`).
    pub self_deposits: bool,
    /// Whether queries without `minPosition` wait for the caller's own last command.
    pub session_consistency: bool,
    /// What this instance knows of its read models' progress (read-your-writes).
    pub freshness: Arc<projections::Freshness>,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Whether tokens still speak for their holders (sessions, suspensions, roles).
    pub sessions: Arc<crate::sessions::Sessions>,
    /// Lifetime of a refresh token, in seconds.
    pub refresh_ttl_seconds: i64,
    /// This process's open WebSocket connections.
    pub hub: Arc<crate::notify::Hub>,
    /// Most WebSockets one user may hold open on this process.
    pub ws_connections_per_user_max: usize,
    /// The NATS event subject prefix (notifications are published beside it).
    pub subject_prefix: String,
    /// Rate limits and the request timeout.
    pub limits: Arc<crate::limits::Limits>,
    /// Request counters and latencies.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Webhook endpoints' address policy and secret sealing.
    pub webhooks: Arc<WebhookAdmin>,
    /// Turns true when the process is shutting down (WebSockets say goodbye).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl AppState {
    /// The event store.
    pub fn store(&self) -> &EventStore {
        self.ledger.store()
    }
}

/// What the webhook routes need besides the ledger.
#[derive(Debug)]
pub struct WebhookAdmin {
    /// `WEBHOOK_ALLOW_PRIVATE_NETWORKS`.
    pub allow_private_networks: bool,
    /// Seals secrets at rest (`WEBHOOK_SECRETS_KEY`).
    pub secrets: webhooks::SecretBox,
}
