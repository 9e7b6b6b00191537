//! HTTP handlers, grouped by resource.

pub mod audit;
pub mod auth;
pub mod contracts;
pub mod deliveries;
pub mod disputes;
pub mod freezes;
pub mod health;
pub mod milestones;
pub mod payins;
pub mod payouts;
pub mod platform;
pub mod statements;
pub mod users;
pub mod wallets;
pub mod webhooks;
pub mod ws;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use command_handlers::{Actor, CommandContext, Executed, Outcome};
use event_store::IdempotencyRecord;
use serde_json::Value;

use crate::auth::AuthUser;
use crate::error::{ApiError, Result};
use crate::extract::{IdempotencyKey, JsonBody, RequestMeta};
use crate::state::AppState;

/// Header set on a response that was replayed from an earlier request with the same
/// `Idempotency-Key`.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Header saying whether a query's read models had reached the requested `minPosition`.
pub const CONSISTENCY_HEADER: &str = "x-read-consistency";

/// Builds the command context: actor, request ids, and the idempotency record scoped to
/// the caller (or `scope_owner` for anonymous routes) and the route.
pub(crate) fn command_context(
    actor: Actor,
    scope_owner: &str,
    route: &str,
    meta: &RequestMeta,
    key: IdempotencyKey,
    body: &JsonBody,
) -> CommandContext {
    CommandContext {
        actor,
        correlation_id: meta.correlation_id,
        causation_id: None,
        request_id: meta.request_id.clone(),
        idempotency: key.0.map(|key| IdempotencyRecord {
            scope: format!("{scope_owner}|{route}"),
            key,
            request_hash: body.sha256(),
        }),
    }
}

/// The context of an authenticated user's command.
pub(crate) fn user_context(
    user: &AuthUser,
    route: &str,
    meta: &RequestMeta,
    key: IdempotencyKey,
    body: &JsonBody,
) -> CommandContext {
    command_context(
        Actor::User(user.id),
        &user.id.to_string(),
        route,
        meta,
        key,
        body,
    )
}

/// Turns an executed command into the HTTP response. A replay is rendered by the same
/// `respond` from the same outcome and position as the first answer, so it is the same
/// answer (marked replayed); a key stored before outcomes were kept answers its stored
/// response.
pub(crate) fn render(
    st: &AppState,
    executed: Executed,
    respond: &dyn Fn(&Outcome, i64) -> (u16, Value),
) -> Response {
    match executed {
        Executed::Fresh { outcome, position } => {
            st.relay_wake.notify_one();
            let (status, body) = respond(&outcome, position);
            json_response(status, body, false)
        }
        Executed::Replayed { outcome, position } => {
            let (status, body) = respond(&outcome, position);
            json_response(status, body, true)
        }
        Executed::ReplayedResponse { status, body } => json_response(status, body, true),
    }
}

