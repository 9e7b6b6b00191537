//! Pay-ins: the marketplace's service (or an admin) announces money on its way in for a
//! user, then confirms it (the wallet is credited) or fails it. The rules are the
//! domain's (`domain::payin`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use command_handlers::{Command, Outcome};
use domain::payin::CreatePayin;
use domain::{Actor, Currency, Payin, PayinId, PayinStatus, Role, StreamId, TransactionId, UserId};
use projections::read::PayinRow;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::clock::to_utc;
use crate::error::{ApiError, Result};
use crate::extract::{
    parse_amount, parse_body_id, parse_currency, parse_description, parse_id, IdempotencyKey,
    JsonBody, PathParam, QueryMap, RequestMeta,
};
use crate::routes::contracts::EmptyRequest;
use crate::routes::{
    await_position, page_params, provider_list_scope, read_or_wait, render, unexpected,
    user_context, with_consistency, Reads,
};
use crate::state::AppState;

/// Most pay-ins per page.
const PAGE_ITEMS_MAX: i64 = 100;

/// A pay-in.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayinView {
    /// Pay-in id (derived from its creator and reference).
    pub id: String,
    /// Whose wallet it is for.
    pub user_id: String,
    /// How much, decimal string.
    #[schema(example = "250.00")]
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The payment provider's reference.
    pub reference: String,
    /// Statement text.
    pub description: Option<String>,
    /// `PENDING`, `CONFIRMED` or `FAILED`.
    pub status: String,
    /// The service or admin that announced it.
    pub created_by: String,
    /// Why it failed.
    pub reason: Option<String>,
    /// The deposit, once confirmed.
    pub transaction_id: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
    /// Global position reached (command responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
}

fn view_of(p: &Payin, updated_at: chrono::DateTime<chrono::Utc>, position: i64) -> PayinView {
    let currency = p.currency.unwrap_or(Currency::USD);
    PayinView {
        id: p.id.map(|i| i.to_string()).unwrap_or_default(),
        user_id: p.user_id.map(|u| u.to_string()).unwrap_or_default(),
        amount: currency.format(p.amount),
        currency: currency.code().into(),
        reference: p.reference.clone(),
        description: p.description.as_ref().map(|d| d.as_str().to_owned()),
        status: p.status.as_str().into(),
        created_by: p.created_by.map(|u| u.to_string()).unwrap_or_default(),
        reason: p.reason.clone(),
        transaction_id: p.transaction_id.map(|t| t.to_string()),
        created_at: p
            .created_at
            .map(|t| crate::rfc3339(to_utc(t)))
            .unwrap_or_default(),
        updated_at: crate::rfc3339(updated_at),
        position: Some(position),
    }
}

fn row_view(r: &PayinRow) -> PayinView {
    let currency = Currency::parse(&r.currency).unwrap_or(Currency::USD);
    PayinView {
        id: r.id.to_string(),
        user_id: r.user_id.to_string(),
        amount: currency.format(r.amount),
        currency: currency.code().into(),
        reference: r.reference.clone(),
        description: r.description.clone(),
        status: r.status.clone(),
        created_by: r.created_by.to_string(),
        reason: r.reason.clone(),
        transaction_id: r.transaction_id.map(|t| t.to_string()),
        created_at: crate::rfc3339(r.created_at),
        updated_at: crate::rfc3339(r.updated_at),
        position: None,
    }
}

/// A page of pay-ins, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayinPage {
    /// The pay-ins.
    pub items: Vec<PayinView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Body of `POST /payins`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PayinRequest {
    /// Whose wallet the money is for.
    #[schema(format = Uuid)]
    pub user_id: String,
    /// A plain decimal as a JSON number or string (`250`, `"250.00"`), no exponent.
    #[schema(schema_with = crate::openapi::amount_schema)]
    pub amount: Value,
    /// ISO 4217 code; USD when absent.
    #[schema(
        pattern = "^([Uu][Ss][Dd]|[Ee][Uu][Rr]|[Gg][Bb][Pp]|[Cc][Hh][Ff]|[Cc][Aa][Dd]|[Aa][Uu][Dd]|[Nn][Zz][Dd]|[Ss][Ee][Kk]|[Nn][Oo][Kk]|[Dd][Kk][Kk]|[Pp][Ll][Nn]|[Jj][Pp][Yy])$"
    )]
    pub currency: Option<String>,
    /// The payment provider's reference (1 to 100 characters): one pay-in per reference
    /// and creator.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub reference: String,
    /// Statement text, at most 500 characters.
    #[schema(
        max_length = 500,
        pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub description: Option<String>,
}

/// Body of `POST /payins/{id}/fail`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayinFailRequest {
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
        Outcome::Payin(p) => (status, json!(view_of(&p.payin, p.recorded_at, position))),
        other => unexpected(other),
    }
}

/// Announce a pay-in (service role or admin): `PENDING`, nothing credited yet.
#[utoipa::path(post, path = "/api/v1/payins", operation_id = "create_payin", tag = "payins", security(("bearer" = [])), request_body = PayinRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 201, body = PayinView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "USER_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "PAYIN_EXISTS: the creator used this reference already (the detail names that pay-in)", body = crate::error::Problem, content_type = "application/problem+json"),
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
    let req: PayinRequest = body.parse()?;
    let user = UserId(parse_body_id(&req.user_id, "userId")?);
    let currency = parse_currency(req.currency.as_deref())?;
    let amount = parse_amount(&req.amount, currency)?;
    let description = parse_description(req.description.as_deref())?;
    let cmd = Command::CreatePayin(CreatePayin {
        actor: actor(&caller),
        user_id: user,
        amount,
        currency,
        reference: req.reference,
        description,
        now: st.clock.timestamp(),
    });
    let ctx = user_context(&caller, "POST /payins", &meta, key, &body);
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(&st, executed, &respond(201)))
}

