//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

/// Health body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when serving.
    pub status: &'static str,
}

/// Readiness body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ok` or `unavailable`.
    pub postgres: &'static str,
    /// `ok` or `unavailable`.
    pub nats: &'static str,
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/api/v1/health", tag = "health", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: Postgres and NATS are reachable.
#[utoipa::path(get, path = "/api/v1/ready", tag = "health", responses(
    (status = 200, body = Readiness),
    (status = 503, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn ready(State(st): State<AppState>) -> Response {
    let pg = st.store().ping().await;
    let nats = st
        .nats
        .as_ref()
        .is_some_and(escrow_nats::Nats::is_connected);
    if pg && nats {
        (
            StatusCode::OK,
            Json(Readiness {
                postgres: "ok",
                nats: "ok",
            }),
        )
            .into_response()
    } else {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_READY",
            format!(
                "postgres: {}, nats: {}",
                if pg { "ok" } else { "unavailable" },
                if nats { "ok" } else { "unavailable" }
            ),
        );
        e.retry_after = Some(1);
        e.into_response()
    }
}
