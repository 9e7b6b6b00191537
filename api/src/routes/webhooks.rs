//! Webhook endpoints (admins only): register where events go, change or delete it, rotate
//! its secret. Their delivery log, retries and replays are `deliveries.rs`. The rules of
//! an endpoint are the domain's (`domain::webhook`); delivering is the `webhooks` crate's.
//!
//! A secret is minted here and shown once, in the answer that created or rotated it; it
//! is stored (sealed when `WEBHOOK_SECRETS_KEY` is set) before the command that makes the
//! endpoint exist, so no endpoint is ever without one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use command_handlers::{Command, Outcome};
use domain::webhook::{self, ChangeWebhook, WebhookChange};
use domain::{Actor, Role, StreamId, Versioned, WebhookEndpoint, WebhookId, WebhookStatus};
use projections::read::WebhookRow;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use webhooks::UrlRefusal;

use crate::auth::AuthUser;
use crate::clock::to_utc;
use crate::error::{ApiError, Result};
use crate::extract::{parse_id, JsonBody, PathParam, QueryMap, RequestMeta};
use crate::routes::{await_position, command_context, read_or_wait, with_consistency, Reads};
use crate::state::AppState;

/// A webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    /// Endpoint id (`Escrow-Webhook-Id`).
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// Event types, categories (`contract.*`) or `*`.
    pub events: Vec<String>,
    /// `ACTIVE`, `PAUSED` or `DISABLED`.
    pub status: String,
    /// What it is for.
    pub description: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// The signing secret: only in the answer that created or rotated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Endpoints, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookList {
    /// The endpoints.
    pub items: Vec<WebhookView>,
}

/// A rotated secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedSecret {
    /// The new signing secret (shown only here).
    pub secret: String,
    /// Until when (RFC 3339 UTC) the previous secret still signs beside it.
    pub previous_secret_expires_at: String,
}

/// Body of `POST /webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookCreateRequest {
    /// An `http` or `https` URL (public addresses only, unless
    /// `WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`); redirects are not followed.
    #[schema(
        min_length = 1,
        max_length = 2000,
        example = "https://example.com/escrow-events"
    )]
    pub url: String,
    /// Event types (`ContractFunded`), categories (`contract.*`) or `*`; 1 to 100.
    #[schema(min_items = 1, max_items = 100)]
    pub events: Vec<String>,
    /// What it is for (at most 500 characters).
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

/// Body of `PATCH /webhooks/{id}`: only what changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookUpdateRequest {
    /// A new URL.
    #[schema(min_length = 1, max_length = 2000)]
    pub url: Option<String>,
    /// A new filter (applies to events after the change).
    #[schema(min_items = 1, max_items = 100)]
    pub events: Option<Vec<String>>,
    /// A new description (empty: none).
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// `PAUSED` stops sending (deliveries queue); `ACTIVE` sends again, and re-enables a
    /// `DISABLED` endpoint from the delivery that disabled it.
    #[schema(pattern = "^(ACTIVE|PAUSED)$")]
    pub status: Option<String>,
}

pub(crate) fn admin(caller: &AuthUser) -> Result<Actor> {
    if caller.role != Role::Admin {
        return Err(ApiError::forbidden(
            "only an admin may manage webhook endpoints",
        ));
    }
    Ok(Actor::User {
        id: caller.id,
        role: caller.role,
    })
}

fn url_refused(e: UrlRefusal) -> ApiError {
    let code = match e {
        UrlRefusal::Private(_) => "WEBHOOK_URL_NOT_ALLOWED",
        _ => "INVALID_WEBHOOK_URL",
    };
    ApiError::unprocessable(code, e.to_string())
}

async fn checked_url(st: &AppState, raw: &str) -> Result<String> {
    webhooks::check_url(raw, st.webhooks.allow_private_networks)
        .await
        .map(|u| u.to_string())
        .map_err(url_refused)
}

fn view_of(id: WebhookId, w: &WebhookEndpoint, secret: Option<String>) -> WebhookView {
    WebhookView {
        id: id.to_string(),
        url: w.url.clone(),
        events: w.events.clone(),
        status: w.status.as_str().into(),
        description: w.description.clone(),
        created_at: w
            .created_at
            .map(|t| crate::rfc3339(to_utc(t)))
            .unwrap_or_default(),
        secret,
    }
}

fn row_view(r: &WebhookRow) -> WebhookView {
    WebhookView {
        id: r.id.to_string(),
        url: r.url.clone(),
        events: r.events.clone(),
        status: r.status.clone(),
        description: r.description.clone(),
        created_at: crate::rfc3339(r.created_at),
        secret: None,
    }
}

