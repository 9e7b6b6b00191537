//! Everything that knows JetStream: the stream's setup, the public envelope and subject
//! scheme, the outbox relay (Postgres feed → JetStream), and subscriber helpers.

mod connection;
mod envelope;
mod ordered;
mod relay;
mod tail;

use std::time::Duration;

use async_nats::jetstream::{self, stream};

pub use connection::{durable_consumer, server_addrs, Nats, PullConsumer, Subscription};
pub use envelope::{envelope_bytes, subject_for, Envelope, ENVELOPE_VERSION};
pub use ordered::{FeedItem, OrderedFeed};
pub use relay::{
    lease_name as relay_lease_name, publish_errors, Relay, RelaySettings,
    LEASE_PREFIX as RELAY_LEASE_PREFIX,
};
pub use tail::{export, tail, TailOptions};

/// Where events go on NATS.
#[derive(Debug, Clone)]
pub struct JetStreamSettings {
    /// NATS server URL, such as `nats://127.0.0.1:4222`.
    pub url: String,
    /// The JetStream stream holding every event.
    pub stream_name: String,
    /// Subjects are `<prefix>.<category>.<aggregate id>.<EventType>`.
    pub subject_prefix: String,
    /// Copies of the stream the NATS cluster keeps (1 on a single server; 3 in a
    /// cluster of three). The consumers take the stream's.
    pub replicas: usize,
}

impl Default for JetStreamSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream_name: "ESCROW_EVENTS".into(),
            subject_prefix: "escrow.events".into(),
            replicas: 1,
        }
    }
}

/// How long JetStream remembers a `Nats-Msg-Id` to drop a duplicate publish. Two minutes
/// is JetStream's default; consumers are idempotent by stream version beyond it.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Creates the events stream if it does not exist yet.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &JetStreamSettings,
) -> anyhow::Result<stream::Stream> {
    let stream = js
        .get_or_create_stream(stream::Config {
            name: settings.stream_name.clone(),
            subjects: vec![format!("{}.>", settings.subject_prefix)],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            num_replicas: settings.replicas.max(1),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating JetStream stream {}: {e}", settings.stream_name))?;
    Ok(stream)
}
