//! Escrow contracts: create, fund, deliver, release, refund, cancel, and queries.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use command_handlers::{Command, Outcome};
use domain::contract::CreateContract;
use domain::{Contract, ContractId, ContractStatus, Currency, StreamId, TransactionId, UserId};
use projections::read::ContractRow;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::clock::to_utc;
use crate::error::{ApiError, Result};
use crate::extract::{
    parse_amount, parse_body_id, parse_currency, parse_description, parse_id,
    parse_optional_decimal, parse_time, IdempotencyKey, JsonBody, PathParam, QueryMap, RequestMeta,
};
use crate::routes::milestones::{self, MilestoneRequest, MilestoneView};
use crate::routes::{
    await_position, read_or_wait, render, unexpected, user_context, with_consistency, Reads,
};
use crate::state::AppState;

/// Most contracts per page.
const PAGE_ITEMS_MAX: i64 = 100;

/// An escrow contract.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContractView {
    /// Contract id.
    pub id: String,
    /// Who gets paid.
    pub seller_id: String,
    /// Who pays.
    pub buyer_id: String,
    /// Title.
    pub title: String,
    /// Terms.
    pub description: Option<String>,
    /// Price, decimal string.
    #[schema(example = "1000.00")]
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    /// What escrow holds now, decimal string.
    pub held_amount: String,
    /// `DRAFT`, `ACTIVE`, `DISPUTED`, `COMPLETED`, `REFUNDED`, `SETTLED`, `CANCELLED` or
    /// `EXPIRED`.
    pub status: String,
    /// Hours the buyer has after delivery.
    pub inspection_period_hours: Option<u32>,
    /// When the seller delivered (RFC 3339).
    pub delivered_at: Option<String>,
    /// When held funds release by themselves (RFC 3339).
    pub auto_release_at: Option<String>,
    /// The open or last dispute.
    pub dispute_id: Option<String>,
    /// A draft not funded by then expires (RFC 3339); absent when the contract has no
    /// funding deadline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fund_by: Option<String>,
    /// The platform fee copied from the schedule when the contract was created; absent
    /// when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee: Option<crate::routes::platform::FeeTermsView>,
    /// Fees collected from its payments so far (both shares), decimal string; absent
    /// without a fee.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee_charged: Option<String>,
    /// Its stages, at least one: a contract created without milestones has one, the
    /// whole contract.
    pub milestones: Vec<MilestoneView>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
    /// Global position reached (command responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
}

/// The view of a contract's state right after a command.
pub fn view_of(c: &Contract, updated_at: DateTime<Utc>, position: Option<i64>) -> ContractView {
    let currency = c.currency.unwrap_or(Currency::USD);
    ContractView {
        id: c.id.map(|i| i.to_string()).unwrap_or_default(),
        seller_id: c.seller.map(|i| i.to_string()).unwrap_or_default(),
        buyer_id: c.buyer.map(|i| i.to_string()).unwrap_or_default(),
        title: c.title.clone(),
        description: c.description.as_ref().map(|d| d.as_str().to_owned()),
        amount: currency.format(c.amount),
        currency: currency.code().into(),
        held_amount: currency.format(c.held),
        status: c.status.as_str().into(),
        inspection_period_hours: c.inspection_period_hours,
        delivered_at: c.delivered_at.map(|t| crate::rfc3339(to_utc(t))),
        auto_release_at: c.auto_release_at.map(|t| crate::rfc3339(to_utc(t))),
        dispute_id: c.dispute.map(|d| d.to_string()),
        fund_by: c.fund_by.map(|t| crate::rfc3339(to_utc(t))),
        fee: c
            .fee
            .as_ref()
            .map(|t| crate::routes::platform::FeeTermsView::of(t, currency)),
        fee_charged: c.fee.map(|_| currency.format(c.fee_charged)),
        milestones: milestones::views(&c.milestones, currency),
        created_at: c
            .created_at
            .map(|t| crate::rfc3339(to_utc(t)))
            .unwrap_or_default(),
        updated_at: crate::rfc3339(updated_at),
        position,
    }
}

