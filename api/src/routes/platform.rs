//! The platform's own money: fee schedules per currency and the revenue account fees go
//! into (admins only).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use command_handlers::{Command, Outcome};
use domain::{Amount, Currency, FeePayer, FeeTerms, Role, TransactionId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::{ApiError, Result};
use crate::extract::{
    parse_amount, parse_currency, IdempotencyKey, JsonBody, QueryMap, RequestMeta,
};
use crate::routes::Reads;
use crate::routes::{await_position, render, unexpected, user_context, with_consistency};
use crate::state::AppState;

/// Most revenue movements returned per page.
const PAGE_ITEMS_MAX: i64 = 100;

/// A currency's fee schedule.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeeScheduleView {
    /// ISO 4217 code.
    pub currency: String,
    /// Basis points of each payment (250 = 2.5 %).
    pub percent_bps: u16,
    /// Least fee per payment (never above the payment), decimal string.
    pub minimum: Option<String>,
    /// Most fee per payment, decimal string.
    pub maximum: Option<String>,
    /// `SELLER`, `BUYER` or `SPLIT`.
    pub payer: String,
    /// RFC 3339 UTC (lists only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Global position reached (command responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
}

/// A contract's fee terms, as copied from the schedule when it was created.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeeTermsView {
    /// Basis points of each payment.
    pub percent_bps: u16,
    /// Least fee per payment, decimal string.
    pub minimum: Option<String>,
    /// Most fee per payment, decimal string.
    pub maximum: Option<String>,
    /// `SELLER`, `BUYER` or `SPLIT`.
    pub payer: String,
}

impl FeeTermsView {
    /// The view of `terms` in `currency`.
    pub fn of(terms: &FeeTerms, currency: Currency) -> Self {
        FeeTermsView {
            percent_bps: terms.percent_bps,
            minimum: terms.minimum.map(|a| currency.format(a.value())),
            maximum: terms.maximum.map(|a| currency.format(a.value())),
            payer: terms.payer.as_str().into(),
        }
    }
}

/// Body of `PUT /admin/fee-schedule`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FeeScheduleRequest {
    /// ISO 4217 code.
    #[schema(
        pattern = "^([Uu][Ss][Dd]|[Ee][Uu][Rr]|[Gg][Bb][Pp]|[Cc][Hh][Ff]|[Cc][Aa][Dd]|[Aa][Uu][Dd]|[Nn][Zz][Dd]|[Ss][Ee][Kk]|[Nn][Oo][Kk]|[Dd][Kk][Kk]|[Pp][Ll][Nn]|[Jj][Pp][Yy])$"
    )]
    pub currency: String,
    /// Basis points of each payment: 0 to 5000 (50 %).
    #[schema(minimum = 0, maximum = 5000)]
    #[serde(deserialize_with = "crate::extract::whole_number_required")]
    pub percent_bps: u32,
    /// Least fee per payment: a plain decimal, as `amount` elsewhere.
    #[schema(schema_with = crate::openapi::optional_amount_schema)]
    pub minimum: Option<Value>,
    /// Most fee per payment (not below `minimum`).
    #[schema(schema_with = crate::openapi::optional_amount_schema)]
    pub maximum: Option<Value>,
    /// `SELLER`, `BUYER` or `SPLIT`.
    #[schema(value_type = String, pattern = "^(SELLER|BUYER|SPLIT)$")]
    pub payer: String,
}

/// The platform's revenue in one currency.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevenueView {
    /// ISO 4217 code.
    pub currency: String,
    /// Fees collected less withdrawals, decimal string.
    pub balance: String,
}

/// A withdrawal from the platform's revenue.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevenueWithdrawalView {
    /// The movement.
    pub transaction_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// How much, decimal string.
    pub amount: String,
    /// The revenue balance after it, decimal string.
    pub balance: String,
    /// Global position reached.
    pub position: i64,
}

/// One movement of the platform's revenue.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevenueTransactionView {
    /// The movement.
    pub id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// `FEE` (in) or `WITHDRAWAL` (out).
    #[serde(rename = "type")]
    pub kind: String,
    /// Decimal string.
    pub amount: String,
    /// The contract a fee came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract_id: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// One page of revenue movements, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevenueTransactionPage {
    /// The items.
    pub items: Vec<RevenueTransactionView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Body of `POST /platform/revenue/withdraw`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RevenueWithdrawRequest {
    /// How much.
    #[schema(schema_with = crate::openapi::amount_schema)]
    pub amount: Value,
    /// ISO 4217 code; USD when absent.
    #[schema(
        pattern = "^([Uu][Ss][Dd]|[Ee][Uu][Rr]|[Gg][Bb][Pp]|[Cc][Hh][Ff]|[Cc][Aa][Dd]|[Aa][Uu][Dd]|[Nn][Zz][Dd]|[Ss][Ee][Kk]|[Nn][Oo][Kk]|[Dd][Kk][Kk]|[Pp][Ll][Nn]|[Jj][Pp][Yy])$"
    )]
    pub currency: Option<String>,
}

