//! The outbox relay: publishes the event store's feed to JetStream, in feed order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use event_store::{EventStore, FeedCursor, Lease};
use sqlx::PgConnection;
use tokio::sync::{watch, Notify};

use crate::envelope::{subject_for, EnvelopeText};
use crate::JetStreamSettings;

/// Failed publish rounds since the process started (exported as a metric).
static PUBLISH_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Failed JetStream publish rounds since this process started.
pub fn publish_errors() -> u64 {
    PUBLISH_ERRORS.load(Ordering::Relaxed)
}

/// How the names of relay leases and checkpoints start.
pub const LEASE_PREFIX: &str = "relay:";

/// The name of the relay's lease and checkpoint for the JetStream stream `stream_name`.
pub fn lease_name(stream_name: &str) -> String {
    format!("{LEASE_PREFIX}{stream_name}")
}

/// Tuning of the relay loop.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Events read and published per round. Publishes in a round are pipelined (all sent,
    /// then all acks awaited), so this bounds both memory and unacknowledged publishes.
    pub batch_events_max: i64,
    /// How long to sleep when the feed is empty and nobody woke us.
    pub idle_poll_ms: u64,
    /// How long to wait for one JetStream publish acknowledgement.
    pub ack_timeout_ms: u64,
    /// Pause after a failure (NATS or Postgres down) before trying again.
    pub retry_backoff_ms: u64,
    /// Pause after a round of fewer than a quarter of `batch_events_max` events, so that
    /// under steady load a round carries many commits (each round costs a feed query and a
    /// checkpoint write whatever its size). Adds at most this much to projection lag.
    pub small_round_pause_ms: u64,
    /// The checkpoint is saved at most this often (and when the relay stops). Each save is
    /// a transaction of its own, and so an fsync: saved after every round, they were 65 of
    /// the ~160 WAL flushes a second under load, queueing with the group commit's on the
    /// same disk. A relay that dies republishes what it sent since its last save, at most
    /// this long: JetStream drops those repeats by `Nats-Msg-Id` (its window is 2 min), and
    /// consumers are idempotent by stream version anyway.
    pub checkpoint_interval_ms: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_events_max: 512,
            idle_poll_ms: 100,
            ack_timeout_ms: 5_000,
            retry_backoff_ms: 500,
            small_round_pause_ms: 10,
            checkpoint_interval_ms: 250,
        }
    }
}

/// Publishes every committed event to JetStream with `Nats-Msg-Id` = event id, in feed
/// order, and checkpoints in Postgres after each acknowledged batch. Only the holder of the
/// relay lease publishes; other processes stand by.
pub struct Relay {
    store: EventStore,
    js: jetstream::Context,
    nats: JetStreamSettings,
    settings: RelaySettings,
    wake: Arc<Notify>,
}

