//! A durable consumer for one reader that handles every event in stream order and keeps
//! its own cursor elsewhere (the webhook deliverer keeps it in PostgreSQL, beside what it
//! staged). Because that cursor is the truth, [`OrderedFeed::open`] recreates the consumer
//! at the message after it: messages a crashed holder had fetched but not acknowledged
//! are not redelivered after newer ones, which a pull consumer's redelivery would do.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use crate::{JetStreamSettings, Nats};

/// One message of the events stream: its sequence in the stream and its payload (the
/// public envelope, docs/integrations.md).
pub struct FeedItem {
    /// The message's sequence in the JetStream stream.
    pub stream_sequence: u64,
    /// The envelope, as published.
    pub payload: bytes::Bytes,
    message: jetstream::Message,
}

/// A durable pull consumer delivering every message after a given stream sequence.
pub struct OrderedFeed {
    consumer: crate::PullConsumer,
}

impl Nats {
    /// The stream sequence of the newest message on `subject` (an exact subject), if
    /// there is one yet.
    pub async fn last_sequence_on(
        &self,
        settings: &JetStreamSettings,
        subject: &str,
    ) -> anyhow::Result<Option<u64>> {
        let s = crate::ensure_stream(self.jetstream(), settings).await?;
        match s.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(Some(m.sequence)),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!(
                "reading the last message on {subject}: {e}"
            )),
        }
    }

    /// Removes the durable consumer `name`, if it exists.
    pub async fn delete_consumer(
        &self,
        settings: &JetStreamSettings,
        name: &str,
    ) -> anyhow::Result<()> {
        let s = crate::ensure_stream(self.jetstream(), settings).await?;
        match s.delete_consumer(name).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(anyhow::anyhow!("deleting consumer {name}: {e}")),
        }
    }
}

impl OrderedFeed {
    /// (Re)creates the durable consumer `name` so that it delivers every message after
    /// stream sequence `after`.
    pub async fn open(
        nats: &Nats,
        settings: &JetStreamSettings,
        name: &str,
        after: u64,
    ) -> anyhow::Result<Self> {
        nats.delete_consumer(settings, name).await?;
        let s = crate::ensure_stream(nats.jetstream(), settings).await?;
        let consumer = s
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name.to_owned()),
                ack_policy: consumer::AckPolicy::All,
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                // The holder acknowledges each batch once it is staged; a holder that
                // dies is replaced by one that recreates the consumer from its cursor.
                ack_wait: Duration::from_secs(60),
                max_ack_pending: 20_000,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("creating consumer {name}: {e}"))?;
        Ok(OrderedFeed { consumer })
    }

    /// Up to `max` next messages, waiting at most `wait` for the first.
    pub async fn next_batch(&self, max: usize, wait: Duration) -> anyhow::Result<Vec<FeedItem>> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max)
            .expires(wait.max(Duration::from_millis(10)))
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("fetch: {e}"))?;
        let mut items = Vec::new();
        while let Some(m) = batch.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "fetch ended early");
                    break;
                }
            };
            let stream_sequence = m
                .info()
                .map_err(|e| anyhow::anyhow!("message without JetStream info: {e}"))?
                .stream_sequence;
            items.push(FeedItem {
                stream_sequence,
                payload: m.payload.clone(),
                message: m,
            });
        }
        Ok(items)
    }

    /// Acknowledges `item` and every message before it.
    pub async fn ack_through(&self, item: &FeedItem) {
        if let Err(e) = item.message.ack().await {
            // The cursor kept elsewhere is the truth; a lost ack only leaves the message
            // pending until the consumer is next recreated.
            tracing::debug!(error = %e, "ack failed");
        }
    }
}
