//! A query node (`--role query`): the API's reads, served from a PostgreSQL hot standby.
//! It writes nothing, so everything that would write answers 503 `READ_ONLY_NODE`, with a
//! `Location` naming the same path on `PRIMARY_API_URL` when one is configured: a client
//! (or a reverse proxy routing by method) sends it there. Logins and token refreshes write
//! sessions, so they go to the primary too; the tokens it signs are good here.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Where commands go instead, if known (`PRIMARY_API_URL`, such as `http://primary:8080`).
#[derive(Debug, Clone, Default)]
pub struct Primary(pub Option<String>);

/// Refuses every request but reads (`GET`, `HEAD`, `OPTIONS`).
pub async fn refuse_writes(State(primary): State<Primary>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "READ_ONLY_NODE",
        "this is a query node: it serves reads only; send commands to the primary",
    );
    e.retry_after = None;
    let mut res = e.into_response();
    if let Some(base) = primary.0.as_deref() {
        let path = req
            .uri()
            .path_and_query()
            .map_or(req.uri().path(), |p| p.as_str());
        let target = format!("{}{path}", base.trim_end_matches('/'));
        if let Ok(v) = HeaderValue::from_str(&target) {
            res.headers_mut().insert(axum::http::header::LOCATION, v);
        }
    }
    res
}