fn json_response(status: u16, body: Value, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut res = (status, axum::Json(body)).into_response();
    if replayed {
        res.headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    res
}

/// What a query reads, for [`await_position`] to wait for when the client names no
/// position.
pub(crate) enum Reads {
    /// The caller's own data (lists of its contracts, its audit trail): its own last
    /// command.
    Own,
    /// One stream's row (a wallet and its history, a contract, a dispute, a user): the
    /// caller's own last command and everything written to that stream before the query.
    Stream(domain::StreamId),
    /// Everyone's data (an arbiter's or admin's view): everything committed before the
    /// query.
    Everything,
}

/// Waits (bounded by `READ_WAIT_MS` in all) for the read models to reach `min_position`;
/// without one, for what `reads` says (session consistency, unless
/// `SESSION_CONSISTENCY=false`). Returns whether they did; `None` when nothing was waited
/// for (`minPosition=0`, or session consistency off).
pub(crate) async fn await_position(
    st: &AppState,
    caller: &AuthUser,
    min_position: Option<i64>,
    reads: Reads,
) -> Result<Option<bool>> {
    let position = |p| st.freshness.wait_for_position(&st.pool, p, st.read_wait);
    match min_position {
        Some(0) => Ok(None),
        Some(p) => Ok(Some(position(p).await?)),
        None if !st.session_consistency => Ok(None),
        None => match reads {
            Reads::Everything => match st.store().head().await? {
                0 => Ok(Some(true)),
                head => Ok(Some(position(head).await?)),
            },
            Reads::Own | Reads::Stream(_) => {
                // On whichever server the writes were taken: the store knows them.
                let stream = match &reads {
                    Reads::Stream(s) => Some(s.as_str()),
                    _ => None,
                };
                let newest = st
                    .store()
                    .newest_events(&caller.id.to_string(), stream)
                    .await?;
                Ok(Some(
                    st.freshness
                        .wait_for_events(&st.pool, &newest, st.read_wait)
                        .await?,
                ))
            }
        },
    }
}

/// Reads a row by `read`; when the read models do not have it although its stream exists
/// (created on another server a moment ago, or the projection is behind), waits for them
/// to include the stream's first event, bounded as `minPosition` is, and reads again. A
/// stream that does not exist answers `None` at once (a true 404); one the read models
/// still lack after the wait is a 503 `READ_MODEL_BEHIND`, never a 404 for what exists.
pub(crate) async fn read_or_wait<T, E, F, Fut>(
    st: &AppState,
    stream: &domain::StreamId,
    read: F,
) -> Result<Option<T>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Option<T>, E>>,
    ApiError: From<E>,
{
    if let Some(row) = read().await? {
        return Ok(Some(row));
    }
    let Some(first) = st.store().first_event(stream.as_str()).await? else {
        return Ok(None);
    };
    st.freshness
        .wait_for_position(&st.pool, first.position, st.read_wait)
        .await?;
    match read().await? {
        Some(row) => Ok(Some(row)),
        None => {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "READ_MODEL_BEHIND",
                "it exists, but the read models have not caught up yet; retry shortly",
            );
            e.retry_after = Some(1);
            Err(e)
        }
    }
}

/// Adds the consistency header to a query response.
pub(crate) fn with_consistency(mut res: Response, reached: Option<bool>) -> Response {
    if let Some(r) = reached {
        res.headers_mut().insert(
            CONSISTENCY_HEADER,
            HeaderValue::from_static(if r { "fresh" } else { "stale" }),
        );
    }
    res
}

/// A 500 for an outcome a route does not produce (a programming error).
pub(crate) fn unexpected(outcome: &Outcome) -> (u16, Value) {
    let e = ApiError::internal(format!("unexpected outcome {outcome:?}"));
    (e.status.as_u16(), serde_json::json!({ "code": e.code }))
}

/// Items per page when `limit` is not given.
const PAGE_ITEMS_DEFAULT: i64 = 20;

/// `limit` (1 to `max`, default 20) and `cursor` (a position issued by this API).
pub(crate) fn page_params(q: &crate::extract::QueryMap, max: i64) -> Result<(i64, i64)> {
    let limit = match q.int("limit", max)? {
        None => PAGE_ITEMS_DEFAULT,
        Some(0) => {
            return Err(ApiError::bad_request(
                "INVALID_QUERY_PARAMETER",
                format!("limit must be from 1 to {max}"),
            ))
        }
        Some(l) => l,
    };
    let before = match q.0.get("cursor") {
        None => i64::MAX,
        Some(c) => c.parse::<i64>().ok().filter(|p| *p > 0).ok_or_else(|| {
            ApiError::bad_request("INVALID_CURSOR", "cursor is not one this API issued")
        })?,
    };
    Ok((limit, before))
}

/// Whose pay-ins or payouts a list shows, from its `userId` parameter: the service role and
/// admins see everyone's (or the one user's named), and wait for everything committed; a
/// user sees only its own (naming anyone else is 403) and waits for its own writes.
pub(crate) fn provider_list_scope(
    caller: &AuthUser,
    q: &crate::extract::QueryMap,
    what: &str,
) -> Result<(Option<uuid::Uuid>, Reads)> {
    let named: Option<uuid::Uuid> = match q.0.get("userId") {
        None => None,
        Some(u) => Some(uuid::Uuid::parse_str(u).map_err(|_| {
            ApiError::bad_request("INVALID_QUERY_PARAMETER", "userId must be a UUID")
        })?),
    };
    if matches!(caller.role, domain::Role::Service | domain::Role::Admin) {
        Ok((named, Reads::Everything))
    } else if named.is_none_or(|u| u == caller.id.0) {
        Ok((Some(caller.id.0), Reads::Own))
    } else {
        Err(ApiError::forbidden(format!(
            "you may only list your own {what}"
        )))
    }
}