/// Confirm a pay-in (service role or admin): the money arrived, the user's wallet is
/// credited (a `DEPOSIT`), once however often it is asked.
#[utoipa::path(post, path = "/api/v1/payins/{id}/confirm", operation_id = "confirm_payin", tag = "payins", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Pay-in id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 200, body = PayinView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "PAYIN_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "PAYIN_NOT_PENDING, WALLET_BALANCE_LIMIT", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn confirm(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    let id = PayinId(parse_id(&id, "pay-in id")?);
    let _: EmptyRequest = body.parse()?;
    let transaction_id = TransactionId::new_v7();
    payin_command(
        &st,
        caller,
        id,
        "confirm",
        meta,
        key,
        &body,
        |payin_id, actor, now| Command::ConfirmPayin {
            payin_id,
            actor,
            transaction_id,
            now,
        },
    )
    .await
}

/// Fail a pay-in (service role or admin): the money will not arrive; nothing is credited.
#[utoipa::path(post, path = "/api/v1/payins/{id}/fail", operation_id = "fail_payin", tag = "payins", security(("bearer" = [])), request_body = PayinFailRequest,
    params(("id" = String, Path, format = Uuid, description = "Pay-in id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 200, body = PayinView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "PAYIN_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "PAYIN_NOT_PENDING", body = crate::error::Problem, content_type = "application/problem+json"),
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
    let id = PayinId(parse_id(&id, "pay-in id")?);
    let req: PayinFailRequest = body.parse()?;
    payin_command(
        &st,
        caller,
        id,
        "fail",
        meta,
        key,
        &body,
        |payin_id, actor, now| Command::FailPayin {
            payin_id,
            actor,
            reason: req.reason,
            now,
        },
    )
    .await
}

/// Runs the command `make` builds on the pay-in `id`, as `verb`.
#[allow(clippy::too_many_arguments)] // an axum handler's extractors, passed on as they came
async fn payin_command(
    st: &AppState,
    caller: AuthUser,
    id: PayinId,
    verb: &str,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: &JsonBody,
    make: impl FnOnce(PayinId, Actor, domain::Timestamp) -> Command,
) -> Result<Response> {
    let cmd = make(id, actor(&caller), st.clock.timestamp());
    let endpoint = format!("POST /payins/{id}/{verb}");
    let ctx = user_context(&caller, &endpoint, &meta, key, body);
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(st, executed, &respond(200)))
}

/// Who may see pay-ins beyond their own: the service role and admins.
fn sees_payins(caller: &AuthUser) -> bool {
    matches!(caller.role, Role::Service | Role::Admin)
}

/// A pay-in (the service role and admins; the user it is for; 404 for anyone else).
#[utoipa::path(get, path = "/api/v1/payins/{id}", operation_id = "get_payin", tag = "payins", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Pay-in id"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = PayinView),
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
    let id = parse_id(&id, "pay-in id")?;
    q.only(&["minPosition"])?;
    let stream = StreamId::payin(PayinId(id));
    let reached = await_position(
        &st,
        &caller,
        q.min_position()?,
        Reads::Stream(stream.clone()),
    )
    .await?;
    let row = read_or_wait(&st, &stream, || projections::read::payin(&st.pool, id)).await?;
    match row {
        Some(r) if sees_payins(&caller) || r.user_id == caller.id.0 => Ok(with_consistency(
            Json(row_view(&r)).into_response(),
            reached,
        )),
        _ => Err(ApiError::not_found("PAYIN_NOT_FOUND", "pay-in not found")),
    }
}

/// Pay-ins, newest first: every one (or one user's) for the service role and admins, a
/// user's own for that user.
#[utoipa::path(get, path = "/api/v1/payins", operation_id = "list_payins", tag = "payins", security(("bearer" = [])),
    params(("userId" = Option<String>, Query, format = Uuid, description = "Only this user's (a user may only name itself)"),
        ("status" = Option<String>, Query, pattern = "^(PENDING|CONFIRMED|FAILED)$", description = "Only this status"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, pattern = "^[1-9][0-9]{0,17}$", description = "nextCursor of the previous page"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = PayinPage),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn list(State(st): State<AppState>, caller: AuthUser, q: QueryMap) -> Result<Response> {
    q.only(&["userId", "status", "limit", "cursor", "minPosition"])?;
    let (limit, before) = page_params(&q, PAGE_ITEMS_MAX)?;
    let status = match q.0.get("status") {
        None => None,
        Some(s) => Some(PayinStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "INVALID_QUERY_PARAMETER",
                "status must be PENDING, CONFIRMED or FAILED",
            )
        })?),
    };
    let (user, reads) = provider_list_scope(&caller, &q, "pay-ins")?;
    let reached = await_position(&st, &caller, q.min_position()?, reads).await?;
    let rows = projections::read::payins(
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
        Json(PayinPage { items, next_cursor }).into_response(),
        reached,
    ))
}
