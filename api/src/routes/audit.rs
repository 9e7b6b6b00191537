//! The audit trail: the event stream itself, read straight from the event store.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use domain::UserId;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

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

#[derive(sqlx::FromRow)]
struct Row {
    position: i64,
    event_id: Uuid,
    stream_id: String,
    version: i64,
    event_type: String,
    schema_version: i32,
    data: Value,
    metadata: Value,
    recorded_at: DateTime<Utc>,
    hash: Vec<u8>,
}

impl Row {
    fn entry(self) -> AuditEntry {
        let meta = |k: &str| {
            self.metadata
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        AuditEntry {
            position: self.position,
            event_id: self.event_id.to_string(),
            actor: meta("actor"),
            correlation_id: meta("correlationId"),
            stream_id: self.stream_id,
            version: self.version,
            event_type: self.event_type,
            schema_version: self.schema_version,
            data: self.data,
            recorded_at: crate::rfc3339(self.recorded_at),
            hash: hex_string(&self.hash),
        }
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const COLUMNS: &str = "position, event_id, stream_id, version, event_type, schema_version, data, metadata, recorded_at, hash";

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

fn page(rows: Vec<Row>, limit: i64) -> Response {
    let next_cursor = (rows.len() as i64 > limit)
        .then(|| format!("{CURSOR_TAG}{}", rows[limit as usize - 1].position));
    let items = rows
        .into_iter()
        .take(limit as usize)
        .map(Row::entry)
        .collect();
    Json(AuditPage { items, next_cursor }).into_response()
}

/// Every event where the user is the actor or a party: its user and wallet streams, its
/// contracts and their disputes (self, arbiters, admins).
#[utoipa::path(get, path = "/api/v1/audit/logs/user/{userId}", tag = "audit", security(("bearer" = [])),
    params(("userId" = String, Path, description = "User id"),
        ("limit" = Option<i64>, Query, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
        ("minPosition" = Option<i64>, Query, description = "Accepted for symmetry with the other reads: the audit is read from the event store, always fresh")),
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
    // Which streams are the user's comes from the read models: wait for them as other
    // reads do.
    let reached = crate::routes::await_position(&st, min_position).await?;
    // The user's streams: its own, its wallets', its contracts' and their disputes'.
    let streams: Vec<(String,)> = sqlx::query_as(
        "SELECT 'user-' || $1::text UNION ALL \
         SELECT 'wallet-' || id FROM rm_wallets WHERE user_id = $1 UNION ALL \
         SELECT 'contract-' || id FROM rm_contracts WHERE buyer_id = $1 OR seller_id = $1 UNION ALL \
         SELECT 'dispute-' || id FROM rm_disputes WHERE buyer_id = $1 OR seller_id = $1",
    )
    .bind(user.0)
    .fetch_all(&st.pool)
    .await?;
    let streams: Vec<String> = streams.into_iter().map(|(s,)| s).collect();
    let rows: Vec<Row> = sqlx::query_as(&format!(
        // Each part gives only its own newest `limit` (per stream, a backward walk of
        // (stream_id, position); the actor's, one of its expression index): taking all of
        // them read and sorted a user's whole history for every page (1,083 ms at 200,000
        // events, 0.6 ms now). The actor joins laterally too, so that the plan walks its
        // index whatever share of the events one actor has: as a constant, an actor with a
        // third of them got a backward scan of the whole store instead (135 ms).
        "SELECT {COLUMNS} FROM ( \
           SELECT e.* FROM UNNEST($1::text[]) AS s(id) CROSS JOIN LATERAL ( \
             SELECT {COLUMNS} FROM events WHERE stream_id = s.id AND position < $3 \
             ORDER BY position DESC LIMIT $4) e \
           UNION \
           SELECT e.* FROM UNNEST(ARRAY[$2::text]) AS a(id) CROSS JOIN LATERAL ( \
             SELECT {COLUMNS} FROM events WHERE metadata->>'actor' = a.id AND position < $3 \
             ORDER BY position DESC LIMIT $4) e \
         ) e ORDER BY position DESC LIMIT $4"
    ))
    .bind(&streams)
    .bind(user.0.to_string())
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&st.pool)
    .await?;
    Ok(crate::routes::with_consistency(page(rows, limit), reached))
}

/// A contract's stream and its disputes' events, in order (parties, arbiters, admins).
#[utoipa::path(get, path = "/api/v1/contracts/{id}/history", tag = "audit", security(("bearer" = [])),
    params(("id" = String, Path, description = "Contract id"),
        ("minPosition" = Option<i64>, Query, description = "Accepted for symmetry with the other reads: the audit is read from the event store, always fresh")),
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
    let created: Option<(Value,)> =
        sqlx::query_as("SELECT data FROM events WHERE stream_id = $1 AND version = 1 AND event_type = 'ContractCreated'")
            .bind(format!("contract-{id}"))
            .fetch_optional(&st.pool)
            .await?;
    let party = |k: &str, d: &Value| {
        d.get(k).and_then(Value::as_str) == Some(caller.id.0.to_string().as_str())
    };
    match &created {
        Some((d,))
            if caller.role.sees_everything() || party("buyerId", d) || party("sellerId", d) => {}
        _ => {
            return Err(ApiError::not_found(
                "CONTRACT_NOT_FOUND",
                "contract not found",
            ))
        }
    }
    let rows: Vec<Row> = sqlx::query_as(&format!(
        // The contract's stream, read once by its index, and the disputes its own events
        // name (`ContractDisputed` is written with each `DisputeRaised`). `stream_id = $1
        // OR stream_id IN (every DisputeRaised naming this contract)` could use no index:
        // it walked the whole store, 304 ms at 600,000 events (0.08 ms now).
        "WITH c AS MATERIALIZED (SELECT {COLUMNS} FROM events WHERE stream_id = $1) \
         SELECT {COLUMNS} FROM c \
         UNION ALL \
         SELECT {COLUMNS} FROM events WHERE stream_id IN ( \
           SELECT 'dispute-' || (data->>'disputeId') FROM c WHERE event_type = 'ContractDisputed') \
         ORDER BY position"
    ))
    .bind(format!("contract-{id}"))
    .fetch_all(&st.pool)
    .await?;
    let items = rows.into_iter().map(Row::entry).collect();
    let res = Json(AuditPage {
        items,
        next_cursor: None,
    })
    .into_response();
    Ok(crate::routes::with_consistency(res, fresh))
}

/// The whole audit log, newest first, with filters (admins only).
#[utoipa::path(get, path = "/api/v1/audit/logs", tag = "audit", security(("bearer" = [])),
    params(("type" = Option<String>, Query, description = "Event type, such as FundsDeposited"),
        ("stream" = Option<String>, Query, description = "Stream id, such as wallet-<uuid>"),
        ("actor" = Option<String>, Query, description = "A user id, system or operator"),
        ("from" = Option<String>, Query, description = "Recorded at or after (RFC 3339)"),
        ("to" = Option<String>, Query, description = "Recorded before (RFC 3339)"),
        ("limit" = Option<i64>, Query, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
        ("minPosition" = Option<i64>, Query, description = "Accepted for symmetry with the other reads: the audit is read from the event store, always fresh")),
    responses((status = 200, body = AuditPage),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
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
        let exists: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM events WHERE stream_id = $1 AND version = 1")
                .bind(s)
                .fetch_optional(&st.pool)
                .await?;
        if exists.is_none() {
            return Err(ApiError::not_found("STREAM_NOT_FOUND", "no such stream"));
        }
    }
    // Only the filters given, as plain conditions: each can then be served by its index
    // (type, stream, actor) in every plan. With `($n IS NULL OR column = $n)` for all of
    // them, the plan a connection settles on after a few runs could use none, and a
    // search for a rare type or stream walked the whole store.
    let mut sql =
        sqlx::QueryBuilder::new(format!("SELECT {COLUMNS} FROM events WHERE position < "));
    sql.push_bind(before);
    if let Some(k) = kind {
        sql.push(" AND event_type = ").push_bind(k);
    }
    if let Some(s) = stream {
        sql.push(" AND stream_id = ").push_bind(s);
    }
    if let Some(a) = actor {
        sql.push(" AND metadata->>'actor' = ").push_bind(a);
    }
    if let Some(t) = from {
        sql.push(" AND recorded_at >= ").push_bind(t);
    }
    if let Some(t) = to {
        sql.push(" AND recorded_at < ").push_bind(t);
    }
    sql.push(" ORDER BY position DESC LIMIT ")
        .push_bind(limit + 1);
    let rows: Vec<Row> = sql.build_query_as().fetch_all(&st.pool).await?;
    Ok(crate::routes::with_consistency(page(rows, limit), fresh))
}
