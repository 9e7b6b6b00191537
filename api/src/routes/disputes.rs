//! Disputes: raised by a party of an active contract, resolved by an arbiter or admin.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use command_handlers::{Command, DisputeChange, Outcome};
use domain::contract::ResolveDispute;
use domain::{
    ContractId, Currency, DisputeId, DisputeOutcome, DisputeStatus, StreamId, TransactionId,
};
use projections::read::DisputeRow;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::clock::to_utc;
use crate::error::{ApiError, Result};
use crate::extract::{
    parse_body_id, parse_id, parse_optional_decimal, IdempotencyKey, JsonBody, PathParam, QueryMap,
    RequestMeta,
};
use crate::routes::Reads;
use crate::routes::{
    await_position, page_params, read_or_wait, render, unexpected, user_context, with_consistency,
};
use crate::state::AppState;

/// Most disputes per page.
const PAGE_ITEMS_MAX: i64 = 100;

/// A dispute.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisputeView {
    /// Dispute id.
    pub id: String,
    /// The contract in dispute.
    pub contract_id: String,
    /// The party that raised it.
    pub raised_by: String,
    /// What is wrong.
    pub description: String,
    /// `OPEN` or `RESOLVED`.
    pub status: String,
    /// `RELEASE`, `REFUND` or `SPLIT` once resolved.
    pub outcome: Option<String>,
    /// Paid to the seller by the resolution.
    pub seller_amount: Option<String>,
    /// Returned to the buyer by the resolution.
    pub buyer_amount: Option<String>,
    /// The arbiter's reasoning.
    pub resolution: Option<String>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// When (RFC 3339).
    pub resolved_at: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
    /// Global position reached (command responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
}

fn view_of(d: &DisputeChange, position: i64) -> DisputeView {
    let x = &d.dispute;
    let currency = d.contract.currency.unwrap_or(Currency::USD);
    let resolved = x.status == DisputeStatus::Resolved;
    DisputeView {
        id: x.id.map(|i| i.to_string()).unwrap_or_default(),
        contract_id: x.contract_id.map(|i| i.to_string()).unwrap_or_default(),
        raised_by: x.raised_by.map(|i| i.to_string()).unwrap_or_default(),
        description: x.description.clone(),
        status: if resolved { "RESOLVED" } else { "OPEN" }.into(),
        outcome: x.outcome.map(|o| o.as_str().into()),
        seller_amount: resolved.then(|| currency.format(x.seller_amount)),
        buyer_amount: resolved.then(|| currency.format(x.buyer_amount)),
        resolution: x.resolution.clone(),
        resolved_by: x.resolved_by.map(|i| i.to_string()),
        resolved_at: x.resolved_at.map(|t| crate::rfc3339(to_utc(t))),
        created_at: x
            .raised_at
            .map(|t| crate::rfc3339(to_utc(t)))
            .unwrap_or_default(),
        updated_at: crate::rfc3339(d.recorded_at),
        position: Some(position),
    }
}

/// A dispute as its parties and the arbiters see it.
fn dispute_view(r: &DisputeRow) -> DisputeView {
    let c = Currency::parse(&r.currency).unwrap_or(Currency::USD);
    DisputeView {
        id: r.id.to_string(),
        contract_id: r.contract_id.to_string(),
        raised_by: r.raised_by.to_string(),
        description: r.description.clone(),
        status: r.status.clone(),
        outcome: r.outcome.clone(),
        seller_amount: r.seller_amount.map(|a| c.format(a)),
        buyer_amount: r.buyer_amount.map(|a| c.format(a)),
        resolution: r.resolution.clone(),
        resolved_by: r.resolved_by.map(|u| u.to_string()),
        resolved_at: r.resolved_at.map(crate::rfc3339),
        created_at: crate::rfc3339(r.created_at),
        updated_at: crate::rfc3339(r.updated_at),
        position: None,
    }
}

fn dispute_visible_to(r: &DisputeRow, u: &AuthUser) -> bool {
    u.role.sees_everything() || r.buyer_id == u.id.0 || r.seller_id == u.id.0
}

