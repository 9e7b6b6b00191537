//! The audit trail: the event stream itself, read straight from the event store.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use domain::UserId;
use event_store::RecordedEvent;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::{ApiError, Result};
use crate::extract::{parse_id, PathParam, QueryMap};
use crate::state::AppState;

/// Most entries per page.
const PAGE_ITEMS_MAX: i64 = 500;
/// Entries per page when `limit` is not given.
const PAGE_ITEMS_DEFAULT: i64 = 50;
/// Cursors this API issues start with this tag; anything else is refused.
const CURSOR_TAG: &str = "p1.";

/// One audit entry: one event as stored.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Global position.
    pub position: i64,
    /// Event id.
    pub event_id: String,
    /// The stream, such as `wallet-<uuid>`.
    pub stream_id: String,
    /// Version within the stream.
    pub version: i64,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of `data`.
    pub schema_version: i32,
    /// Who: a user id, `system` or `operator`.
    pub actor: Option<String>,
    /// Groups the events of one user action.
    pub correlation_id: Option<String>,
    /// The event's fields.
    #[schema(value_type = Object)]
    pub data: Value,
    /// RFC 3339 UTC.
    pub recorded_at: String,
    /// This event's link in its stream's hash chain (hex).
    pub hash: String,
}

/// A page of audit entries, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    /// The entries.
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page.
    pub next_cursor: Option<String>,
}

