//! Payouts: a wallet's owner asks to pay money out (it leaves the available balance at
//! once, into the wallet's pending payouts); the marketplace's service (or an admin)
//! records the provider's answer: completed (the money leaves the ledger) or failed (it
//! returns). The rules are the domain's (`domain::payout`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use command_handlers::{Command, Outcome};
use domain::payout::RequestPayout;
use domain::{Actor, Currency, Payout, PayoutId, PayoutStatus, Role, StreamId, TransactionId};
use projections::read::PayoutRow;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::clock::to_utc;
use crate::error::{ApiError, Result};
use crate::extract::{
    parse_amount, parse_currency, parse_description, parse_id, IdempotencyKey, JsonBody, PathParam,
    QueryMap, RequestMeta,
};
use crate::routes::{
    await_position, page_params, provider_list_scope, read_or_wait, render, unexpected,
    user_context, with_consistency, Reads,
};
use crate::state::AppState;

/// Most payouts per page.
const PAGE_ITEMS_MAX: i64 = 100;

/// A payout.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayoutView {
    /// Payout id.
    pub id: String,
    /// The owner.
    pub user_id: String,
    /// The wallet it leaves.
    pub wallet_id: String,
    /// How much, decimal string.
    #[schema(example = "100.00")]
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Where it goes, as the owner wrote it.
    pub destination: String,
    /// Statement text.
    pub description: Option<String>,
    /// `PENDING`, `COMPLETED` or `FAILED`.
    pub status: String,
    /// The wallet's movement (a `PAYOUT` in its history).
    pub transaction_id: String,
    /// The provider's reference, once completed.
    pub provider_reference: Option<String>,
    /// Why it failed.
    pub reason: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
    /// Global position reached (command responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
}

fn view_of(p: &Payout, updated_at: chrono::DateTime<chrono::Utc>, position: i64) -> PayoutView {
    let currency = p.currency.unwrap_or(Currency::USD);
    PayoutView {
        id: p.id.map(|i| i.to_string()).unwrap_or_default(),
        user_id: p.user_id.map(|u| u.to_string()).unwrap_or_default(),
        wallet_id: p.wallet_id.map(|w| w.to_string()).unwrap_or_default(),
        amount: currency.format(p.amount),
        currency: currency.code().into(),
        destination: p.destination.clone(),
        description: p.description.as_ref().map(|d| d.as_str().to_owned()),
        status: p.status.as_str().into(),
        transaction_id: p.transaction_id.map(|t| t.to_string()).unwrap_or_default(),
        provider_reference: p.provider_reference.clone(),
        reason: p.reason.clone(),
        created_at: p
            .requested_at
            .map(|t| crate::rfc3339(to_utc(t)))
            .unwrap_or_default(),
        updated_at: crate::rfc3339(updated_at),
        position: Some(position),
    }
}

fn row_view(r: &PayoutRow) -> PayoutView {
    let currency = Currency::parse(&r.currency).unwrap_or(Currency::USD);
    PayoutView {
        id: r.id.to_string(),
        user_id: r.user_id.to_string(),
        wallet_id: r.wallet_id.to_string(),
        amount: currency.format(r.amount),
        currency: currency.code().into(),
        destination: r.destination.clone(),
        description: r.description.clone(),
        status: r.status.clone(),
        transaction_id: r.transaction_id.to_string(),
        provider_reference: r.provider_reference.clone(),
        reason: r.reason.clone(),
        created_at: crate::rfc3339(r.created_at),
        updated_at: crate::rfc3339(r.updated_at),
        position: None,
    }
}