/// A page of disputes, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisputePage {
    /// The disputes.
    pub items: Vec<DisputeView>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// Body of `POST /disputes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RaiseDisputeRequest {
    /// The contract (must be `ACTIVE`; the caller a party).
    #[schema(format = Uuid)]
    pub contract_id: String,
    /// What is wrong (1 to 2000 characters).
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub description: String,
}

/// Body of `PUT /disputes/{id}/resolve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResolveDisputeRequest {
    /// The reasoning (1 to 2000 characters).
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub resolution: String,
    /// `RELEASE`, `REFUND` or `SPLIT`.
    #[schema(value_type = String, example = "SPLIT", pattern = "^(RELEASE|REFUND|SPLIT)$")]
    pub outcome: String,
    /// For `SPLIT`: paid to the seller; a plain decimal (JSON number or string, no
    /// exponent).
    #[schema(schema_with = crate::openapi::split_schema)]
    pub seller_amount: Option<Value>,
    /// For `SPLIT`: returned to the buyer; a plain decimal.
    #[schema(schema_with = crate::openapi::split_schema)]
    pub buyer_amount: Option<Value>,
}

fn respond(outcome: &Outcome, position: i64, status: u16) -> (u16, Value) {
    match outcome {
        Outcome::Dispute(d) => (status, json!(view_of(d, position))),
        other => unexpected(other),
    }
}

fn respond_raised(outcome: &Outcome, position: i64) -> (u16, Value) {
    respond(outcome, position, 201)
}

fn respond_resolved(outcome: &Outcome, position: i64) -> (u16, Value) {
    respond(outcome, position, 200)
}

/// Raise a dispute on an active contract (a party); freezes release, refund and auto-release.
#[utoipa::path(post, path = "/api/v1/disputes", tag = "disputes", security(("bearer" = [])), request_body = RaiseDisputeRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 201, body = DisputeView, links(("GetDispute" = (operation_ref = "#/paths/~1api~1v1~1disputes~1{id}/get", parameters(("id" = "$response.body#/id")))), ("ResolveDispute" = (operation_ref = "#/paths/~1api~1v1~1disputes~1{id}~1resolve/put", parameters(("id" = "$response.body#/id")))))),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "DISPUTE_ALREADY_OPEN, CONTRACT_NOT_ACTIVE", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn raise(
    State(st): State<AppState>,
    caller: AuthUser,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    let req: RaiseDisputeRequest = body.parse()?;
    let contract_id = ContractId(parse_body_id(&req.contract_id, "contractId")?);
    let ctx = user_context(&caller, "POST /disputes", &meta, key, &body);
    let cmd = Command::RaiseDispute {
        dispute_id: DisputeId::new_v7(),
        contract_id,
        actor: caller.id,
        description: req.description,
        now: st.clock.timestamp(),
    };
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(&st, executed, &respond_raised))
}