/// One stored event as an audit entry.
fn entry(e: RecordedEvent) -> AuditEntry {
    let meta = |k: &str| e.metadata.get(k).and_then(Value::as_str).map(str::to_owned);
    AuditEntry {
        position: e.position,
        event_id: e.event_id.to_string(),
        actor: meta("actor"),
        correlation_id: meta("correlationId"),
        stream_id: e.stream_id,
        version: e.version,
        event_type: e.event_type,
        schema_version: e.schema_version,
        data: e.data,
        recorded_at: crate::rfc3339(e.recorded_at),
        hash: hex_string(&e.hash),
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn paging(q: &QueryMap) -> Result<(i64, i64)> {
    let limit = match q.int("limit", PAGE_ITEMS_MAX)? {
        None => PAGE_ITEMS_DEFAULT,
        Some(0) => {
            return Err(ApiError::bad_request(
                "INVALID_QUERY_PARAMETER",
                "limit must be from 1 to 500",
            ))
        }
        Some(l) => l,
    };
    let before = match q.0.get("cursor") {
        None => i64::MAX,
        Some(c) => c
            .strip_prefix(CURSOR_TAG)
            .and_then(|p| p.parse::<i64>().ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                ApiError::bad_request("INVALID_CURSOR", "cursor is not one this API issued")
            })?,
    };
    Ok((limit, before))
}

/// `minPosition` on a read straight from the event store: any position a client was given
/// is committed, so the read is fresh at it.
fn always_fresh(q: &QueryMap) -> Result<Option<bool>> {
    Ok(q.min_position()?.filter(|p| *p > 0).map(|_| true))
}

fn page(rows: Vec<RecordedEvent>, limit: i64) -> Response {
    let next_cursor = (rows.len() as i64 > limit)
        .then(|| format!("{CURSOR_TAG}{}", rows[limit as usize - 1].position));
    let items = rows.into_iter().take(limit as usize).map(entry).collect();
    Json(AuditPage { items, next_cursor }).into_response()
}

/// Every event where the user is the actor or a party: its user and wallet streams, its
/// contracts and their disputes (self, arbiters, admins).
#[utoipa::path(get, path = "/api/v1/audit/logs/user/{userId}", tag = "audit", security(("bearer" = [])),
    params(("userId" = String, Path, format = Uuid, description = "User id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, pattern = "^p1\\.[1-9][0-9]{0,17}$", description = "nextCursor of the previous page"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Accepted for symmetry with the other reads: the audit is read from the event store, always fresh")),
    responses((status = 200, body = AuditPage),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn for_user(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(user): PathParam,
    q: QueryMap,
) -> Result<Response> {
    let user = UserId(parse_id(&user, "userId")?);
    q.only(&["limit", "cursor", "minPosition"])?;
    let min_position = q.min_position()?;
    let (limit, before) = paging(&q)?;
    if !caller.can_see(user) {
        return Err(ApiError::forbidden(
            "you may only read your own audit trail",
        ));
    }
    // Which wallets are the user's comes from the read models: wait for them as other
    // reads do. Its contracts and disputes come from the store's own party index.
    let reached =
        crate::routes::await_position(&st, &caller, min_position, crate::routes::Reads::Own)
            .await?;
    let streams = projections::read::own_streams(&st.pool, user.0).await?;
    let rows = st
        .store()
        .trail(user.0, &streams, &user.0.to_string(), before, limit + 1)
        .await?;
    Ok(crate::routes::with_consistency(page(rows, limit), reached))
}

/// A contract's stream and its disputes' events, in order (parties, arbiters, admins).
#[utoipa::path(get, path = "/api/v1/contracts/{id}/history", tag = "audit", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Contract id"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Accepted for symmetry with the other reads: the audit is read from the event store, always fresh")),
    responses((status = 200, body = AuditPage),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn contract_history(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    q: QueryMap,
) -> Result<Response> {
    let id = parse_id(&id, "contract id")?;
    q.only(&["minPosition"])?;
    let fresh = always_fresh(&q)?;
    // Parties come from the contract's own first event, not from a read model.
    let stream = format!("contract-{id}");
    let created = st
        .store()
        .first_event(&stream)
        .await?
        .filter(|e| e.event_type == "ContractCreated");
    let party = |k: &str, d: &Value| {
        d.get(k).and_then(Value::as_str) == Some(caller.id.0.to_string().as_str())
    };
    match &created {
        Some(e)
            if caller.role.sees_everything()
                || party("buyerId", &e.data)
                || party("sellerId", &e.data) => {}
        _ => {
            return Err(ApiError::not_found(
                "CONTRACT_NOT_FOUND",
                "contract not found",
            ))
        }
    }
    // The contract's stream, then the disputes its own events name (`ContractDisputed` is
    // written with each `DisputeRaised`): two reads by the stream index.
    let mut rows = st.store().read_stream(&stream, 0).await?;
    let disputes: Vec<String> = rows
        .iter()
        .filter(|e| e.event_type == "ContractDisputed")
        .filter_map(|e| e.data.get("disputeId").and_then(Value::as_str))
        .map(|d| format!("dispute-{d}"))
        .collect();
    if !disputes.is_empty() {
        rows.extend(st.store().read_streams(&disputes).await?);
        rows.sort_by_key(|e| e.position);
    }
    let items = rows.into_iter().map(entry).collect();
    let res = Json(AuditPage {
        items,
        next_cursor: None,
    })
    .into_response();
    Ok(crate::routes::with_consistency(res, fresh))
}

/// The whole audit log, newest first, with filters (admins only).
#[utoipa::path(get, path = "/api/v1/audit/logs", tag = "audit", security(("bearer" = [])),
    params(("type" = Option<String>, Query, pattern = "^[A-Za-z0-9_-]{1,64}$", description = "Event type, such as FundsDeposited"),
        ("stream" = Option<String>, Query, pattern = "^[A-Za-z0-9_-]{1,80}$", description = "Stream id, such as wallet-<uuid>"),
        ("actor" = Option<String>, Query, pattern = "^[A-Za-z0-9_-]{1,64}$", description = "A user id, system or operator"),
        ("from" = Option<String>, Query, format = DateTime, description = "Recorded at or after (RFC 3339)"),
        ("to" = Option<String>, Query, format = DateTime, description = "Recorded before (RFC 3339)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, pattern = "^p1\\.[1-9][0-9]{0,17}$", description = "nextCursor of the previous page"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Accepted for symmetry with the other reads: the audit is read from the event store, always fresh")),
    responses((status = 200, body = AuditPage),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "STREAM_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn all(State(st): State<AppState>, caller: AuthUser, q: QueryMap) -> Result<Response> {
    q.only(&[
        "type",
        "stream",
        "actor",
        "from",
        "to",
        "limit",
        "cursor",
        "minPosition",
    ])?;
    let fresh = always_fresh(&q)?;
    if caller.role != domain::Role::Admin {
        return Err(ApiError::forbidden("the full audit log is for admins"));
    }
    let (limit, before) = paging(&q)?;
    let text = |k: &str, max: usize| -> Result<Option<String>> {
        match q.0.get(k) {
            None => Ok(None),
            Some(v)
                if !v.is_empty()
                    && v.len() <= max
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Ok(Some(v.clone()))
            }
            Some(_) => Err(ApiError::bad_request(
                "INVALID_QUERY_PARAMETER",
                format!("{k} is malformed"),
            )),
        }
    };
    let time = |k: &str| -> Result<Option<DateTime<Utc>>> {
        match q.0.get(k) {
            None => Ok(None),
            Some(v) => DateTime::parse_from_rfc3339(v)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| {
                    ApiError::bad_request(
                        "INVALID_QUERY_PARAMETER",
                        format!("{k} must be an RFC 3339 time"),
                    )
                }),
        }
    };
    let (kind, stream, actor) = (text("type", 64)?, text("stream", 80)?, text("actor", 64)?);
    let (from, to) = (time("from")?, time("to")?);
    if let Some(s) = &stream {
        if st.store().first_event(s).await?.is_none() {
            return Err(ApiError::not_found("STREAM_NOT_FOUND", "no such stream"));
        }
    }
    let filter = event_store::AuditFilter {
        event_type: kind,
        stream,
        actor,
        from,
        to,
    };
    let rows = st.store().audit_page(&filter, before, limit + 1).await?;
    Ok(crate::routes::with_consistency(page(rows, limit), fresh))
}

/// Body of `POST /logs` (the seed's audit service): an application's own audit entry.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ActivityRequest {
    /// The user it concerns; the caller when absent (only admins name another user).
    #[schema(format = Uuid)]
    pub user_id: Option<String>,
    /// What happened: 1 to 100 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub action: String,
    /// The kind of thing it concerns: as `action`.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub resource: Option<String>,
    /// Which one: as `action`.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub resource_id: Option<String>,
    /// Anything else, as a JSON object (at most 4096 bytes, no NUL character).
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

/// An application audit entry as recorded.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityView {
    /// The user it concerns.
    pub user_id: String,
    /// Who recorded it.
    pub recorded_by: String,
    /// What happened.
    pub action: String,
    /// The kind of thing it concerns.
    pub resource: Option<String>,
    /// Which one.
    pub resource_id: Option<String>,
    /// Anything else.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Global position reached: the entry is in the audit trail from here on.
    pub position: i64,
}