/// A page of payouts, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayoutPage {
    /// The payouts.
    pub items: Vec<PayoutView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Body of `POST /payouts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PayoutCreateRequest {
    /// A plain decimal as a JSON number or string (`100`, `"100.00"`), no exponent; > 0,
    /// at most the available balance.
    #[schema(schema_with = crate::openapi::amount_schema)]
    pub amount: Value,
    /// ISO 4217 code; USD when absent.
    #[schema(
        pattern = "^([Uu][Ss][Dd]|[Ee][Uu][Rr]|[Gg][Bb][Pp]|[Cc][Hh][Ff]|[Cc][Aa][Dd]|[Aa][Uu][Dd]|[Nn][Zz][Dd]|[Ss][Ee][Kk]|[Nn][Oo][Kk]|[Dd][Kk][Kk]|[Pp][Ll][Nn]|[Jj][Pp][Yy])$"
    )]
    pub currency: Option<String>,
    /// Where the money goes (a bank account, a card; 1 to 200 characters), passed on to
    /// the marketplace's service as written.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub destination: String,
    /// Statement text, at most 500 characters.
    #[schema(
        max_length = 500,
        pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub description: Option<String>,
}

/// Body of `POST /payouts/{id}/complete`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PayoutCompleteRequest {
    /// The payment provider's reference for the payment (1 to 100 characters).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub provider_reference: String,
}

/// Body of `POST /payouts/{id}/fail`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutFailRequest {
    /// Why (1 to 500 characters).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub reason: String,
}

fn actor(caller: &AuthUser) -> Actor {
    Actor::User {
        id: caller.id,
        role: caller.role,
    }
}

fn respond(status: u16) -> impl Fn(&Outcome, i64) -> (u16, Value) {
    move |outcome, position| match outcome {
        Outcome::Payout(p) => (status, json!(view_of(&p.payout, p.recorded_at, position))),
        other => unexpected(other),
    }
}

/// Ask for a payout from one's own wallet: `PENDING`, the amount leaves the available
/// balance at once (into the wallet's `pendingPayouts`).
#[utoipa::path(post, path = "/api/v1/payouts", operation_id = "request_payout", tag = "payouts", security(("bearer" = [])), request_body = PayoutCreateRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 201, body = PayoutView, links(("GetPayout" = (operation_ref = "#/paths/~1api~1v1~1payouts~1{id}/get", parameters(("id" = "$response.body#/id")))), ("CompletePayout" = (operation_ref = "#/paths/~1api~1v1~1payouts~1{id}~1complete/post", parameters(("id" = "$response.body#/id")))), ("FailPayout" = (operation_ref = "#/paths/~1api~1v1~1payouts~1{id}~1fail/post", parameters(("id" = "$response.body#/id")))))),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "WALLET_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "INSUFFICIENT_FUNDS, WALLET_FROZEN", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(st): State<AppState>,
    caller: AuthUser,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    let req: PayoutCreateRequest = body.parse()?;
    let currency = parse_currency(req.currency.as_deref())?;
    let amount = parse_amount(&req.amount, currency)?;
    let description = parse_description(req.description.as_deref())?;
    let cmd = Command::RequestPayout(RequestPayout {
        actor: actor(&caller),
        payout_id: PayoutId::new_v7(),
        transaction_id: TransactionId::new_v7(),
        currency,
        amount,
        destination: req.destination,
        description,
        now: st.clock.timestamp(),
    });
    let ctx = user_context(&caller, "POST /payouts", &meta, key, &body);
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(&st, executed, &respond(201)))
}

/// Complete a payout (service role or admin): the provider paid it, the money leaves the
/// ledger. Once, however often it is asked.
#[utoipa::path(post, path = "/api/v1/payouts/{id}/complete", operation_id = "complete_payout", tag = "payouts", security(("bearer" = [])), request_body = PayoutCompleteRequest,
    params(("id" = String, Path, format = Uuid, description = "Payout id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 200, body = PayoutView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "PAYOUT_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "PAYOUT_NOT_PENDING", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn complete(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    let id = PayoutId(parse_id(&id, "payout id")?);
    let req: PayoutCompleteRequest = body.parse()?;
    let cmd = Command::CompletePayout {
        payout_id: id,
        actor: actor(&caller),
        provider_reference: req.provider_reference,
        now: st.clock.timestamp(),
    };
    let endpoint = format!("POST /payouts/{id}/complete");
    let ctx = user_context(&caller, &endpoint, &meta, key, &body);
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(&st, executed, &respond(200)))
}

/// Fail a payout (service role or admin): the provider did not pay it; the amount
/// returns to the wallet's available balance (a `PAYOUT_RETURN`).
#[utoipa::path(post, path = "/api/v1/payouts/{id}/fail", operation_id = "fail_payout", tag = "payouts", security(("bearer" = [])), request_body = PayoutFailRequest,
    params(("id" = String, Path, format = Uuid, description = "Payout id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 200, body = PayoutView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "PAYOUT_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "PAYOUT_NOT_PENDING, WALLET_BALANCE_LIMIT", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn fail(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    let id = PayoutId(parse_id(&id, "payout id")?);
    let req: PayoutFailRequest = body.parse()?;
    let cmd = Command::FailPayout {
        payout_id: id,
        actor: actor(&caller),
        reason: req.reason,
        transaction_id: TransactionId::new_v7(),
        now: st.clock.timestamp(),
    };
    let endpoint = format!("POST /payouts/{id}/fail");
    let ctx = user_context(&caller, &endpoint, &meta, key, &body);
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(&st, executed, &respond(200)))
}

/// Who may see payouts beyond their own: the service role and admins.
fn sees_payouts(caller: &AuthUser) -> bool {
    matches!(caller.role, Role::Service | Role::Admin)
}

/// A payout (the service role and admins; its owner; 404 for anyone else).
#[utoipa::path(get, path = "/api/v1/payouts/{id}", operation_id = "get_payout", tag = "payouts", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Payout id"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = PayoutView),
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
    let id = parse_id(&id, "payout id")?;
    q.only(&["minPosition"])?;
    let stream = StreamId::payout(PayoutId(id));
    let reads = Reads::Stream(stream.clone());
    let reached = await_position(&st, &caller, q.min_position()?, reads).await?;
    let row = read_or_wait(&st, &stream, || projections::read::payout(&st.pool, id)).await?;
    match row {
        Some(r) if sees_payouts(&caller) || r.user_id == caller.id.0 => Ok(with_consistency(
            Json(row_view(&r)).into_response(),
            reached,
        )),
        _ => Err(ApiError::not_found("PAYOUT_NOT_FOUND", "payout not found")),
    }
}

/// Payouts, newest first: every one (or one user's) for the service role and admins, a
/// user's own for that user.
#[utoipa::path(get, path = "/api/v1/payouts", operation_id = "list_payouts", tag = "payouts", security(("bearer" = [])),
    params(("userId" = Option<String>, Query, format = Uuid, description = "Only this user's (a user may only name itself)"),
        ("status" = Option<String>, Query, pattern = "^(PENDING|COMPLETED|FAILED)$", description = "Only this status"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, pattern = "^[1-9][0-9]{0,17}$", description = "nextCursor of the previous page"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = PayoutPage),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn list(State(st): State<AppState>, caller: AuthUser, q: QueryMap) -> Result<Response> {
    q.only(&["userId", "status", "limit", "cursor", "minPosition"])?;
    let (limit, before) = page_params(&q, PAGE_ITEMS_MAX)?;
    let status = match q.0.get("status") {
        None => None,
        Some(s) => Some(PayoutStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "INVALID_QUERY_PARAMETER",
                "status must be PENDING, COMPLETED or FAILED",
            )
        })?),
    };
    let (user, reads) = provider_list_scope(&caller, &q, "payouts")?;
    let reached = await_position(&st, &caller, q.min_position()?, reads).await?;
    let rows = projections::read::payouts(
        &st.pool,
        user,
        status.map(|s| s.as_str()),
        before,
        limit + 1,
    )
    .await?;
    let next_cursor =
        (rows.len() as i64 > limit).then(|| rows[limit as usize - 1].position.to_string());
    let items = rows.iter().take(limit as usize).map(row_view).collect();
    Ok(with_consistency(
        Json(PayoutPage { items, next_cursor }).into_response(),
        reached,
    ))
}
