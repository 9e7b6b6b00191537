//! The process's NATS connection: core publish and subscribe (live notifications), and the
//! JetStream context the relay, the projection worker and the command line use. Other
//! crates hold a [`Nats`] and call these; none of them names the NATS client.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};

use crate::JetStreamSettings;

/// A NATS connection and its JetStream context.
#[derive(Debug, Clone)]
pub struct Nats {
    client: async_nats::Client,
    js: jetstream::Context,
}

/// Messages of a core subscription.
pub type Subscription = async_nats::Subscriber;

/// A durable pull consumer, as [`durable_consumer`] makes it.
pub type PullConsumer = consumer::Consumer<consumer::pull::Config>;

/// The servers of `url`: one URL, or several separated by commas (the members of a
/// cluster; the client moves to another when its server goes away).
pub fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, async_nats::ConnectError> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>().map_err(|_| {
                async_nats::ConnectError::from(async_nats::ConnectErrorKind::ServerParse)
            })
        })
        .collect()
}

impl Nats {
    /// Connects in the background and retries forever, so a server that starts while NATS
    /// is down still serves commands (the relay catches up). `url` may list several servers
    /// separated by commas.
    pub async fn connect(url: &str) -> Result<Self, async_nats::ConnectError> {
        let client = async_nats::connect_with_options(
            server_addrs(url)?,
            async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .max_reconnects(None)
                .connection_timeout(Duration::from_secs(2))
                .name("escrow-ledger"),
        )
        .await?;
        Ok(Self::of(client))
    }

    /// Connects once, failing at once if NATS does not answer (for the command line).
    pub async fn connect_once(url: &str) -> Result<Self, async_nats::ConnectError> {
        Ok(Self::of(async_nats::connect(server_addrs(url)?).await?))
    }

    fn of(client: async_nats::Client) -> Self {
        let js = jetstream::new(client.clone());
        Nats { client, js }
    }

    /// The JetStream context, for this crate's relay and tail.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publishes `payload` on `subject` (core NATS, at most once).
    pub async fn publish(&self, subject: String, payload: Vec<u8>) -> anyhow::Result<()> {
        self.client
            .publish(subject, payload.into())
            .await
            .map_err(|e| anyhow::anyhow!("publishing: {e}"))
    }

    /// Subscribes to `subject` (wildcards allowed).
    pub async fn subscribe(&self, subject: String) -> anyhow::Result<Subscription> {
        self.client
            .subscribe(subject)
            .await
            .map_err(|e| anyhow::anyhow!("subscribing: {e}"))
    }
}

/// The durable pull consumer `name` of the events stream (created if missing), with
/// explicit acks, delivering from the start of the stream.
pub async fn durable_consumer(
    js: &jetstream::Context,
    settings: &JetStreamSettings,
    name: &str,
) -> anyhow::Result<PullConsumer> {
    let stream = crate::ensure_stream(js, settings).await?;
    stream
        .get_or_create_consumer(
            name,
            consumer::pull::Config {
                durable_name: Some(name.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                deliver_policy: consumer::DeliverPolicy::All,
                // Far longer than a batch transaction takes (~0.1 s for 256 events), and
                // short enough that a crashed worker's unacked messages come back within
                // seconds. Later events of the same streams don't wait even that long:
                // the worker fills their gaps from the event store.
                ack_wait: Duration::from_secs(5),
                // A pull consumer silently stops delivering at this many unacked
                // messages; keep it well above one batch.
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating consumer: {e}"))
}