fn revenue_transaction_view(
    t: &projections::read::RevenueTransactionRow,
) -> RevenueTransactionView {
    let c = Currency::parse(&t.currency).unwrap_or(Currency::USD);
    RevenueTransactionView {
        id: t.id.to_string(),
        currency: c.code().into(),
        kind: t.kind.clone(),
        amount: c.format(t.amount),
        contract_id: t.contract_id.map(|c| c.to_string()),
        created_at: crate::rfc3339(t.created_at),
    }
}

fn require_admin(caller: &AuthUser, what: &'static str) -> Result<()> {
    if caller.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::forbidden(what))
    }
}

fn optional_amount(v: Option<&Value>, currency: Currency) -> Result<Option<Amount>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_amount(v, currency).map(Some),
    }
}

fn respond_schedule(outcome: &Outcome, position: i64) -> (u16, Value) {
    match outcome {
        Outcome::FeeSchedule(f) => {
            let t = FeeTermsView::of(&f.terms, f.currency);
            (
                200,
                json!(FeeScheduleView {
                    currency: f.currency.code().into(),
                    percent_bps: t.percent_bps,
                    minimum: t.minimum,
                    maximum: t.maximum,
                    payer: t.payer,
                    updated_at: None,
                    position: Some(position),
                }),
            )
        }
        other => unexpected(other),
    }
}

fn respond_withdrawal(outcome: &Outcome, position: i64) -> (u16, Value) {
    match outcome {
        Outcome::Revenue(r) => (
            201,
            json!(RevenueWithdrawalView {
                transaction_id: r.transaction_id.to_string(),
                currency: r.currency.code().into(),
                amount: r.currency.format(r.amount),
                balance: r.currency.format(r.balance),
                position,
            }),
        ),
        other => unexpected(other),
    }
}

/// Set a currency's fee schedule (admins). Contracts created from now on copy it; existing
/// contracts keep the terms they copied. `percentBps` 0 with no minimum means no fee.
#[utoipa::path(put, path = "/api/v1/admin/fee-schedule", tag = "platform", security(("bearer" = [])), request_body = FeeScheduleRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 200, body = FeeScheduleView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "INVALID_FEE_SCHEDULE (minimum above maximum) and validation errors", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn set_fee_schedule(
    State(st): State<AppState>,
    caller: AuthUser,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    require_admin(&caller, "only admins set the fee schedule")?;
    let req: FeeScheduleRequest = body.parse()?;
    let currency = parse_currency(Some(&req.currency))?;
    let percent_bps = u16::try_from(req.percent_bps)
        .ok()
        .filter(|b| *b <= domain::fees::PERCENT_BPS_MAX)
        .ok_or_else(|| {
            ApiError::unprocessable(
                "INVALID_FEE_SCHEDULE",
                "percentBps must be from 0 to 5000 (50 %)",
            )
        })?;
    let payer = FeePayer::parse(&req.payer).ok_or_else(|| {
        ApiError::unprocessable(
            "INVALID_FEE_SCHEDULE",
            "payer must be SELLER, BUYER or SPLIT",
        )
    })?;
    let terms = FeeTerms {
        percent_bps,
        minimum: optional_amount(req.minimum.as_ref(), currency)?,
        maximum: optional_amount(req.maximum.as_ref(), currency)?,
        payer,
    };
    let ctx = user_context(&caller, "PUT /admin/fee-schedule", &meta, key, &body);
    let cmd = Command::SetFeeSchedule {
        actor: domain::Actor::User {
            id: caller.id,
            role: caller.role,
        },
        currency,
        terms,
        now: st.clock.timestamp(),
    };
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(&st, executed, &respond_schedule))
}

