//! The live projection worker: a durable JetStream pull consumer with explicit acks.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use chrono::{DateTime, Utc};
use domain::codec::decode_text;
use domain::Event;
use escrow_nats::JetStreamSettings;

use crate::apply::Incoming;
use event_store::Lease;
use futures::StreamExt;
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;

use crate::apply::{apply, Source, PROJECTION};
use crate::Freshness;

/// The name of the projection worker's lease for the JetStream stream `stream_name`.
pub fn lease_name(stream_name: &str) -> String {
    format!("projection:{PROJECTION}:{stream_name}")
}

/// Tuning of the worker loop.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Durable consumer name.
    pub durable_name: String,
    /// Messages pulled and applied per database transaction.
    pub batch_messages_max: usize,
    /// How long one pull waits for messages before returning what it has.
    pub fetch_expires_ms: u64,
    /// Redelivery delay for an event whose stream predecessor has not arrived yet.
    pub gap_redelivery_ms: u64,
    /// Pause after a failure before trying again.
    pub retry_backoff_ms: u64,
    /// Pause after a batch of fewer than a quarter of `batch_messages_max` messages, so
    /// that under steady load a transaction carries more events (each costs ~10 statements
    /// whatever its size). Adds at most this much to projection lag.
    pub small_batch_pause_ms: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            durable_name: "projections".into(),
            batch_messages_max: 1024,
            fetch_expires_ms: 500,
            gap_redelivery_ms: 100,
            retry_backoff_ms: 500,
            small_batch_pause_ms: 25,
        }
    }
}

/// Builds the read models from JetStream. Holds the projection lease so exactly one
/// instance consumes at a time (a pull consumer shared by two would split the order).
pub struct ProjectionWorker {
    pool: PgPool,
    js: jetstream::Context,
    nats: JetStreamSettings,
    settings: WorkerSettings,
    freshness: Arc<Freshness>,
}

impl ProjectionWorker {
    /// A worker writing to `pool`'s read models.
    pub fn new(
        pool: PgPool,
        js: jetstream::Context,
        nats: JetStreamSettings,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            pool,
            js,
            nats,
            settings,
            freshness: Arc::default(),
        }
    }

    /// The same worker, telling `freshness` (its instance's) what each batch applied.
    pub fn with_freshness(mut self, freshness: Arc<Freshness>) -> Self {
        self.freshness = freshness;
        self
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let backoff = Duration::from_millis(self.settings.retry_backoff_ms);
        let lease_name = lease_name(&self.nats.stream_name);
        while !*shutdown.borrow() {
            let lease = match Lease::try_acquire(&self.pool, &lease_name).await {
                Ok(Some(l)) => l,
                Ok(None) => {
                    sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "projection worker cannot reach Postgres");
                    sleep_or_shutdown(backoff, &mut shutdown).await;
                    continue;
                }
            };
            if let Err(e) = self.consume(lease, &mut shutdown).await {
                tracing::warn!(error = %e, "projection worker failed; retrying");
                sleep_or_shutdown(backoff, &mut shutdown).await;
            }
        }
    }

    async fn consumer(&self) -> anyhow::Result<escrow_nats::PullConsumer> {
        escrow_nats::durable_consumer(&self.js, &self.nats, &self.settings.durable_name).await
    }

    async fn consume(
        &self,
        mut lease: Lease,
        shutdown: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let consumer = self.consumer().await?;
        tracing::info!(durable = %self.settings.durable_name, "projection worker consuming");
        self.freshness.worker_started();
        let _stopped = StoppedOnDrop(&self.freshness);
        let mut rounds: u64 = 0;
        while !*shutdown.borrow() {
            rounds += 1;
            if rounds % 64 == 0 && !lease.still_held().await {
                anyhow::bail!("projection lease lost");
            }
            let mut batch = consumer
                .fetch()
                .max_messages(self.settings.batch_messages_max)
                .expires(Duration::from_millis(self.settings.fetch_expires_ms))
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("fetch: {e}"))?;
            let mut messages = Vec::new();
            while let Some(m) = batch.next().await {
                match m {
                    Ok(m) => messages.push(m),
                    Err(e) => {
                        tracing::debug!(error = %e, "fetch ended early");
                        break;
                    }
                }
            }
            if messages.is_empty() {
                continue;
            }
            let small = messages.len() < self.settings.batch_messages_max / 4;
            let mut envelopes = Vec::with_capacity(messages.len());
            let mut events = Vec::with_capacity(messages.len());
            let mut decodable = Vec::with_capacity(messages.len());
            for m in &messages {
                match read_delivery(&m.payload) {
                    Ok((envelope, event)) => {
                        envelopes.push(envelope);
                        events.push(event);
                        decodable.push(true);
                    }
                    Err(e) => {
                        // Not ours to understand; acknowledging keeps the consumer moving.
                        tracing::error!(error = %e, subject = %m.subject, "undecodable message, skipping");
                        decodable.push(false);
                    }
                }
            }
            let report = match self
                .apply(lease.connection(), &envelopes, Some(&events))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    // Hand everything back at once rather than waiting out ack_wait.
                    for m in &messages {
                        let _ = m
                            .ack_with(AckKind::Nak(Some(Duration::from_millis(
                                self.settings.retry_backoff_ms,
                            ))))
                            .await;
                    }
                    return Err(e);
                }
            };
            // A gap means an earlier event of that stream was delivered to someone else (a
            // worker that died before acking: JetStream would hand it back only after
            // ack_wait). The event store has it: fill the gap from there, and the gapped
            // messages become plain duplicates.
            let report = if report.gaps.is_empty() {
                report
            } else {
                let gapped: Vec<Incoming> = report
                    .gaps
                    .iter()
                    .filter_map(|i| envelopes.get(*i).cloned())
                    .collect();
                match self.fill_gaps(lease.connection(), &gapped).await {
                    Ok(()) => crate::ApplyReport {
                        gaps: Vec::new(),
                        ..report
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "could not fill a gap from the event store; waiting for redelivery");
                        report
                    }
                }
            };
            let gaps: std::collections::HashSet<usize> = report.gaps.iter().copied().collect();
            let mut env_index = 0usize;
            for (m, ok) in messages.iter().zip(decodable) {
                let gap = ok && gaps.contains(&env_index);
                if ok {
                    env_index += 1;
                }
                let result = if gap {
                    m.ack_with(AckKind::Nak(Some(Duration::from_millis(
                        self.settings.gap_redelivery_ms,
                    ))))
                    .await
                } else {
                    m.ack().await
                };
                if let Err(e) = result {
                    // Redelivery of an applied event is harmless: it will be skipped.
                    tracing::debug!(error = %e, "ack failed");
                }
            }
            if small {
                let pause = Duration::from_millis(self.settings.small_batch_pause_ms);
                sleep_or_shutdown(pause, shutdown).await;
            }
        }
        lease.release().await;
        Ok(())
    }
}

