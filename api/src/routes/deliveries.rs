//! A webhook endpoint's delivery log (admins only): its deliveries, a retry of one, and a
//! replay of past events as new deliveries. Sending them is the `webhooks` crate's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::WebhookId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use webhooks::{Delivery, RetryOutcome};

use crate::auth::AuthUser;
use crate::error::{ApiError, Result};
use crate::extract::{parse_id, JsonBody, PathPair, PathParam, QueryMap};
use crate::routes::page_params;
use crate::routes::webhooks::{admin, current};
use crate::state::AppState;

/// Most deliveries per page.
const PAGE_ITEMS_MAX: i64 = 100;

/// One delivery of an event to an endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    /// Delivery id (`Escrow-Delivery-Id`).
    pub id: String,
    /// The event (`Escrow-Event-Id`).
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The event's global position.
    pub position: i64,
    /// `Escrow-Sequence`: 1, 2, 3 … per endpoint, without gaps.
    pub sequence: i64,
    /// `PENDING`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// The last answer's HTTP status.
    pub last_status_code: Option<i32>,
    /// The last failure: at most 1 KiB of the answer, or why there was none.
    pub last_error: Option<String>,
    /// RFC 3339 UTC, while pending.
    pub next_attempt_at: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC, once a 2xx answered.
    pub delivered_at: Option<String>,
}

/// A page of deliveries, newest sequence first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    /// The deliveries.
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// What a replay queued.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayQueued {
    /// Deliveries queued (the matching events at or after `fromPosition`).
    pub queued: u64,
}

/// Body of `POST /webhooks/{id}/replay`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookReplayRequest {
    /// Re-send the matching events at or after this global position (0 to the newest).
    #[schema(minimum = 0)]
    pub from_position: i64,
}

fn delivery_view(d: &Delivery) -> DeliveryView {
    DeliveryView {
        id: d.id.to_string(),
        event_id: d.event_id.to_string(),
        event_type: d.event_type.clone(),
        position: d.position,
        sequence: d.sequence,
        status: d.status.clone(),
        attempts: d.attempts,
        last_status_code: d.last_status_code,
        last_error: d.last_error.clone(),
        next_attempt_at: (d.status == "PENDING").then(|| crate::rfc3339(d.next_attempt_at)),
        created_at: crate::rfc3339(d.created_at),
        delivered_at: d.delivered_at.map(crate::rfc3339),
    }
}

/// A webhook endpoint's deliveries, newest sequence first (admin).
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Webhook endpoint id"),
        ("status" = Option<String>, Query, pattern = "^(PENDING|SUCCEEDED|FAILED)$", description = "Only deliveries in this status"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items per page (default 20)"),
        ("cursor" = Option<String>, Query, description = "The previous page's nextCursor")),
    responses((status = 200, body = DeliveryPage),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "WEBHOOK_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    q: QueryMap,
) -> Result<Response> {
    admin(&caller)?;
    let id = WebhookId(parse_id(&id, "webhook id")?);
    q.only(&["status", "limit", "cursor"])?;
    let status = match q.0.get("status").map(String::as_str) {
        None => None,
        Some(s @ ("PENDING" | "SUCCEEDED" | "FAILED")) => Some(s),
        Some(_) => {
            return Err(ApiError::bad_request(
                "INVALID_QUERY_PARAMETER",
                "status must be PENDING, SUCCEEDED or FAILED",
            ))
        }
    };
    let (limit, before) = page_params(&q, PAGE_ITEMS_MAX)?;
    current(&st, &caller, id).await?;
    let rows = webhooks::deliveries(&st.pool, id.0, status, before, limit).await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|d| d.sequence.to_string()))
        .flatten();
    let items = rows.iter().map(delivery_view).collect();
    Ok(Json(json!(DeliveryPage { items, next_cursor })).into_response())
}

/// Send a delivery again now (admin): a failed one, or a pending one without waiting for
/// its backoff. Later deliveries of the endpoint wait for it, as always.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{deliveryId}/retry", operation_id = "retry_webhook_delivery", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Webhook endpoint id"),
        ("deliveryId" = String, Path, format = Uuid, description = "Delivery id")),
    responses((status = 200, body = DeliveryView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "WEBHOOK_NOT_FOUND, DELIVERY_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "DELIVERY_SUCCEEDED", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn retry(
    State(st): State<AppState>,
    caller: AuthUser,
    PathPair(id, delivery): PathPair,
) -> Result<Response> {
    admin(&caller)?;
    let id = WebhookId(parse_id(&id, "webhook id")?);
    let delivery = parse_id(&delivery, "delivery id")?;
    current(&st, &caller, id).await?;
    match webhooks::retry(&st.pool, id.0, delivery).await? {
        RetryOutcome::Queued(d) => Ok(Json(json!(delivery_view(&d))).into_response()),
        RetryOutcome::NotFound => Err(ApiError::not_found(
            "DELIVERY_NOT_FOUND",
            "this endpoint has no such delivery",
        )),
        RetryOutcome::AlreadySucceeded => Err(ApiError::new(
            StatusCode::CONFLICT,
            "DELIVERY_SUCCEEDED",
            "the delivery succeeded already; replay its event to send it again",
        )),
    }
}

/// Queue again every event the endpoint's filter matches from a global position on, in
/// feed order, as new deliveries with new sequence numbers (admin).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/replay", operation_id = "replay_webhook", tag = "webhooks", security(("bearer" = [])), request_body = WebhookReplayRequest,
    params(("id" = String, Path, format = Uuid, description = "Webhook endpoint id")),
    responses((status = 202, body = ReplayQueued),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "WEBHOOK_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "WEBHOOK_NOT_STARTED: the endpoint was created a moment ago; retry", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "INVALID_POSITION", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn replay(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    body: JsonBody,
) -> Result<Response> {
    admin(&caller)?;
    let id = WebhookId(parse_id(&id, "webhook id")?);
    let req: WebhookReplayRequest = body.parse()?;
    let head = st.store().head().await?;
    if req.from_position < 0 || req.from_position > head {
        return Err(ApiError::unprocessable(
            "INVALID_POSITION",
            format!("fromPosition must be from 0 to the newest position, {head}"),
        ));
    }
    let row = current(&st, &caller, id).await?;
    let queued = webhooks::replay(&st.pool, id.0, &row.events, req.from_position)
        .await
        .map_err(|e| {
            if e.to_string().contains("not started") {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "WEBHOOK_NOT_STARTED",
                    "the endpoint has not started delivering yet; retry in a moment",
                )
            } else {
                ApiError::internal(e)
            }
        })?;
    Ok((StatusCode::ACCEPTED, Json(json!(ReplayQueued { queued }))).into_response())
}
