//! The public message format on NATS (documented in `docs/integrations.md`).

use chrono::{DateTime, Utc};
use event_store::{FeedEvent, RecordedEvent};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use uuid::Uuid;

/// Version of the envelope format. Bumped only for incompatible changes.
pub const ENVELOPE_VERSION: u32 = 1;

/// One event as published on JetStream. Field names are part of the public contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Format version, currently [`ENVELOPE_VERSION`].
    pub envelope_version: u32,
    /// Unique event id; also the `Nats-Msg-Id` header.
    pub event_id: Uuid,
    /// The stream, such as `wallet-<uuid>`.
    pub stream_id: String,
    /// 1-based version within the stream; consumers apply version N only after N-1.
    pub version: i64,
    /// Global position in the event store.
    pub position: i64,
    /// Event type name, such as `FundsDeposited`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Version of `data`'s schema.
    pub schema_version: i32,
    /// The event's fields.
    pub data: Value,
    /// Actor, correlation id, causation id, request id.
    pub metadata: Value,
    /// When the event was recorded (RFC 3339, UTC).
    pub recorded_at: DateTime<Utc>,
}

impl Envelope {
    /// The envelope of a stored event.
    pub fn from_recorded(e: &RecordedEvent) -> Self {
        Self::from(e.clone())
    }
}

impl From<RecordedEvent> for Envelope {
    /// The envelope of a stored event, taking its fields without copying them.
    fn from(e: RecordedEvent) -> Self {
        Self {
            envelope_version: ENVELOPE_VERSION,
            event_id: e.event_id,
            stream_id: e.stream_id,
            version: e.version,
            position: e.position,
            event_type: e.event_type,
            schema_version: e.schema_version,
            data: e.data,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
        }
    }
}

/// The envelope of a feed event as the relay writes it: the same fields in the same order
/// as [`Envelope`], with `data` and `metadata` copied from the store's JSON text.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnvelopeText<'a> {
    envelope_version: u32,
    event_id: Uuid,
    stream_id: &'a str,
    version: i64,
    position: i64,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema_version: i32,
    data: &'a RawValue,
    metadata: &'a RawValue,
    recorded_at: DateTime<Utc>,
}

impl EnvelopeText<'_> {
    /// Serialises the envelope of `e`. Fails only if the store returned invalid JSON.
    pub(crate) fn to_vec(feed: &FeedEvent) -> serde_json::Result<Vec<u8>> {
        let e = &feed.event;
        let data: &RawValue = serde_json::from_str(&e.data)?;
        let metadata: &RawValue = serde_json::from_str(&feed.metadata)?;
        serde_json::to_vec(&EnvelopeText {
            envelope_version: ENVELOPE_VERSION,
            event_id: e.event_id,
            stream_id: &e.stream_id,
            version: e.version,
            position: e.position,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            data,
            metadata,
            recorded_at: e.recorded_at,
        })
    }
}

/// The envelope of a feed event as JetStream carries it (the bytes the relay publishes).
pub fn envelope_bytes(feed: &FeedEvent) -> serde_json::Result<Vec<u8>> {
    EnvelopeText::to_vec(feed)
}

/// The subject of an event: `<prefix>.<category>.<aggregate id>.<EventType>`.
pub fn subject_for(prefix: &str, stream_id: &str, event_type: &str) -> String {
    let (category, id) = stream_id.split_once('-').unwrap_or((stream_id, "_"));
    format!("{prefix}.{category}.{id}.{event_type}")
}

#[cfg(test)]
mod tests {
    use event_store::FeedData;

    use super::*;

    #[test]
    fn the_relay_writes_the_envelope_of_the_public_format() {
        let data = serde_json::json!({"walletId": "w", "amount": "10.50", "nested": {"b": 1, "a": [true, null]}});
        let metadata = serde_json::json!({"actor": "u", "correlationId": "c"});
        let at: DateTime<Utc> = "2026-11-24T05:06:07.123456Z".parse().expect("valid time");
        let feed = FeedEvent {
            event: FeedData {
                position: 7,
                tx_id: 3,
                event_id: Uuid::nil(),
                stream_id: "wallet-x".into(),
                version: 2,
                event_type: "FundsDeposited".into(),
                schema_version: 1,
                data: data.to_string(),
                recorded_at: at,
            },
            metadata: metadata.to_string(),
        };
        let written = EnvelopeText::to_vec(&feed).expect("serialises");
        let read: Envelope = serde_json::from_slice(&written).expect("reads as an Envelope");
        assert_eq!(
            read,
            Envelope {
                envelope_version: ENVELOPE_VERSION,
                event_id: Uuid::nil(),
                stream_id: "wallet-x".into(),
                version: 2,
                position: 7,
                event_type: "FundsDeposited".into(),
                schema_version: 1,
                data,
                metadata,
                recorded_at: at,
            }
        );
        let generic: Value = serde_json::from_slice(&written).expect("JSON");
        let keys: Vec<&str> = generic
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "envelopeVersion",
            "eventId",
            "streamId",
            "version",
            "position",
            "type",
            "schemaVersion",
            "data",
            "metadata",
            "recordedAt",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected, "exactly the public fields");
    }

    #[test]
    fn subjects_follow_the_published_scheme() {
        assert_eq!(
            subject_for(
                "escrow.events",
                "wallet-0190c6c1-7c1e-7000-8000-000000000001",
                "FundsDeposited"
            ),
            "escrow.events.wallet.0190c6c1-7c1e-7000-8000-000000000001.FundsDeposited"
        );
    }
}