impl ProjectionWorker {
    /// Applies, from the event store, every event of the gapped streams up to and
    /// including the gapped versions.
    async fn fill_gaps(&self, conn: &mut PgConnection, gapped: &[Incoming]) -> anyhow::Result<()> {
        let store = event_store::EventStore::new(self.pool.clone());
        let mut missing = Vec::new();
        let mut streams: Vec<(&str, i64)> = gapped
            .iter()
            .map(|e| (e.stream_id.as_str(), e.version))
            .collect();
        streams.sort();
        streams.dedup_by(|a, b| {
            a.0 == b.0 && {
                b.1 = b.1.max(a.1);
                true
            }
        });
        for (stream, up_to) in streams {
            let applied = crate::stream_version(&self.pool, stream).await?;
            for e in store.read_stream(stream, applied).await? {
                if e.version <= up_to {
                    missing.push(Incoming::from(e));
                }
            }
        }
        let report = self.apply(conn, &missing, None).await?;
        anyhow::ensure!(report.gaps.is_empty(), "the event store itself has a gap");
        tracing::info!(events = report.applied, "filled gaps from the event store");
        Ok(())
    }

    /// Applies a batch in one transaction on the lease's connection; `events`, when given,
    /// holds each envelope's event as [`read_delivery`] decoded it.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        envelopes: &[Incoming],
        events: Option<&[Option<Event>]>,
    ) -> anyhow::Result<crate::ApplyReport> {
        let mut tx = conn.begin().await?;
        let report = apply(&mut tx, envelopes, Source::Deliveries(events)).await?;
        tx.commit().await?;
        let gaps: std::collections::HashSet<usize> = report.gaps.iter().copied().collect();
        self.freshness.batch_committed(
            envelopes
                .iter()
                .enumerate()
                .filter(|(i, _)| !gaps.contains(i))
                .map(|(_, e)| (e.stream_id.as_str(), e.version, e.position)),
        );
        Ok(report)
    }
}

/// A delivered envelope as the worker reads it: the public `escrow_nats::Envelope`'s fields, with
/// `data` and `metadata` left as JSON text.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delivered<'a> {
    // Read, not kept: an envelope without them is not one of ours and is refused.
    #[serde(rename = "envelopeVersion")]
    _envelope_version: u32,
    #[serde(rename = "eventId")]
    _event_id: uuid::Uuid,
    stream_id: String,
    version: i64,
    position: i64,
    #[serde(rename = "type")]
    event_type: String,
    schema_version: i32,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow)]
    metadata: &'a RawValue,
    recorded_at: DateTime<Utc>,
}