/// A contract as its parties see it.
fn contract_view(r: &ContractRow) -> ContractView {
    let c = Currency::parse(&r.currency).unwrap_or(Currency::USD);
    ContractView {
        id: r.id.to_string(),
        seller_id: r.seller_id.to_string(),
        buyer_id: r.buyer_id.to_string(),
        title: r.title.clone(),
        description: r.description.clone(),
        amount: c.format(r.amount),
        currency: c.code().into(),
        held_amount: c.format(r.held_amount),
        status: r.status.clone(),
        inspection_period_hours: r
            .inspection_period_hours
            .and_then(|h| u32::try_from(h).ok()),
        delivered_at: r.delivered_at.map(crate::rfc3339),
        auto_release_at: r.auto_release_at.map(crate::rfc3339),
        dispute_id: r.dispute_id.map(|d| d.to_string()),
        fund_by: r.fund_by.map(crate::rfc3339),
        fee: r
            .fee_percent_bps
            .zip(r.fee_payer.as_ref())
            .map(|(bps, payer)| crate::routes::platform::FeeTermsView {
                percent_bps: u16::try_from(bps).unwrap_or_default(),
                minimum: r.fee_minimum.map(|m| c.format(m)),
                maximum: r.fee_maximum.map(|m| c.format(m)),
                payer: payer.clone(),
            }),
        fee_charged: r.fee_payer.as_ref().map(|_| c.format(r.fee_charged)),
        milestones: milestones::views(&r.milestones, c),
        created_at: crate::rfc3339(r.created_at),
        updated_at: crate::rfc3339(r.updated_at),
        position: None,
    }
}

fn contract_visible_to(r: &ContractRow, u: &AuthUser) -> bool {
    u.role.sees_everything() || r.buyer_id == u.id.0 || r.seller_id == u.id.0
}

