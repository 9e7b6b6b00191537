//! The public message format on NATS (documented in `docs/integrations.md`).

use chrono::{DateTime, Utc};
use event_store::RecordedEvent;
use serde::{Deserialize, Serialize};
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
        Self {
            envelope_version: ENVELOPE_VERSION,
            event_id: e.event_id,
            stream_id: e.stream_id.clone(),
            version: e.version,
            position: e.position,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            data: e.data.clone(),
            metadata: e.metadata.clone(),
            recorded_at: e.recorded_at,
        }
    }
}

/// The subject of an event: `<prefix>.<category>.<aggregate id>.<EventType>`.
pub fn subject_for(prefix: &str, stream_id: &str, event_type: &str) -> String {
    let (category, id) = stream_id.split_once('-').unwrap_or((stream_id, "_"));
    format!("{prefix}.{category}.{id}.{event_type}")
}

#[cfg(test)]
mod tests {
    use super::*;

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