/// Runs `change` on endpoint `id` as `caller`, after deciding it once on the state the
/// read model shows (so a refused change writes nothing, not even a secret).
async fn change(
    st: &AppState,
    caller: &AuthUser,
    meta: &RequestMeta,
    id: WebhookId,
    change: WebhookChange,
    dry_run_on: Versioned<WebhookEndpoint>,
    before_command: impl std::future::Future<Output = Result<()>>,
) -> Result<(WebhookEndpoint, i64)> {
    let cmd = ChangeWebhook {
        actor: admin(caller)?,
        webhook_id: id,
        change,
        now: st.clock.timestamp(),
    };
    webhook::decide(&dry_run_on, &cmd)?;
    before_command.await?;
    let ctx = command_context(
        command_handlers::Actor::User(caller.id),
        &caller.id.to_string(),
        "webhooks",
        meta,
        crate::extract::IdempotencyKey(None),
        &JsonBody(Default::default()),
    );
    let executed = st.ledger.execute(&ctx, Command::ChangeWebhook(cmd)).await?;
    st.relay_wake.notify_one();
    match executed {
        command_handlers::Executed::Fresh { outcome, position } => match *outcome {
            Outcome::Webhook(w) => Ok((w.endpoint, position)),
            other => Err(ApiError::internal(format!("unexpected {other:?}"))),
        },
        other => Err(ApiError::internal(format!("unexpected {other:?}"))),
    }
}

/// The endpoint as the read model has it (waiting for the caller's own last change), or
/// 404.
pub(crate) async fn current(st: &AppState, caller: &AuthUser, id: WebhookId) -> Result<WebhookRow> {
    let stream = StreamId::webhook(id);
    await_position(st, caller, None, Reads::Stream(stream.clone())).await?;
    read_or_wait(st, &stream, || projections::read::webhook(&st.pool, id.0))
        .await?
        .filter(|r| r.status != "DELETED")
        .ok_or_else(|| ApiError::not_found("WEBHOOK_NOT_FOUND", "webhook endpoint not found"))
}

fn state_of(r: &WebhookRow) -> Versioned<WebhookEndpoint> {
    Versioned {
        state: WebhookEndpoint {
            id: Some(WebhookId(r.id)),
            url: r.url.clone(),
            events: r.events.clone(),
            description: r.description.clone(),
            status: WebhookStatus::parse(&r.status).unwrap_or_default(),
            deleted: false,
            created_at: None,
        },
        // Any existing version: the command itself is checked against the stream.
        version: 1,
    }
}

/// Register a webhook endpoint (admin). The answer holds its signing secret, shown only
/// here.
#[utoipa::path(post, path = "/api/v1/webhooks", operation_id = "create_webhook", tag = "webhooks", security(("bearer" = [])), request_body = WebhookCreateRequest,
    responses((status = 201, body = WebhookView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "INVALID_WEBHOOK_URL, WEBHOOK_URL_NOT_ALLOWED, UNKNOWN_EVENT_FILTER, INVALID_WEBHOOK", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(st): State<AppState>,
    caller: AuthUser,
    meta: RequestMeta,
    body: JsonBody,
) -> Result<Response> {
    admin(&caller)?;
    let req: WebhookCreateRequest = body.parse()?;
    let url = checked_url(&st, &req.url).await?;
    let id = WebhookId::new_v7();
    let secret = webhooks::mint().map_err(ApiError::internal)?;
    let store = webhooks::store_secret(&st.pool, &st.webhooks.secrets, id.0, &secret);
    let (endpoint, _) = change(
        &st,
        &caller,
        &meta,
        id,
        WebhookChange::Create {
            url,
            events: req.events,
            description: req.description,
        },
        Versioned::default(),
        async { store.await.map_err(ApiError::internal) },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!(view_of(id, &endpoint, Some(secret)))),
    )
        .into_response())
}

/// Every webhook endpoint (admin).
#[utoipa::path(get, path = "/api/v1/webhooks", operation_id = "list_webhooks", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = WebhookList),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn list(State(st): State<AppState>, caller: AuthUser, q: QueryMap) -> Result<Response> {
    admin(&caller)?;
    q.only(&[])?;
    let reached = await_position(&st, &caller, None, Reads::Own).await?;
    let rows = projections::read::webhooks(&st.pool).await?;
    let items: Vec<WebhookView> = rows.iter().map(row_view).collect();
    Ok(with_consistency(
        Json(json!(WebhookList { items })).into_response(),
        reached,
    ))
}