fn respond_activity(outcome: &command_handlers::Outcome, position: i64) -> (u16, Value) {
    match outcome {
        command_handlers::Outcome::Activity(a) => (
            201,
            serde_json::json!(ActivityView {
                user_id: a.user_id.to_string(),
                recorded_by: a.recorded_by.to_string(),
                action: a.action.clone(),
                resource: a.resource.clone(),
                resource_id: a.resource_id.clone(),
                details: a.details.clone(),
                created_at: crate::rfc3339(a.recorded_at),
                position,
            }),
        ),
        other => crate::routes::unexpected(other),
    }
}

/// Record an application's own audit entry (the seed's `POST /logs`): an `ActivityRecorded`
/// event in the user's stream, hash-chained and listed in its audit trail. A user records
/// its own activity, an admin anyone's.
#[utoipa::path(post, path = "/api/v1/logs", tag = "audit", security(("bearer" = [])), request_body = ActivityRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 201, body = ActivityView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "USER_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "INVALID_DETAILS (details over 4096 bytes of JSON, or holding a NUL character) and validation errors", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn record(
    State(st): State<AppState>,
    caller: AuthUser,
    meta: crate::extract::RequestMeta,
    key: crate::extract::IdempotencyKey,
    body: crate::extract::JsonBody,
) -> Result<Response> {
    let req: ActivityRequest = body.parse()?;
    if req.details.as_ref().is_some_and(|d| !d.is_object()) {
        return Err(ApiError::unprocessable(
            "INVALID_BODY",
            "details must be a JSON object",
        ));
    }
    let user = match &req.user_id {
        Some(u) => UserId(crate::extract::parse_body_id(u, "userId")?),
        None => caller.id,
    };
    let ctx = crate::routes::user_context(&caller, "POST /logs", &meta, key, &body);
    let cmd = command_handlers::Command::RecordActivity {
        actor: domain::Actor::User {
            id: caller.id,
            role: caller.role,
        },
        user_id: user,
        entry: domain::user::RecordActivity {
            action: req.action,
            resource: req.resource,
            resource_id: req.resource_id,
            details: req.details,
            now: st.clock.timestamp(),
        },
    };
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(crate::routes::render(&st, executed, &respond_activity))
}

/// A user's audit trail at the seed's path (`GET /logs/user/{userId}`): the same as
/// `GET /audit/logs/user/{userId}`.
#[utoipa::path(get, path = "/api/v1/logs/user/{userId}", tag = "audit", security(("bearer" = [])),
    params(("userId" = String, Path, format = Uuid, description = "User id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, pattern = "^p1\\.[1-9][0-9]{0,17}$", description = "nextCursor of the previous page"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Accepted for symmetry with the other reads: the audit is read from the event store, always fresh")),
    responses((status = 200, body = AuditPage),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn logs_for_user(
    st: State<AppState>,
    caller: AuthUser,
    user: PathParam,
    q: QueryMap,
) -> Result<Response> {
    for_user(st, caller, user, q).await
}
