//! Subscriber helpers for integrations: `escrow events tail` and `escrow events export`.

use std::io::Write;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use event_store::{EventStore, FeedCursor};
use futures::StreamExt;

use crate::envelope::Envelope;
use crate::JetStreamSettings;

/// What to tail.
#[derive(Debug, Clone, Default)]
pub struct TailOptions {
    /// A subject filter, such as `escrow.events.wallet.>` (the prefix may be left out:
    /// `wallet.*.FundsDeposited`). Everything when absent.
    pub subject: Option<String>,
    /// A durable consumer name: acknowledged messages are not delivered again to the same
    /// name, so a rerun resumes where the last one stopped.
    pub durable: Option<String>,
    /// Skip events before this global position.
    pub from_position: Option<i64>,
    /// Stop after this many events.
    pub limit: Option<u64>,
    /// Stop when nothing arrives for this long (run forever when absent).
    pub idle_exit: Option<Duration>,
}

fn full_subject(settings: &JetStreamSettings, filter: Option<&str>) -> String {
    match filter {
        None => format!("{}.>", settings.subject_prefix),
        Some(f) if f.starts_with(&settings.subject_prefix) => f.to_owned(),
        Some(f) => format!("{}.{f}", settings.subject_prefix),
    }
}

/// Writes events from JetStream to `out` as NDJSON (one envelope per line), acknowledging
/// each after it is written. Returns how many were written.
pub async fn tail(
    js: &jetstream::Context,
    settings: &JetStreamSettings,
    options: &TailOptions,
    out: &mut (impl Write + Send),
) -> anyhow::Result<u64> {
    let stream = crate::ensure_stream(js, settings).await?;
    let filter_subject = full_subject(settings, options.subject.as_deref());
    let consumer: consumer::Consumer<consumer::pull::Config> = match &options.durable {
        Some(name) => stream
            .get_or_create_consumer(
                name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: filter_subject.clone(),
                    ack_policy: consumer::AckPolicy::Explicit,
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("durable consumer {name}: {e}"))?,
        None => stream
            .create_consumer(consumer::pull::Config {
                filter_subject: filter_subject.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                deliver_policy: consumer::DeliverPolicy::All,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("consumer: {e}"))?,
    };
    let mut written = 0u64;
    let mut idle_since = tokio::time::Instant::now();
    loop {
        if options.limit.is_some_and(|l| written >= l) {
            return Ok(written);
        }
        let want = options
            .limit
            .map_or(256, |l| (l - written).min(256) as usize);
        let mut batch = consumer
            .fetch()
            .max_messages(want)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("fetch: {e}"))?;
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("message: {e}"))?;
            got += 1;
            let env: Envelope = match serde_json::from_slice(&m.payload) {
                Ok(e) => e,
                Err(_) => {
                    let _ = m.ack().await;
                    continue;
                }
            };
            if options.from_position.is_some_and(|p| env.position < p) {
                let _ = m.ack().await;
                continue;
            }
            serde_json::to_writer(&mut *out, &env)?;
            out.write_all(b"\n")?;
            out.flush()?;
            m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
            written += 1;
            if options.limit.is_some_and(|l| written >= l) {
                break;
            }
        }
        if got > 0 {
            idle_since = tokio::time::Instant::now();
        } else if options.idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
            return Ok(written);
        }
    }
}

/// Writes the event store (or one stream) to `out` as NDJSON envelopes, in feed order (a
/// stream: in version order), straight from Postgres. Returns how many were written.
pub async fn export(
    store: &EventStore,
    stream: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut written = 0u64;
    if let Some(s) = stream {
        let mut after = 0;
        loop {
            let events = store.read_stream(s, after).await?;
            if events.is_empty() {
                break;
            }
            for e in &events {
                serde_json::to_writer(&mut *out, &Envelope::from_recorded(e))?;
                out.write_all(b"\n")?;
                after = e.version;
                written += 1;
            }
        }
        return Ok(written);
    }
    let mut cursor = FeedCursor::START;
    loop {
        let events = store.read_feed(cursor, 5_000).await?;
        let Some(last) = events.last() else { break };
        cursor = last.cursor();
        for e in &events {
            serde_json::to_writer(&mut *out, &Envelope::from_recorded(e))?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
    out.flush()?;
    Ok(written)
}