/// Reads a delivered message: its envelope, and its event decoded straight from the
/// data's text (no `Value` tree in between; that and the metadata's tree were most of the
/// worker's decoding). The envelope's `data` is left null when the event decoded, and
/// holds the data otherwise, so that applying it fails exactly as it would have; its
/// `metadata` is only read for debug logging, so it is only kept when that is on.
fn read_delivery(payload: &[u8]) -> serde_json::Result<(Incoming, Option<Event>)> {
    let d: Delivered<'_> = serde_json::from_slice(payload)?;
    let event = decode_text(&d.event_type, d.schema_version, d.data.get()).ok();
    let data = match event {
        Some(_) => Value::Null,
        None => serde_json::from_str(d.data.get())?,
    };
    let metadata = if tracing::enabled!(target: "projections::apply", tracing::Level::DEBUG) {
        serde_json::from_str(d.metadata.get())?
    } else {
        Value::Null
    };
    let envelope = Incoming {
        stream_id: d.stream_id,
        version: d.version,
        position: d.position,
        event_type: d.event_type,
        schema_version: d.schema_version,
        data,
        metadata,
        recorded_at: d.recorded_at,
    };
    Ok((envelope, event))
}

/// Tells read-your-writes waiters that this instance's worker stopped projecting, however
/// `consume` ends.
struct StoppedOnDrop<'a>(&'a Freshness);

impl Drop for StoppedOnDrop<'_> {
    fn drop(&mut self) {
        self.0.worker_stopped();
    }
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(event_type: &str, schema_version: i32, data: Value) -> escrow_nats::Envelope {
        escrow_nats::Envelope {
            envelope_version: escrow_nats::ENVELOPE_VERSION,
            event_id: uuid::Uuid::nil(),
            stream_id: "wallet-0190c6c1-7c1e-7000-8000-000000000001".into(),
            version: 3,
            position: 42,
            event_type: event_type.into(),
            schema_version,
            data,
            metadata: json!({"actor": "u", "correlationId": "c"}),
            recorded_at: "2026-12-05T05:06:07.123456Z".parse().expect("valid time"),
        }
    }

    #[test]
    fn a_delivery_reads_as_its_envelope_and_its_event() {
        let data = json!({
            "transactionId": "0190c6c1-7c1e-7000-8000-000000000002",
            "amount": "10.50",
            "channel": "API",
        });
        let sent = envelope("FundsDeposited", 2, data.clone());
        let payload = serde_json::to_vec(&sent).expect("serialises");
        let (read, event) = read_delivery(&payload).expect("reads");
        let expected = domain::codec::decode("FundsDeposited", 2, &data).expect("decodes");
        assert_eq!(event.as_ref(), Some(&expected));
        assert_eq!(read.data, Value::Null, "decoded: the data is not kept");
        assert_eq!(
            Incoming {
                data: sent.data.clone(),
                metadata: sent.metadata.clone(),
                ..read
            },
            Incoming {
                stream_id: sent.stream_id.clone(),
                version: sent.version,
                position: sent.position,
                event_type: sent.event_type.clone(),
                schema_version: sent.schema_version,
                data: sent.data.clone(),
                metadata: sent.metadata.clone(),
                recorded_at: sent.recorded_at,
            }
        );
    }

    #[test]
    fn old_schemas_are_upcast_and_undecodable_data_is_kept_for_apply_to_refuse() {
        let v1 = json!({"transactionId": "0190c6c1-7c1e-7000-8000-000000000002", "amount": "3"});
        let payload = serde_json::to_vec(&envelope("FundsDeposited", 1, v1.clone())).expect("ok");
        let (_, event) = read_delivery(&payload).expect("reads");
        let expected = domain::codec::decode("FundsDeposited", 1, &v1).expect("upcasts");
        assert_eq!(event, Some(expected));

        let bad = json!({"amount": "not money"});
        let payload = serde_json::to_vec(&envelope("FundsDeposited", 2, bad.clone())).expect("ok");
        let (read, event) = read_delivery(&payload).expect("the envelope itself is fine");
        assert_eq!(event, None);
        assert_eq!(read.data, bad);

        assert!(read_delivery(br#"{"eventId": "x"}"#).is_err());
        let mut no_version = serde_json::to_value(envelope("FundsDeposited", 1, v1)).expect("ok");
        no_version
            .as_object_mut()
            .map(|o| o.remove("envelopeVersion"));
        assert!(read_delivery(no_version.to_string().as_bytes()).is_err());
    }
}
