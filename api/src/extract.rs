//! Request parsing that always answers problem+json: bodies, ids, query strings, headers.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use domain::{Amount, Currency, Description};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;

/// A JSON request body, kept as raw bytes (for the idempotency hash) until parsed.
#[derive(Debug)]
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let mime = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "BODY_TOO_LARGE",
                    "the request body is too large",
                )
            } else {
                ApiError::bad_request("UNREADABLE_BODY", "the request body could not be read")
            }
        })?;
        // An empty body stands for `{}` (commands such as fund take no fields).
        if bytes.is_empty() {
            return Ok(JsonBody(Bytes::from_static(b"{}")));
        }
        if is_json != Some(true) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        Ok(JsonBody(bytes))
    }
}

impl JsonBody {
    /// Parses the body: malformed JSON is a 400, a well-formed body of the wrong shape a 422.
    /// A body of JSON `null` is taken as `{}`, as an absent body is.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let bytes: &[u8] = if self.0.trim_ascii() == b"null" {
            b"{}"
        } else {
            &self.0
        };
        serde_json::from_slice(bytes).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                    "MALFORMED_JSON",
                    format!("the body is not valid JSON: {e}"),
                ),
                Category::Data => ApiError::unprocessable(
                    "INVALID_BODY",
                    format!("the body does not match the schema: {e}"),
                ),
            }
        })
    }

    /// SHA-256 of the raw body, for idempotency.
    pub fn sha256(&self) -> Vec<u8> {
        Sha256::digest(&self.0).to_vec()
    }
}

/// The optional `Idempotency-Key` header (1 to 255 visible ASCII characters).
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(v) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let s = v.to_str().unwrap_or("");
        if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::bad_request(
                "INVALID_IDEMPOTENCY_KEY",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
        Ok(IdempotencyKey(Some(s.to_owned())))
    }
}

/// The request id header.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The correlation id header.
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";

/// Whether a client's `X-Request-Id` is kept: 1 to 128 visible ASCII characters.
pub fn usable_request_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Request id (from `X-Request-Id`, or minted) and correlation id (from
/// `X-Correlation-Id` if it is a UUID, or minted).
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// The request id.
    pub request_id: String,
    /// The correlation id.
    pub correlation_id: Uuid,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let request_id = header(REQUEST_ID_HEADER)
            .filter(|s| usable_request_id(s))
            .unwrap_or_else(|| Uuid::now_v7().to_string());
        let correlation_id = header(CORRELATION_ID_HEADER)
            .and_then(|s| Uuid::parse_str(&s).ok())
            .unwrap_or_else(Uuid::now_v7);
        Ok(RequestMeta {
            request_id,
            correlation_id,
        })
    }
}

/// One path parameter as text; its parsing is the handler's (so errors are problem+json).
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(s) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_request("INVALID_PATH", "the path is malformed"))?;
        Ok(PathParam(s))
    }
}

/// Two path parameters as text, such as a contract and one of its milestones.
#[derive(Debug)]
pub struct PathPair(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathPair {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((a, b)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_request("INVALID_PATH", "the path is malformed"))?;
        Ok(PathPair(a, b))
    }
}

/// The query string as a map; each handler checks the keys it knows.
#[derive(Debug, Default)]
pub struct QueryMap(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(m) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_request("INVALID_QUERY", "the query string is malformed"))?;
        Ok(QueryMap(m))
    }
}

impl QueryMap {
    /// Refuses parameters the endpoint does not know (a typo should not be ignored silently).
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::bad_request(
                "UNKNOWN_QUERY_PARAMETER",
                format!(
                    "unknown query parameter {:?}; accepted: {}",
                    truncate(k),
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// An optional non-negative integer parameter.
    pub fn int(&self, name: &str, max: i64) -> Result<Option<i64>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(s) => match s.parse::<i64>() {
                Ok(v) if (0..=max).contains(&v) => Ok(Some(v)),
                _ => Err(ApiError::bad_request(
                    "INVALID_QUERY_PARAMETER",
                    format!("{name} must be an integer from 0 to {max}"),
                )),
            },
        }
    }

    /// The `minPosition` parameter, if any.
    pub fn min_position(&self) -> Result<Option<i64>, ApiError> {
        self.int("minPosition", i64::MAX)
    }

