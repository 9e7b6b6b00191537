//! Converting events to and from their stored form (type name, schema version, JSON data),
//! including upcasting data written under an older schema version.

use std::borrow::Cow;

use serde::de::value::MapDeserializer;
use serde::Deserialize as _;
use serde_json::Value;

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
///
/// The data is read where it lies: only an upcast copies it. (Wrapping a clone in
/// `{"type", "data"}` for `from_value` cost a deep copy of every event read.)
pub fn decode(event_type: &str, schema_version: i32, data: &Value) -> Result<Event, DecodeError> {
    let data = upcast(event_type, schema_version, data)?;
    let tag = Value::String(event_type.to_owned());
    // The adjacently tagged form `{"type": …, "data": …}`, as a map of borrowed values
    // (the deserializer also refuses entries left over).
    let map = MapDeserializer::new([("type", &tag), ("data", data.as_ref())].into_iter());
    Event::deserialize(map).map_err(|e: serde_json::Error| DecodeError::Malformed {
        event_type: event_type.to_owned(),
        reason: e.to_string(),
    })
}

/// [`decode`] from the data's JSON text. Data at its type's current schema version is read
/// straight into the event, without a [`Value`] tree in between (a replay reads a million
/// of them); anything else — older data to upcast, or data that does not decode — takes
/// [`decode`]'s path, so both give the same answer.
pub fn decode_text(
    event_type: &str,
    schema_version: i32,
    data: &str,
) -> Result<Event, DecodeError> {
    // Type names are identifiers, so the adjacently tagged form needs no escaping.
    if event_type.bytes().all(|b| b.is_ascii_alphanumeric()) {
        let tagged = format!(r#"{{"type":"{event_type}","data":{data}}}"#);
        if let Ok(event) = serde_json::from_str::<Event>(&tagged) {
            if i64::from(event.schema_version()) == i64::from(schema_version) {
                return Ok(event);
            }
        }
    }
    let value: Value = serde_json::from_str(data).map_err(|e| DecodeError::Malformed {
        event_type: event_type.to_owned(),
        reason: e.to_string(),
    })?;
    decode(event_type, schema_version, &value)
}

/// Brings data of an older schema version up to the current one. Each step is a pure
/// function from version N to N+1, so old events stay readable forever; data already at
/// the current version is returned as it is.
fn upcast<'a>(
    event_type: &str,
    schema_version: i32,
    data: &'a Value,
) -> Result<Cow<'a, Value>, DecodeError> {
    let mut data = Cow::Borrowed(data);
    let mut version = schema_version;
    loop {
        match (event_type, version) {
            // v1 → v2: deposits gained `channel`; every v1 deposit came through the API.
            ("FundsDeposited", 1) => {
                if let Value::Object(m) = data.to_mut() {
                    m.entry("channel")
                        .or_insert_with(|| Value::String("API".into()));
                }
                version = 2;
            }
            ("FundsDeposited", 2) => return Ok(data),
            (_, 1) => return Ok(data),
            _ => {
                return Err(DecodeError::Unknown {
                    event_type: event_type.to_owned(),
                    schema_version,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::event::DepositChannel;

    #[test]
    fn a_version_1_deposit_is_upcast_with_the_api_channel() {
        let v1 =
            json!({"transactionId": "0190c6c1-7c1e-7000-8000-000000000001", "amount": "12.50"});
        match decode("FundsDeposited", 1, &v1) {
            Ok(Event::FundsDeposited {
                channel, amount, ..
            }) => {
                assert_eq!(channel, DepositChannel::Api);
                assert_eq!(amount.to_string(), "12.50");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            decode("FundsDeposited", 2, &v1).is_err(),
            "v2 requires the field"
        );
        assert!(matches!(
            decode("FundsDeposited", 3, &v1),
            Err(DecodeError::Unknown { .. })
        ));
        assert!(matches!(
            decode("NoSuchEvent", 1, &v1),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn decoding_from_text_agrees_with_decoding_from_a_tree() {
        let current = Event::FundsDeposited {
            transaction_id: crate::TransactionId::new_v7(),
            amount: crate::Amount::parse("1234567.89", crate::Currency::USD).expect("valid"),
            description: crate::Description::parse("a \"quoted\" note, é").expect("valid"),
            channel: DepositChannel::Operator,
        };
        let (t, v, data) = encode(&current);
        let text = data.to_string();
        assert_eq!(decode_text(t, v, &text), Ok(current));
        // Older data is upcast; data that does not decode fails as it would from a tree.
        let v1 = r#"{"transactionId": "0190c6c1-7c1e-7000-8000-000000000001", "amount": "12.50"}"#;
        let cases = [
            ("FundsDeposited", 1, v1),
            ("FundsDeposited", 2, v1),
            ("FundsDeposited", 3, v1),
            ("NoSuchEvent", 1, v1),
            ("Funds\"Deposited", 1, v1),
            ("FundsDeposited", 2, "{}"),
        ];
        for (t, v, text) in cases {
            let tree: Value = serde_json::from_str(text).expect("valid JSON");
            assert_eq!(decode_text(t, v, text), decode(t, v, &tree), "{t} v{v}");
        }
        assert!(matches!(
            decode_text("FundsDeposited", 2, "{not json"),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn encode_then_decode_round_trips_at_the_current_version() {
        let e = Event::FundsDeposited {
            transaction_id: crate::TransactionId::new_v7(),
            amount: crate::Amount::parse("1", crate::Currency::USD).expect("valid"),
            description: None,
            channel: DepositChannel::Operator,
        };
        let (t, v, data) = encode(&e);
        assert_eq!((t, v), ("FundsDeposited", 2));
        assert_eq!(decode(t, v, &data), Ok(e));
    }
}