impl Relay {
    /// A relay from `store` to the stream described by `nats`.
    pub fn new(
        store: EventStore,
        js: jetstream::Context,
        nats: JetStreamSettings,
        settings: RelaySettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            js,
            nats,
            settings,
            wake,
        }
    }

    fn checkpoint_name(&self) -> String {
        lease_name(&self.nats.stream_name)
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let backoff = Duration::from_millis(self.settings.retry_backoff_ms);
        while !*shutdown.borrow() {
            let lease = match Lease::try_acquire(self.store.pool(), &self.checkpoint_name()).await {
                Ok(Some(l)) => l,
                Ok(None) => {
                    // Someone else relays; check again later in case it dies.
                    sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "relay cannot reach Postgres");
                    sleep_or_shutdown(backoff, &mut shutdown).await;
                    continue;
                }
            };
            tracing::info!(stream = %self.nats.stream_name, "relay lease acquired");
            self.relay_while_leased(lease, &mut shutdown).await;
        }
    }

    async fn relay_while_leased(&self, mut lease: Lease, shutdown: &mut watch::Receiver<bool>) {
        let backoff = Duration::from_millis(self.settings.retry_backoff_ms);
        let mut cursor = match self.store.load_checkpoint(&self.checkpoint_name()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot load its checkpoint");
                sleep_or_shutdown(backoff, shutdown).await;
                return;
            }
        };
        let mut rounds: u64 = 0;
        let interval = Duration::from_millis(self.settings.checkpoint_interval_ms);
        // What was published but not yet checkpointed, and when the checkpoint was saved.
        let mut unsaved: Option<FeedCursor> = None;
        let mut saved_at = tokio::time::Instant::now();
        while !*shutdown.borrow() {
            rounds += 1;
            if rounds % 64 == 0 && !lease.still_held().await {
                tracing::warn!("relay lease lost");
                return;
            }
            if unsaved.is_some() && saved_at.elapsed() >= interval {
                match self.save(lease.connection(), &mut unsaved).await {
                    Ok(()) => saved_at = tokio::time::Instant::now(),
                    Err(e) => {
                        tracing::warn!(error = %e, "relay cannot save its checkpoint");
                        sleep_or_shutdown(backoff, shutdown).await;
                        // The save runs on the lease's connection: if its session died (a
                        // PostgreSQL restart), the lease is gone too, and retrying on it
                        // would fail until the every-64-rounds check (~30 s of backoffs).
                        if !lease.still_held().await {
                            tracing::warn!("relay lease lost");
                            return;
                        }
                        continue;
                    }
                }
            }
            match self.publish_batch(lease.connection(), cursor).await {
                Ok(Some((next, sent))) => {
                    cursor = next;
                    unsaved = Some(next);
                    if (sent as i64) < self.settings.batch_events_max / 4 {
                        let pause = Duration::from_millis(self.settings.small_round_pause_ms);
                        sleep_or_shutdown(pause, shutdown).await;
                    }
                }
                Ok(None) => {
                    // Caught up: a good moment to save, so an idle relay's checkpoint is
                    // current.
                    if unsaved.is_some() {
                        if self.save(lease.connection(), &mut unsaved).await.is_ok() {
                            saved_at = tokio::time::Instant::now();
                        }
                        continue;
                    }
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(self.settings.idle_poll_ms)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    PUBLISH_ERRORS.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "relay round failed; will retry from the checkpoint");
                    sleep_or_shutdown(backoff, shutdown).await;
                    if !lease.still_held().await {
                        return;
                    }
                    // Everything published before the failed round was acknowledged: keep it.
                    if self.save(lease.connection(), &mut unsaved).await.is_err() {
                        return;
                    }
                    match self.store.load_checkpoint(&self.checkpoint_name()).await {
                        Ok(c) => cursor = c,
                        Err(_) => return,
                    }
                }
            }
        }
        let _ = self.save(lease.connection(), &mut unsaved).await;
        lease.release().await;
    }

    /// Re-sends every event from `position` on (in feed order) without touching the relay's
    /// checkpoint; for integrations that lost messages. JetStream drops repeats within its
    /// duplicate window, and consumers are idempotent by stream version beyond it.
    /// Returns how many events were sent.
    pub async fn republish_from(&self, position: i64) -> anyhow::Result<u64> {
        let tx_id = self
            .store
            .event_at(position)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no event at position {position}"))?
            .tx_id;
        let mut cursor = FeedCursor {
            tx_id,
            position: position - 1,
        };
        let mut sent = 0u64;
        let mut conn = self.store.pool().acquire().await?;
        while let Some((next, n)) = self.publish_batch(&mut conn, cursor).await? {
            cursor = next;
            sent += n as u64;
        }
        Ok(sent)
    }

    /// Saves `unsaved` (a cursor whose events were all acknowledged), if any.
    async fn save(
        &self,
        conn: &mut PgConnection,
        unsaved: &mut Option<FeedCursor>,
    ) -> Result<(), event_store::StoreError> {
        if let Some(c) = *unsaved {
            EventStore::save_checkpoint_on(conn, &self.checkpoint_name(), c).await?;
            *unsaved = None;
        }
        Ok(())
    }

    /// Publishes (and awaits the acks of) the next batch after `cursor`.
    async fn publish_batch(
        &self,
        conn: &mut PgConnection,
        cursor: FeedCursor,
    ) -> anyhow::Result<Option<(FeedCursor, usize)>> {
        let events =
            EventStore::read_feed_text_on(conn, cursor, self.settings.batch_events_max).await?;
        let Some(last) = events.last() else {
            return Ok(None);
        };
        let next = last.event.cursor();
        let mut acks = Vec::with_capacity(events.len());
        for feed in &events {
            let payload = EnvelopeText::to_vec(feed)?;
            let e = &feed.event;
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                e.event_id.to_string().as_str(),
            );
            if let Ok(Correlation {
                correlation_id: Some(c),
            }) = serde_json::from_str(&feed.metadata)
            {
                headers.insert("Escrow-Correlation-Id", c);
            }
            let subject = subject_for(&self.nats.subject_prefix, &e.stream_id, &e.event_type);
            let ack = self
                .js
                .publish_with_headers(subject, headers, payload.into())
                .await
                .map_err(|err| anyhow::anyhow!("publish of position {}: {err}", e.position))?;
            acks.push((e.position, ack));
        }
        let timeout = Duration::from_millis(self.settings.ack_timeout_ms);
        for (position, ack) in acks {
            match tokio::time::timeout(timeout, ack).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => anyhow::bail!("JetStream rejected position {position}: {err}"),
                Err(_) => {
                    anyhow::bail!("no JetStream ack for position {position} within {timeout:?}")
                }
            }
        }
        Ok(Some((next, events.len())))
    }
}

/// The one metadata field the relay reads (for the `Escrow-Correlation-Id` header).
#[derive(serde::Deserialize)]
struct Correlation<'a> {
    #[serde(rename = "correlationId", borrow)]
    correlation_id: Option<&'a str>,
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}