/// Resolve a dispute (arbiter or admin, never a party): the held money moves in the same transaction.
#[utoipa::path(put, path = "/api/v1/disputes/{id}/resolve", tag = "disputes", security(("bearer" = [])), request_body = ResolveDisputeRequest,
    params(("id" = String, Path, format = Uuid, description = "Dispute id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 200, body = DisputeView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "DISPUTE_ALREADY_RESOLVED", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "SPLIT_MISMATCH and validation errors", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn resolve(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    let dispute_id = DisputeId(parse_id(&id, "dispute id")?);
    let req: ResolveDisputeRequest = body.parse()?;
    let outcome = match req.outcome.as_str() {
        "RELEASE" => DisputeOutcome::Release,
        "REFUND" => DisputeOutcome::Refund,
        "SPLIT" => DisputeOutcome::Split,
        _ => {
            return Err(ApiError::unprocessable(
                "INVALID_OUTCOME",
                "outcome must be RELEASE, REFUND or SPLIT",
            ))
        }
    };
    let seller_amount = parse_optional_decimal(req.seller_amount.as_ref(), "sellerAmount")?;
    let buyer_amount = parse_optional_decimal(req.buyer_amount.as_ref(), "buyerAmount")?;
    if outcome == DisputeOutcome::Split && (seller_amount.is_none() || buyer_amount.is_none()) {
        return Err(ApiError::unprocessable(
            "SPLIT_MISMATCH",
            "a SPLIT needs sellerAmount and buyerAmount",
        ));
    }
    if outcome != DisputeOutcome::Split && (seller_amount.is_some() || buyer_amount.is_some()) {
        return Err(ApiError::unprocessable(
            "INVALID_BODY",
            "sellerAmount and buyerAmount go only with a SPLIT",
        ));
    }
    let ctx = user_context(
        &caller,
        &format!("PUT /disputes/{dispute_id}/resolve"),
        &meta,
        key,
        &body,
    );
    let cmd = Command::ResolveDispute {
        dispute_id,
        actor: domain::Actor::User {
            id: caller.id,
            role: caller.role,
        },
        decision: ResolveDispute {
            outcome,
            seller_amount,
            buyer_amount,
            resolution: req.resolution,
            seller_transaction_id: TransactionId::new_v7(),
            buyer_transaction_id: TransactionId::new_v7(),
            now: st.clock.timestamp(),
        },
    };
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(&st, executed, &respond_resolved))
}

/// A dispute (parties, arbiters, admins; 404 for anyone else).
#[utoipa::path(get, path = "/api/v1/disputes/{id}", operation_id = "get_dispute", tag = "disputes", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Dispute id"), ("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = DisputeView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "READ_MODEL_BEHIND: it exists, but the read models have not caught up within the wait; retry", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    q: QueryMap,
) -> Result<Response> {
    let id = parse_id(&id, "dispute id")?;
    q.only(&["minPosition"])?;
    let reached = await_position(
        &st,
        &caller,
        q.min_position()?,
        Reads::Stream(StreamId::dispute(DisputeId(id))),
    )
    .await?;
    let row = read_or_wait(&st, &StreamId::dispute(DisputeId(id)), || {
        projections::read::dispute(&st.pool, id)
    })
    .await?;
    match row {
        Some(r) if dispute_visible_to(&r, &caller) => Ok(with_consistency(
            Json(dispute_view(&r)).into_response(),
            reached,
        )),
        _ => Err(ApiError::not_found(
            "DISPUTE_NOT_FOUND",
            "dispute not found",
        )),
    }
}

/// Disputes, newest first: every dispute for arbiters and admins (the queue), a party's own otherwise.
#[utoipa::path(get, path = "/api/v1/disputes", tag = "disputes", security(("bearer" = [])),
    params(("status" = Option<String>, Query, pattern = "^(OPEN|RESOLVED)$", description = "OPEN or RESOLVED"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, pattern = "^[1-9][0-9]{0,17}$", description = "nextCursor of the previous page"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = DisputePage),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn list(State(st): State<AppState>, caller: AuthUser, q: QueryMap) -> Result<Response> {
    q.only(&["status", "limit", "cursor", "minPosition"])?;
    let (limit, before) = page_params(&q, PAGE_ITEMS_MAX)?;
    let status = match q.0.get("status").map(String::as_str) {
        None => None,
        Some(s @ ("OPEN" | "RESOLVED")) => Some(s.to_owned()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "INVALID_QUERY_PARAMETER",
                "status must be OPEN or RESOLVED",
            ))
        }
    };
    let reads = if caller.role.sees_everything() {
        Reads::Everything
    } else {
        Reads::Own
    };
    let reached = await_position(&st, &caller, q.min_position()?, reads).await?;
    let only_user: Option<Uuid> = (!caller.role.sees_everything()).then_some(caller.id.0);
    let rows =
        projections::read::disputes(&st.pool, only_user, status.as_deref(), before, limit + 1)
            .await?;
    let next_cursor =
        (rows.len() as i64 > limit).then(|| rows[limit as usize - 1].position.to_string());
    let items = rows.iter().take(limit as usize).map(dispute_view).collect();
    Ok(with_consistency(
        Json(DisputePage { items, next_cursor }).into_response(),
        reached,
    ))
}