    /// The `currency` parameter (default USD).
    pub fn currency(&self) -> Result<Currency, ApiError> {
        match self.0.get("currency") {
            None => Ok(Currency::USD),
            Some(c) => Currency::parse(c)
                .map_err(|e| ApiError::unprocessable("UNKNOWN_CURRENCY", e.to_string())),
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Parses a UUID from a path or body, naming what it is in the error.
pub fn parse_id(text: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::bad_request("INVALID_ID", format!("{what} must be a UUID")))
}

/// Parses a body's `currency` (default USD).
pub fn parse_currency(c: Option<&str>) -> Result<Currency, ApiError> {
    match c {
        None => Ok(Currency::USD),
        Some(c) => Currency::parse(c)
            .map_err(|e| ApiError::unprocessable("UNKNOWN_CURRENCY", e.to_string())),
    }
}

/// Parses an amount given as a JSON number or a decimal string, exactly (the JSON parser
/// keeps the number's text; it never becomes a float).
pub fn parse_amount(v: &Value, currency: Currency) -> Result<Amount, ApiError> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => {
            return Err(ApiError::unprocessable(
                "INVALID_AMOUNT",
                "amount must be a plain decimal, as a JSON number or a string",
            ))
        }
    };
    Amount::parse(&text, currency).map_err(|e| ApiError::from(domain::DomainError::from(e)))
}

/// Parses an optional exact decimal (JSON number or string) without a currency check.
pub fn parse_optional_decimal(
    v: Option<&Value>,
    field: &str,
) -> Result<Option<rust_decimal::Decimal>, ApiError> {
    let text = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(ApiError::unprocessable(
                "INVALID_AMOUNT",
                format!("{field} must be a plain decimal, as a JSON number or a string"),
            ))
        }
    };
    domain::money::parse_decimal(&text).map(Some).map_err(|_| {
        ApiError::unprocessable(
            "INVALID_AMOUNT",
            format!("{field} is not a plain decimal number (no exponent, at most 28 decimals)"),
        )
    })
}

/// Parses a UUID in a request body (422, since the body itself is well-formed JSON).
pub fn parse_body_id(text: &str, field: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::unprocessable("INVALID_ID", format!("{field} must be a UUID")))
}

/// Parses an optional description.
pub fn parse_description(d: Option<&str>) -> Result<Option<Description>, ApiError> {
    match d {
        None => Ok(None),
        Some(s) => Description::parse(s).map_err(|e| ApiError::from(domain::DomainError::from(e))),
    }
}

/// An optional whole number as JSON Schema counts one: `24` and `24.0` alike (its
/// `integer` is any number without a fractional part), so a body the document allows is
/// not refused for its spelling. Anything else is the same refusal serde gives a `u32`.
pub fn whole_number<'de, D>(d: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => whole::<D::Error>(&n).map(Some),
    }
}

/// A required whole number, as [`whole_number`] reads one.
pub fn whole_number_required<'de, D>(d: D) -> Result<u32, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    whole::<D::Error>(&serde_json::Number::deserialize(d)?)
}

fn whole<E: serde::de::Error>(n: &serde_json::Number) -> Result<u32, E> {
    let whole = match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => u32::try_from(u).ok(),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => {
            u32::try_from(f as u64).ok()
        }
        _ => None,
    };
    whole.ok_or_else(|| {
        E::custom(format!(
            "invalid value: {n}, expected a whole number from 0 to {}",
            u32::MAX
        ))
    })
}

/// An RFC 3339 time (`2027-01-31T12:00:00Z`, any offset) as the domain's timestamp, to the
/// millisecond. JSON Schema's `date-time` separates date and time with a `T`; chrono also
/// takes a space, so the `T` is checked here to keep the document and the server agreed.
pub fn parse_time(text: &str) -> Result<domain::Timestamp, ApiError> {
    let refused = || {
        ApiError::unprocessable(
            "INVALID_FUND_BY",
            "fundBy must be an RFC 3339 time such as 2027-01-31T12:00:00Z",
        )
    };
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) {
        return Err(refused());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| domain::Timestamp(t.timestamp_millis()))
        .map_err(|_| refused())
}