/// A page of contracts, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContractPage {
    /// The contracts.
    pub items: Vec<ContractView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Body of `POST /contracts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateContractRequest {
    /// Who gets paid.
    #[schema(format = Uuid)]
    pub seller_id: String,
    /// Who pays.
    #[schema(format = Uuid)]
    pub buyer_id: String,
    /// 1 to 200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub title: String,
    /// The price: a plain decimal as a JSON number or string (`500`, `"500.00"`), no exponent.
    /// Required without `milestones`; with them it may be omitted, and must equal their sum
    /// when given.
    #[schema(schema_with = crate::openapi::amount_schema)]
    pub amount: Option<Value>,
    /// The stages the price is paid in (1 to 50), each delivered, released or refunded on
    /// its own; one implicit milestone, the whole contract, when absent.
    #[schema(min_items = 1, max_items = 50)]
    pub milestones: Option<Vec<MilestoneRequest>>,
    /// ISO 4217 code; USD when absent.
    #[schema(
        pattern = "^([Uu][Ss][Dd]|[Ee][Uu][Rr]|[Gg][Bb][Pp]|[Cc][Hh][Ff]|[Cc][Aa][Dd]|[Aa][Uu][Dd]|[Nn][Zz][Dd]|[Ss][Ee][Kk]|[Nn][Oo][Kk]|[Dd][Kk][Kk]|[Pp][Ll][Nn]|[Jj][Pp][Yy])$"
    )]
    pub currency: Option<String>,
    /// Terms, at most 500 characters.
    #[schema(
        max_length = 500,
        pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub description: Option<String>,
    /// Hours the buyer has after delivery before funds release by themselves (1 to 8784).
    #[schema(minimum = 1, maximum = 8784)]
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub inspection_period_hours: Option<u32>,
    /// Funding deadline (RFC 3339, in the future, at most 366 days ahead): a draft not
    /// funded by then expires, and funding after it is refused.
    #[schema(format = DateTime, example = "2027-01-31T12:00:00Z")]
    pub fund_by: Option<String>,
}

/// Body of release and refund: all that is held when `amount` is absent.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutRequest {
    /// Part of the held amount: a plain decimal as a JSON number or string (`500`, `"500.00"`), no exponent.
    #[schema(schema_with = crate::openapi::optional_amount_schema)]
    pub amount: Option<Value>,
}

/// An empty body (or `{}`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

fn respond_contract(outcome: &Outcome, position: i64) -> (u16, Value) {
    match outcome {
        Outcome::Contract(c) => (
            200,
            json!(view_of(&c.contract, c.recorded_at, Some(position))),
        ),
        other => unexpected(other),
    }
}

fn respond_created(outcome: &Outcome, position: i64) -> (u16, Value) {
    let (_, body) = respond_contract(outcome, position);
    (201, body)
}

/// Create a contract between a buyer and a seller (the caller is one of them).
#[utoipa::path(post, path = "/api/v1/contracts", tag = "contracts", security(("bearer" = [])), request_body = CreateContractRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 201, body = ContractView, links(("GetContract" = (operation_ref = "#/paths/~1api~1v1~1contracts~1{id}/get", parameters(("id" = "$response.body#/id")))), ("FundContract" = (operation_ref = "#/paths/~1api~1v1~1contracts~1{id}~1fund/post", parameters(("id" = "$response.body#/id")))), ("DeliverContract" = (operation_ref = "#/paths/~1api~1v1~1contracts~1{id}~1deliver/post", parameters(("id" = "$response.body#/id")))), ("ReleaseContract" = (operation_ref = "#/paths/~1api~1v1~1contracts~1{id}~1release/post", parameters(("id" = "$response.body#/id")))), ("RefundContract" = (operation_ref = "#/paths/~1api~1v1~1contracts~1{id}~1refund/post", parameters(("id" = "$response.body#/id")))), ("CancelContract" = (operation_ref = "#/paths/~1api~1v1~1contracts~1{id}~1cancel/post", parameters(("id" = "$response.body#/id")))), ("ContractHistory" = (operation_ref = "#/paths/~1api~1v1~1contracts~1{id}~1history/get", parameters(("id" = "$response.body#/id")))))),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "USER_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "SAME_PARTIES, INVALID_FUND_BY (not RFC 3339, not in the future, or more than 366 days ahead), MILESTONES_MISMATCH (amount is not the milestones' sum), AMOUNT_REQUIRED (neither amount nor milestones), INVALID_MILESTONES and validation errors", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(st): State<AppState>,
    caller: AuthUser,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    let req: CreateContractRequest = body.parse()?;
    let seller = UserId(parse_body_id(&req.seller_id, "sellerId")?);
    let buyer = UserId(parse_body_id(&req.buyer_id, "buyerId")?);
    let currency = parse_currency(req.currency.as_deref())?;
    let amount = match &req.amount {
        Some(a) => Some(parse_amount(a, currency)?),
        None if req.milestones.is_some() => None,
        None => {
            return Err(ApiError::unprocessable(
                "AMOUNT_REQUIRED",
                "amount is required unless milestones are given",
            ))
        }
    };
    let milestones = req
        .milestones
        .as_deref()
        .map(|m| milestones::parse_terms(m, currency))
        .transpose()?;
    let description = parse_description(req.description.as_deref())?;
    let fund_by = req.fund_by.as_deref().map(parse_time).transpose()?;
    let ctx = user_context(&caller, "POST /contracts", &meta, key, &body);
    let cmd = Command::CreateContract(CreateContract {
        contract_id: ContractId::new_v7(),
        actor: caller.id,
        buyer_id: buyer,
        seller_id: seller,
        title: req.title,
        description,
        amount,
        milestones,
        currency,
        inspection_period_hours: req.inspection_period_hours,
        fund_by,
        now: st.clock.timestamp(),
    });
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(&st, executed, &respond_created))
}

/// A contract (parties, arbiters, admins; 404 for anyone else).
#[utoipa::path(get, path = "/api/v1/contracts/{id}", operation_id = "get_contract", tag = "contracts", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "Contract id"), ("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = ContractView),
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
    let id = parse_id(&id, "contract id")?;
    q.only(&["minPosition"])?;
    let reached = await_position(
        &st,
        &caller,
        q.min_position()?,
        Reads::Stream(StreamId::contract(ContractId(id))),
    )
    .await?;
    let row = read_or_wait(&st, &StreamId::contract(ContractId(id)), || {
        projections::read::contract(&st.pool, id)
    })
    .await?;
    match row {
        Some(r) if contract_visible_to(&r, &caller) => Ok(with_consistency(
            Json(contract_view(&r)).into_response(),
            reached,
        )),
        _ => Err(ApiError::not_found(
            "CONTRACT_NOT_FOUND",
            "contract not found",
        )),
    }
}

/// Contracts where the user is buyer or seller, newest first (self, arbiters, admins).
#[utoipa::path(get, path = "/api/v1/contracts/user/{userId}", tag = "contracts", security(("bearer" = [])),
    params(("userId" = String, Path, format = Uuid, description = "User id"),
        ("status" = Option<String>, Query, pattern = "^(DRAFT|ACTIVE|DISPUTED|COMPLETED|REFUNDED|SETTLED|CANCELLED|EXPIRED)$", description = "Only this status"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, pattern = "^[1-9][0-9]{0,17}$", description = "nextCursor of the previous page"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = ContractPage),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn list_for_user(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(user): PathParam,
    q: QueryMap,
) -> Result<Response> {
    let user = UserId(parse_id(&user, "userId")?);
    q.only(&["status", "limit", "cursor", "minPosition"])?;
    let (limit, before) = crate::routes::page_params(&q, PAGE_ITEMS_MAX)?;
    let status = match q.0.get("status") {
        None => None,
        Some(s) => Some(ContractStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "INVALID_QUERY_PARAMETER",
                "status must be a contract status such as ACTIVE",
            )
        })?),
    };
    if !caller.can_see(user) {
        return Err(ApiError::forbidden("you may only list your own contracts"));
    }
    let reached = await_position(&st, &caller, q.min_position()?, Reads::Own).await?;
    let rows = projections::read::contracts_of(
        &st.pool,
        user.0,
        status.map(|s| s.as_str()),
        before,
        limit + 1,
    )
    .await?;
    let next_cursor =
        (rows.len() as i64 > limit).then(|| rows[limit as usize - 1].position.to_string());
    let items = rows
        .iter()
        .take(limit as usize)
        .map(contract_view)
        .collect();
    Ok(with_consistency(
        Json(ContractPage { items, next_cursor }).into_response(),
        reached,
    ))
}

/// A command on a contract (or on one of its milestones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The buyer funds it.
    Fund,
    /// The seller delivers.
    Deliver,
    /// The buyer pays the seller.
    Release,
    /// The seller pays the buyer back.
    Refund,
    /// A party calls off a draft.
    Cancel,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Fund => "fund",
            Action::Deliver => "deliver",
            Action::Release => "release",
            Action::Refund => "refund",
            Action::Cancel => "cancel",
        }
    }
}

/// Runs `action` on the contract `id`, or on its milestone `milestone`. A milestone's
/// release or refund takes everything it holds, so its body names no amount.
#[allow(clippy::too_many_arguments)] // an axum handler's extractors, passed on as they came
pub(crate) async fn contract_command(
    st: &AppState,
    caller: AuthUser,
    id: &str,
    milestone: Option<u16>,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
    action: Action,
) -> Result<Response> {
    let contract_id = ContractId(parse_id(id, "contract id")?);
    let actor = caller.id;
    let payout = || -> Result<Option<rust_decimal::Decimal>> {
        if milestone.is_some() {
            let _: EmptyRequest = body.parse()?;
            return Ok(None);
        }
        let req: PayoutRequest = body.parse()?;
        parse_optional_decimal(req.amount.as_ref(), "amount")
    };
    let cmd = match action {
        Action::Fund => {
            let _: EmptyRequest = body.parse()?;
            Command::FundContract {
                contract_id,
                actor,
                transaction_id: TransactionId::new_v7(),
                now: st.clock.timestamp(),
            }
        }
        Action::Deliver => {
            let _: EmptyRequest = body.parse()?;
            Command::DeliverContract {
                contract_id,
                actor,
                milestone,
                now: st.clock.timestamp(),
            }
        }
        Action::Cancel => {
            let _: EmptyRequest = body.parse()?;
            Command::CancelContract { contract_id, actor }
        }
        Action::Release => Command::ReleaseContract {
            contract_id,
            actor: domain::Actor::User {
                id: actor,
                role: caller.role,
            },
            milestone,
            amount: payout()?,
            now: st.clock.timestamp(),
            transaction_id: TransactionId::new_v7(),
        },
        Action::Refund => Command::RefundContract {
            contract_id,
            actor,
            milestone,
            amount: payout()?,
            transaction_id: TransactionId::new_v7(),
        },
    };
    let endpoint = match milestone {
        Some(n) => format!(
            "POST /contracts/{contract_id}/milestones/{n}/{}",
            action.as_str()
        ),
        None => format!("POST /contracts/{contract_id}/{}", action.as_str()),
    };
    let ctx = user_context(&caller, &endpoint, &meta, key, &body);
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(st, executed, &respond_contract))
}

macro_rules! contract_action {
    ($(#[$doc:meta])* $name:ident, $action:expr, $path:literal, $body:ty) => {
        $(#[$doc])*
        #[utoipa::path(post, path = $path, tag = "contracts", security(("bearer" = [])), request_body(content = Option<$body>),
            params(("id" = String, Path, format = Uuid, description = "Contract id"),
                ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
            responses((status = 200, body = ContractView),
                (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 409, description = "An illegal transition (code names the rule) or insufficient funds", body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
        pub async fn $name(State(st): State<AppState>, caller: AuthUser, PathParam(id): PathParam, meta: RequestMeta, key: IdempotencyKey, body: JsonBody) -> Result<Response> {
            contract_command(&st, caller, &id, None, meta, key, body, $action).await
        }
    };
}

contract_action!(
    /// The buyer funds the contract: the price moves from its wallet into escrow (`ESCROW_HOLD`).
    fund, Action::Fund, "/api/v1/contracts/{id}/fund", EmptyRequest
);
contract_action!(
    /// The seller marks the work delivered; the inspection window (if any) starts.
    deliver, Action::Deliver, "/api/v1/contracts/{id}/deliver", EmptyRequest
);
contract_action!(
    /// The buyer releases held funds (all, or `amount`) to the seller (`PAYMENT`).
    release, Action::Release, "/api/v1/contracts/{id}/release", PayoutRequest
);
contract_action!(
    /// The seller refunds held funds (all, or `amount`) to the buyer (`REFUND`).
    refund, Action::Refund, "/api/v1/contracts/{id}/refund", PayoutRequest
);
contract_action!(
    /// A party cancels a `DRAFT` contract.
    cancel, Action::Cancel, "/api/v1/contracts/{id}/cancel", EmptyRequest
);
