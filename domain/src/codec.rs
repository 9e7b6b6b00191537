//! Converting events to and from their stored form (type name, schema version, JSON data),
//! including upcasting data written under an older schema version.

use serde_json::{json, Value};

use crate::event::Event;

/// Why stored data could not be turned back into an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No upcaster knows this (type, version) pair: the data is newer than this build, or
    /// the type was never defined.
    #[error("unknown event {event_type} v{schema_version}")]
    Unknown {
        /// The stored type name.
        event_type: String,
        /// The stored schema version.
        schema_version: i32,
    },
    /// The data does not match the type's schema.
    #[error("malformed {event_type} data: {reason}")]
    Malformed {
        /// The stored type name.
        event_type: String,
        /// What serde said.
        reason: String,
    },
}

/// Splits an event into its stored parts.
pub fn encode(event: &Event) -> (&'static str, i32, Value) {
    let data = match serde_json::to_value(event) {
        Ok(Value::Object(mut m)) => m.remove("data").unwrap_or(Value::Null),
        // Serialising a plain data enum cannot fail, and adjacent tagging always yields an
        // object; keep a total function anyway.
        _ => Value::Null,
    };
    (event.event_type(), event.schema_version() as i32, data)
}

/// Rebuilds an event from its stored parts, upcasting older schema versions first.
pub fn decode(event_type: &str, schema_version: i32, data: &Value) -> Result<Event, DecodeError> {
    let data = upcast(event_type, schema_version, data.clone())?;
    serde_json::from_value(json!({ "type": event_type, "data": data })).map_err(|e| {
        DecodeError::Malformed {
            event_type: event_type.to_owned(),
            reason: e.to_string(),
        }
    })
}

/// Brings data of an older schema version up to the current one. Each step is a pure
/// function from version N to N+1, so old events stay readable forever.
fn upcast(event_type: &str, schema_version: i32, data: Value) -> Result<Value, DecodeError> {
    match (event_type, schema_version) {
        (_, 1) => Ok(data),
        _ => Err(DecodeError::Unknown {
            event_type: event_type.to_owned(),
            schema_version,
        }),
    }
}
