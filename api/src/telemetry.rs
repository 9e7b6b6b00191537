//! Request spans and ids. Every request runs in a `request` span carrying its request id
//! (from `X-Request-Id` if the client sent a usable one, otherwise minted), its correlation
//! id (from `X-Correlation-Id` if it is a UUID, otherwise minted), method, path, route
//! template and status. Both ids are echoed in the response headers; commands executed by
//! the request open a child `command` span (see `command_handlers::Ledger::execute`), and
//! the correlation id travels on in event metadata and the NATS headers.
//!
//! With the `otel` cargo feature the same spans are exported over OTLP (see `otel`).

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

use crate::extract::{usable_request_id, CORRELATION_ID_HEADER, REQUEST_ID_HEADER};

/// Middleware: the request span, the ids, and one log line per finished request (server
/// errors at `error`, client errors at `info`, the rest at `debug`).
pub async fn trace_request(mut req: Request, next: Next) -> Response {
    let (request_id, correlation_id) = {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (header(REQUEST_ID_HEADER), header(CORRELATION_ID_HEADER))
    };
    let request_id = request_id
        .filter(|s| usable_request_id(s))
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    let correlation_id = correlation_id
        .and_then(|s| Uuid::parse_str(&s).ok())
        .unwrap_or_else(Uuid::now_v7);
    // Handlers read the ids from the headers (`RequestMeta`): make them the same ones.
    let rid = HeaderValue::from_str(&request_id).ok();
    let cid = HeaderValue::from_str(&correlation_id.to_string()).ok();
    if let (Some(r), Some(c)) = (&rid, &cid) {
        req.headers_mut().insert(REQUEST_ID_HEADER, r.clone());
        req.headers_mut().insert(CORRELATION_ID_HEADER, c.clone());
    }
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        correlation_id = %correlation_id,
        method = %req.method(),
        path = %req.uri().path(),
        route = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16();
    span.record("status", status);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| match status {
        500.. => tracing::error!(ms, "request failed"),
        400..=499 => tracing::info!(ms, "request refused"),
        _ => tracing::debug!(ms, "request finished"),
    });
    if let (Some(r), Some(c)) = (rid, cid) {
        res.headers_mut().insert(REQUEST_ID_HEADER, r);
        res.headers_mut().insert(CORRELATION_ID_HEADER, c);
    }
    res
}
