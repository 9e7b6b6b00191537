//! Per-stream hash chains, so that an edited or deleted event is detectable.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::RecordedEvent;

/// The `prev_hash` of every stream's first event.
pub const GENESIS_HASH: [u8; 32] = [0u8; 32];

/// Serialises JSON with object keys sorted at every level and no insignificant whitespace,
/// so the same value always hashes the same, whatever order JSONB returns keys in.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(k) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// The chained hash of one event: every stored field except the position and the
/// transaction id (which the database assigns), length-prefixed so fields cannot bleed
/// into each other.
#[allow(clippy::too_many_arguments)]
pub fn event_hash(
    prev_hash: &[u8],
    event_id: Uuid,
    stream_id: &str,
    version: i64,
    event_type: &str,
    schema_version: i32,
    canonical_data: &str,
    canonical_metadata: &str,
    recorded_at: DateTime<Utc>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    field(&mut h, prev_hash);
    field(&mut h, event_id.as_bytes());
    field(&mut h, stream_id.as_bytes());
    field(&mut h, &version.to_be_bytes());
    field(&mut h, event_type.as_bytes());
    field(&mut h, &schema_version.to_be_bytes());
    field(&mut h, canonical_data.as_bytes());
    field(&mut h, canonical_metadata.as_bytes());
    field(&mut h, &recorded_at.timestamp_micros().to_be_bytes());
    h.finalize().into()
}

/// Where a stream's chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The stream.
    pub stream_id: String,
    /// The version at which the chain breaks.
    pub version: i64,
    /// The global position of the offending event (0 if the event is missing).
    pub position: i64,
    /// What is wrong.
    pub reason: String,
}

/// Checks one stream's events (in version order, complete from version 1): versions
/// contiguous, each `prev_hash` equal to the previous hash, each hash recomputed equal.
pub fn verify_chain(events: &[RecordedEvent]) -> Result<(), ChainBreak> {
    let mut prev = GENESIS_HASH.to_vec();
    for (i, e) in events.iter().enumerate() {
        let expected_version = i as i64 + 1;
        let brk = |reason: &str| ChainBreak {
            stream_id: e.stream_id.clone(),
            version: e.version,
            position: e.position,
            reason: reason.to_owned(),
        };
        if e.version != expected_version {
            return Err(ChainBreak {
                stream_id: e.stream_id.clone(),
                version: expected_version,
                position: 0,
                reason: format!(
                    "version {expected_version} is missing (found {})",
                    e.version
                ),
            });
        }
        if e.prev_hash != prev {
            return Err(brk("prev_hash does not match the previous event's hash"));
        }
        let recomputed = event_hash(
            &prev,
            e.event_id,
            &e.stream_id,
            e.version,
            &e.event_type,
            e.schema_version,
            &canonical_json(&e.data),
            &canonical_json(&e.metadata),
            e.recorded_at,
        );
        if e.hash != recomputed {
            return Err(brk("hash does not match the event's content"));
        }
        prev = e.hash.clone();
    }
    Ok(())
}