/// A webhook endpoint (admin).
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", operation_id = "get_webhook", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Webhook endpoint id")),
    responses((status = 200, body = WebhookView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "WEBHOOK_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get_one(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
) -> Result<Response> {
    admin(&caller)?;
    let id = WebhookId(parse_id(&id, "webhook id")?);
    let row = current(&st, &caller, id).await?;
    Ok(Json(json!(row_view(&row))).into_response())
}

/// Change a webhook endpoint (admin): its URL, filter, description, or status (`PAUSED`,
/// or `ACTIVE`, which also re-enables a `DISABLED` one from the delivery that disabled it).
#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", operation_id = "update_webhook", tag = "webhooks", security(("bearer" = [])), request_body = WebhookUpdateRequest,
    params(("id" = String, Path, format = Uuid, description = "Webhook endpoint id")),
    responses((status = 200, body = WebhookView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "WEBHOOK_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "INVALID_WEBHOOK_URL, WEBHOOK_URL_NOT_ALLOWED, UNKNOWN_EVENT_FILTER, INVALID_WEBHOOK", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn update(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    meta: RequestMeta,
    body: JsonBody,
) -> Result<Response> {
    admin(&caller)?;
    let id = WebhookId(parse_id(&id, "webhook id")?);
    let req: WebhookUpdateRequest = body.parse()?;
    let status = match req.status.as_deref() {
        None => None,
        Some(s) => Some(
            WebhookStatus::parse(s)
                .filter(|s| *s != WebhookStatus::Disabled)
                .ok_or_else(|| {
                    ApiError::unprocessable("INVALID_WEBHOOK", "status must be ACTIVE or PAUSED")
                })?,
        ),
    };
    let url = match &req.url {
        Some(u) => Some(checked_url(&st, u).await?),
        None => None,
    };
    let row = current(&st, &caller, id).await?;
    let (endpoint, _) = change(
        &st,
        &caller,
        &meta,
        id,
        WebhookChange::Update {
            url,
            events: req.events,
            description: req.description,
            status,
        },
        state_of(&row),
        async { Ok(()) },
    )
    .await?;
    if status == Some(WebhookStatus::Active) {
        // Re-enabled: the delivery that disabled it is pending again, so the deliverer
        // resumes from it.
        webhooks::resume(&st.pool, id.0).await?;
    }
    Ok(Json(json!(view_of(id, &endpoint, None))).into_response())
}

/// Delete a webhook endpoint (admin): nothing more is delivered; its secrets are erased.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", operation_id = "delete_webhook", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Webhook endpoint id")),
    responses((status = 204, description = "Deleted"),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "WEBHOOK_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    meta: RequestMeta,
) -> Result<Response> {
    admin(&caller)?;
    let id = WebhookId(parse_id(&id, "webhook id")?);
    let row = current(&st, &caller, id).await?;
    change(
        &st,
        &caller,
        &meta,
        id,
        WebhookChange::Delete,
        state_of(&row),
        async { Ok(()) },
    )
    .await?;
    webhooks::forget(&st.pool, id.0).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Rotate a webhook endpoint's secret (admin). The answer holds the new secret, shown only
/// here; the previous one keeps signing beside it for 24 hours.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/rotate-secret", operation_id = "rotate_webhook_secret", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Webhook endpoint id")),
    responses((status = 200, body = RotatedSecret),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "WEBHOOK_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn rotate_secret(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    meta: RequestMeta,
) -> Result<Response> {
    admin(&caller)?;
    let id = WebhookId(parse_id(&id, "webhook id")?);
    let row = current(&st, &caller, id).await?;
    let secret = webhooks::mint().map_err(ApiError::internal)?;
    let until = st.clock.now() + chrono::Duration::hours(webhooks::ROTATION_OVERLAP_HOURS);
    let rotate = webhooks::rotate_secret(&st.pool, &st.webhooks.secrets, id.0, &secret, until);
    change(
        &st,
        &caller,
        &meta,
        id,
        WebhookChange::RotateSecret {
            previous_until: domain::Timestamp(until.timestamp_millis()),
        },
        state_of(&row),
        async { rotate.await.map_err(ApiError::internal) },
    )
    .await?;
    Ok(Json(json!(RotatedSecret {
        secret,
        previous_secret_expires_at: crate::rfc3339(until),
    }))
    .into_response())
}

/// The webhook routes, under `/api/v1`.
pub(crate) fn routes() -> axum::Router<AppState> {
    use crate::routes::deliveries;
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/webhooks", post(create).get(list))
        .route("/webhooks/{id}", get(get_one).patch(update).delete(delete))
        .route("/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route("/webhooks/{id}/deliveries", get(deliveries::list))
        .route(
            "/webhooks/{id}/deliveries/{deliveryId}/retry",
            post(deliveries::retry),
        )
        .route("/webhooks/{id}/replay", post(deliveries::replay))
}