/// Every currency's fee schedule (admins). A currency without one charges no fee.
#[utoipa::path(get, path = "/api/v1/admin/fee-schedule", tag = "platform", security(("bearer" = [])),
    params(("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = Vec<FeeScheduleView>),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn fee_schedules(
    State(st): State<AppState>,
    caller: AuthUser,
    q: QueryMap,
) -> Result<Response> {
    require_admin(&caller, "only admins read the fee schedule")?;
    q.only(&["minPosition"])?;
    let reached = await_position(&st, &caller, q.min_position()?, Reads::Everything).await?;
    let rows = projections::read::fee_schedules(&st.pool).await?;
    let items: Vec<FeeScheduleView> = rows
        .iter()
        .map(|r| {
            let c = Currency::parse(&r.currency).unwrap_or(Currency::USD);
            FeeScheduleView {
                currency: c.code().into(),
                percent_bps: u16::try_from(r.percent_bps).unwrap_or_default(),
                minimum: r.minimum.map(|m| c.format(m)),
                maximum: r.maximum.map(|m| c.format(m)),
                payer: r.payer.clone(),
                updated_at: Some(crate::rfc3339(r.updated_at)),
                position: None,
            }
        })
        .collect();
    Ok(with_consistency(Json(items).into_response(), reached))
}

/// The platform's revenue per currency (admins).
#[utoipa::path(get, path = "/api/v1/platform/revenue", tag = "platform", security(("bearer" = [])),
    params(("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = Vec<RevenueView>),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn revenue(
    State(st): State<AppState>,
    caller: AuthUser,
    q: QueryMap,
) -> Result<Response> {
    require_admin(&caller, "only admins read platform revenue")?;
    q.only(&["minPosition"])?;
    let reached = await_position(&st, &caller, q.min_position()?, Reads::Everything).await?;
    let rows = projections::read::revenue(&st.pool).await?;
    let items: Vec<RevenueView> = rows
        .iter()
        .map(|r| {
            let c = Currency::parse(&r.currency).unwrap_or(Currency::USD);
            RevenueView {
                currency: c.code().into(),
                balance: c.format(r.balance),
            }
        })
        .collect();
    Ok(with_consistency(Json(items).into_response(), reached))
}

/// The platform revenue's movements, newest first (admins): fees in, withdrawals out.
#[utoipa::path(get, path = "/api/v1/platform/revenue/transactions", tag = "platform", security(("bearer" = [])),
    params(("currency" = Option<String>, Query, pattern = "^([Uu][Ss][Dd]|[Ee][Uu][Rr]|[Gg][Bb][Pp]|[Cc][Hh][Ff]|[Cc][Aa][Dd]|[Aa][Uu][Dd]|[Nn][Zz][Dd]|[Ss][Ee][Kk]|[Nn][Oo][Kk]|[Dd][Kk][Kk]|[Pp][Ll][Nn]|[Jj][Pp][Yy])$", description = "Only this currency"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, pattern = "^[1-9][0-9]{0,17}$", description = "nextCursor of the previous page"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = RevenueTransactionPage),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn revenue_transactions(
    State(st): State<AppState>,
    caller: AuthUser,
    q: QueryMap,
) -> Result<Response> {
    require_admin(&caller, "only admins read platform revenue")?;
    q.only(&["currency", "limit", "cursor", "minPosition"])?;
    let (limit, before) = crate::routes::page_params(&q, PAGE_ITEMS_MAX)?;
    let currency = match q.0.get("currency") {
        None => None,
        Some(_) => Some(q.currency()?),
    };
    let reached = await_position(&st, &caller, q.min_position()?, Reads::Everything).await?;
    let rows = projections::read::revenue_history(
        &st.pool,
        currency.as_ref().map(Currency::code),
        before,
        limit + 1,
    )
    .await?;
    let next_cursor =
        (rows.len() as i64 > limit).then(|| rows[limit as usize - 1].position.to_string());
    let items = rows
        .iter()
        .take(limit as usize)
        .map(revenue_transaction_view)
        .collect();
    Ok(with_consistency(
        Json(RevenueTransactionPage { items, next_cursor }).into_response(),
        reached,
    ))
}

/// Move platform revenue out of the ledger (admins); never below zero.
#[utoipa::path(post, path = "/api/v1/platform/revenue/withdraw", tag = "platform", security(("bearer" = [])), request_body = RevenueWithdrawRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 201, body = RevenueWithdrawalView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "INSUFFICIENT_FUNDS", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn withdraw_revenue(
    State(st): State<AppState>,
    caller: AuthUser,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    require_admin(&caller, "only admins withdraw platform revenue")?;
    let req: RevenueWithdrawRequest = body.parse()?;
    let currency = parse_currency(req.currency.as_deref())?;
    let amount = parse_amount(&req.amount, currency)?;
    let ctx = user_context(
        &caller,
        "POST /platform/revenue/withdraw",
        &meta,
        key,
        &body,
    );
    let cmd = Command::WithdrawRevenue {
        actor: domain::Actor::User {
            id: caller.id,
            role: caller.role,
        },
        currency,
        amount,
        transaction_id: TransactionId::new_v7(),
    };
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(&st, executed, &respond_withdrawal))
}
