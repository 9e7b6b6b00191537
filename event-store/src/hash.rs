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
/// (Strings, numbers and literals are written by serde_json's own compact serializer.)
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    // serde_json writes UTF-8 only; the fallback is unreachable.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_compact(k, out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        other => write_compact(other, out),
    }
}

/// Writes a string or a scalar as compact JSON (writing to a `Vec` cannot fail).
fn write_compact<T: serde::Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(out, v);
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
    let mut chain = ChainCheck::default();
    events.iter().try_for_each(|e| chain.next(e))
}

/// One stream's chain, checked an event at a time as a reader meets them (in version
/// order): what [`verify_chain`] checks, without holding the stream.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    prev: Vec<u8>,
    version: i64,
    broken: bool,
}

impl Default for ChainCheck {
    fn default() -> Self {
        Self {
            prev: GENESIS_HASH.to_vec(),
            version: 0,
            broken: false,
        }
    }
}

impl ChainCheck {
    /// Checks the stream's next event. After a break the rest of the stream is not
    /// checked (every later link would repeat it): `Ok` from then on.
    pub fn next(&mut self, e: &RecordedEvent) -> Result<(), ChainBreak> {
        if self.broken {
            return Ok(());
        }
        let expected_version = self.version + 1;
        let brk = |reason: &str| ChainBreak {
            stream_id: e.stream_id.clone(),
            version: e.version,
            position: e.position,
            reason: reason.to_owned(),
        };
        let checked = if e.version != expected_version {
            Err(ChainBreak {
                stream_id: e.stream_id.clone(),
                version: expected_version,
                position: 0,
                reason: format!(
                    "version {expected_version} is missing (found {})",
                    e.version
                ),
            })
        } else if e.prev_hash != self.prev {
            Err(brk("prev_hash does not match the previous event's hash"))
        } else if e.hash
            != event_hash(
                &self.prev,
                e.event_id,
                &e.stream_id,
                e.version,
                &e.event_type,
                e.schema_version,
                &canonical_json(&e.data),
                &canonical_json(&e.metadata),
                e.recorded_at,
            )
        {
            Err(brk("hash does not match the event's content"))
        } else {
            Ok(())
        };
        match checked {
            Ok(()) => {
                self.version = e.version;
                self.prev.clone_from(&e.hash);
                Ok(())
            }
            Err(b) => {
                self.broken = true;
                Err(b)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_keeps_numbers_and_escapes() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{ "b": [1, 2.50, {"z": null, "a": true}], "a": "x\"y\\\n\u0001é", "10": -0.0001 }"#,
        )
        .expect("valid JSON");
        assert_eq!(
            canonical_json(&v),
            r#"{"10":-0.0001,"a":"x\"y\\\n\u0001é","b":[1,2.50,{"a":true,"z":null}]}"#
        );
    }
}
