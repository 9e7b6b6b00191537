//! Wallets: balances, deposits, withdrawals, transfers and transaction history.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use command_handlers::{Command, Outcome, WalletChange};
use domain::wallet::{Deposit, Transfer, Withdraw};
use domain::{Currency, Role, StreamId, TransactionId, UserId, WalletId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, Result};
use crate::extract::{
    parse_amount, parse_currency, parse_description, parse_id, IdempotencyKey, JsonBody, PathParam,
    QueryMap, RequestMeta,
};
use crate::routes::Reads;
use crate::routes::{
    await_position, read_or_wait, render, unexpected, user_context, with_consistency,
};
use crate::state::AppState;

/// Most history items returned per page.
const PAGE_ITEMS_MAX: i64 = 100;

/// A wallet.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalletView {
    /// Wallet id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Available balance, decimal string.
    #[schema(example = "500.00")]
    pub balance: String,
    /// Money the user holds in escrow as a buyer, decimal string.
    #[schema(example = "0.00")]
    pub held_in_escrow: String,
    /// Payouts asked for and not yet completed or failed: no longer available, not yet
    /// gone. Decimal string.
    #[schema(example = "0.00")]
    pub pending_payouts: String,
    /// Frozen by an admin: it receives money but sends none (transfers, withdrawals and
    /// fundings answer 409 `WALLET_FROZEN`).
    pub frozen: bool,
    /// Why it is frozen (admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_reason: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC: when its numbers last changed (with `asOf`: the last change at or
    /// before that instant).
    pub updated_at: String,
    /// The instant asked for with `asOf`: the numbers are those at that instant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
}

/// A money movement (the seed's Transaction).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionView {
    /// Transaction id.
    pub id: String,
    /// Debited wallet (absent for deposits).
    pub from_wallet_id: Option<String>,
    /// Credited wallet (absent for withdrawals).
    pub to_wallet_id: Option<String>,
    /// Decimal string.
    #[schema(example = "500.00")]
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    /// `DEPOSIT`, `WITHDRAWAL`, `TRANSFER`, `ESCROW_HOLD`, `PAYMENT`, `REFUND`, `FEE` (a
    /// platform fee: the buyer's prepaid share at funding, or the seller's share of a
    /// payment) or `FEE_REFUND` (prepaid fee back with a refund).
    #[serde(rename = "type")]
    pub kind: String,
    /// Statement text.
    pub description: Option<String>,
    /// The escrow contract, for `ESCROW_HOLD`, `PAYMENT`, `REFUND`, `FEE` and `FEE_REFUND`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract_id: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// `IN` or `OUT` of the wallet whose history this is; absent for the other party's
    /// movement on a contract of this user's (a seller's `PAYMENT` in its buyer's history).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(IN|OUT)$")]
    pub direction: Option<String>,
    /// That wallet's available balance right after this movement, decimal string (absent
    /// where `direction` is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_after: Option<String>,
    /// The other user: a transfer's other side, a contract's other party.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterparty_user_id: Option<String>,
    /// The other user's e-mail address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterparty_email: Option<String>,
}

impl TransactionView {
    /// A history row as a person reads it.
    pub(crate) fn of(t: &projections::read::TransactionRow) -> Self {
        let c = Currency::parse(&t.currency).unwrap_or(Currency::USD);
        TransactionView {
            id: t.id.to_string(),
            from_wallet_id: t.from_wallet_id.map(|x| x.to_string()),
            to_wallet_id: t.to_wallet_id.map(|x| x.to_string()),
            amount: c.format(t.amount),
            currency: c.code().into(),
            kind: t.kind.clone(),
            description: t.description.clone(),
            contract_id: t.contract_id.map(|c| c.to_string()),
            created_at: crate::rfc3339(t.created_at),
            direction: t.direction.clone(),
            balance_after: t.balance_after.map(|b| c.format(b)),
            counterparty_user_id: t.counterparty_user_id.map(|u| u.to_string()),
            counterparty_email: t.counterparty_email.clone(),
        }
    }
}

/// One page of history, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionPage {
    /// The items.
    pub items: Vec<TransactionView>,
    /// Pass as `cursor` to get the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Deposit or withdrawal body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MoneyRequest {
    /// Whose wallet: the caller's own (admins: anyone's).
    #[schema(format = Uuid)]
    pub user_id: String,
    /// A plain decimal as a JSON number or string (`500`, `"500.00"`), no exponent; > 0, at most the currency's decimals.
    #[schema(schema_with = crate::openapi::amount_schema)]
    pub amount: Value,
    /// ISO 4217 code; USD when absent.
    #[schema(
        pattern = "^([Uu][Ss][Dd]|[Ee][Uu][Rr]|[Gg][Bb][Pp]|[Cc][Hh][Ff]|[Cc][Aa][Dd]|[Aa][Uu][Dd]|[Nn][Zz][Dd]|[Ss][Ee][Kk]|[Nn][Oo][Kk]|[Dd][Kk][Kk]|[Pp][Ll][Nn]|[Jj][Pp][Yy])$"
    )]
    pub currency: Option<String>,
    /// Statement text, at most 500 characters.
    #[schema(
        max_length = 500,
        pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub description: Option<String>,
}

/// Transfer body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransferRequest {
    /// The payee.
    #[schema(format = Uuid)]
    pub to_user_id: String,
    /// A plain decimal as a JSON number or string (`500`, `"500.00"`), no exponent.
    #[schema(schema_with = crate::openapi::amount_schema)]
    pub amount: Value,
    /// ISO 4217 code; USD when absent.
    #[schema(
        pattern = "^([Uu][Ss][Dd]|[Ee][Uu][Rr]|[Gg][Bb][Pp]|[Cc][Hh][Ff]|[Cc][Aa][Dd]|[Aa][Uu][Dd]|[Nn][Zz][Dd]|[Ss][Ee][Kk]|[Nn][Oo][Kk]|[Dd][Kk][Kk]|[Pp][Ll][Nn]|[Jj][Pp][Yy])$"
    )]
    pub currency: Option<String>,
    /// Statement text, at most 500 characters.
    #[schema(
        max_length = 500,
        pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub description: Option<String>,
}

/// The answer to a money command.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoneyResponse {
    /// The movement.
    pub transaction: TransactionView,
    /// The caller's (or target's) wallet.
    pub wallet_id: String,
    /// Its owner.
    pub user_id: String,
    /// Its currency.
    pub currency: String,
    /// Its balance right after the command.
    pub balance: String,
    /// Global position reached; pass as `minPosition` to read your write.
    pub position: i64,
}

fn money_response(w: &WalletChange, position: i64) -> MoneyResponse {
    let c = w.currency;
    MoneyResponse {
        transaction: TransactionView {
            id: w.transaction_id.to_string(),
            from_wallet_id: w.from_wallet_id.map(|x| x.to_string()),
            to_wallet_id: w.to_wallet_id.map(|x| x.to_string()),
            amount: c.format(w.amount),
            currency: c.code().into(),
            kind: w.kind.clone(),
            description: w.description.clone(),
            contract_id: None,
            created_at: crate::rfc3339(w.recorded_at),
            direction: Some(
                if w.to_wallet_id == Some(w.wallet_id) {
                    "IN"
                } else {
                    "OUT"
                }
                .into(),
            ),
            balance_after: Some(c.format(w.balance)),
            counterparty_user_id: None,
            counterparty_email: None,
        },
        wallet_id: w.wallet_id.to_string(),
        user_id: w.user_id.to_string(),
        currency: c.code().into(),
        balance: c.format(w.balance),
        position,
    }
}

fn respond_money(outcome: &Outcome, position: i64) -> (u16, Value) {
    match outcome {
        Outcome::Wallet(w) => (201, json!(money_response(w, position))),
        other => unexpected(other),
    }
}

fn body_user(text: &str, field: &str) -> Result<UserId> {
    Uuid::parse_str(text)
        .map(UserId)
        .map_err(|_| ApiError::unprocessable("INVALID_ID", format!("{field} must be a UUID")))
}

/// A user's wallet (owner, arbiter or admin).
#[utoipa::path(get, path = "/api/v1/wallets/{userId}", tag = "wallets", security(("bearer" = [])),
    params(("userId" = String, Path, format = Uuid, description = "Owner (UUID)"),
        ("currency" = Option<String>, Query, pattern = "^([Uu][Ss][Dd]|[Ee][Uu][Rr]|[Gg][Bb][Pp]|[Cc][Hh][Ff]|[Cc][Aa][Dd]|[Aa][Uu][Dd]|[Nn][Zz][Dd]|[Ss][Ee][Kk]|[Nn][Oo][Kk]|[Dd][Kk][Kk]|[Pp][Ll][Nn]|[Jj][Pp][Yy])$", description = "ISO 4217 code, default USD"),
        ("asOf" = Option<String>, Query, format = DateTime, description = "RFC 3339 instant, not in the future (422 `INVALID_AS_OF`): the balance, escrow holds and pending payouts at that instant"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = WalletView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "READ_MODEL_BEHIND: it exists, but the read models have not caught up within the wait; retry", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get_wallet(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(user): PathParam,
    q: QueryMap,
) -> Result<Response> {
    let user = UserId(parse_id(&user, "userId")?);
    q.only(&["currency", "minPosition", "asOf"])?;
    let currency = q.currency()?;
    let as_of = match q.0.get("asOf") {
        None => None,
        Some(t) => {
            let at = parse_instant(t, "asOf")?;
            // Depends on the clock, so the document cannot state it: 422, not 400.
            if at > st.clock.now() {
                return Err(ApiError::unprocessable(
                    "INVALID_AS_OF",
                    "asOf is in the future: the balance then is not known yet",
                ));
            }
            Some(at)
        }
    };
    if !caller.can_see(user) {
        return Err(ApiError::forbidden("you may only read your own wallets"));
    }
    let stream = StreamId::wallet(WalletId::of(user, currency));
    let reads = Reads::Stream(stream.clone());
    let reached = await_position(&st, &caller, q.min_position()?, reads).await?;
    let row = read_or_wait(&st, &stream, || {
        projections::read::wallet(&st.pool, user.0, currency.code())
    })
    .await?
    .ok_or_else(|| {
        ApiError::not_found(
            "WALLET_NOT_FOUND",
            format!("no {currency} wallet for this user"),
        )
    })?;
    let mut view = WalletView {
        id: row.id.to_string(),
        user_id: row.user_id.to_string(),
        currency: currency.code().into(),
        balance: currency.format(row.balance),
        held_in_escrow: currency.format(row.held_in_escrow),
        pending_payouts: currency.format(row.pending_payouts),
        frozen: row.frozen_reason.is_some(),
        frozen_reason: row
            .frozen_reason
            .clone()
            .filter(|_| caller.role == Role::Admin),
        created_at: crate::rfc3339(row.created_at),
        updated_at: crate::rfc3339(row.updated_at),
        as_of: None,
    };
    if let Some(at) = as_of {
        as_of_view(&st, &mut view, row.id, row.created_at, at, currency).await?;
    }
    Ok(with_consistency(Json(view).into_response(), reached))
}

/// Parses an RFC 3339 instant (400 `INVALID_QUERY_PARAMETER` if it is not one).
pub(crate) fn parse_instant(text: &str, name: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    Ok(chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|_| {
            ApiError::bad_request(
                "INVALID_QUERY_PARAMETER",
                format!("{name} must be an RFC 3339 date-time, e.g. 2026-12-07T12:00:00Z"),
            )
        })?
        .with_timezone(&chrono::Utc))
}

/// Replaces `view`'s numbers with those of the wallet at `at` (404 if it was not open yet).
async fn as_of_view(
    st: &AppState,
    view: &mut WalletView,
    wallet: Uuid,
    opened: chrono::DateTime<chrono::Utc>,
    at: chrono::DateTime<chrono::Utc>,
    currency: Currency,
) -> Result<()> {
    if opened > at {
        return Err(ApiError::not_found(
            "WALLET_NOT_FOUND",
            format!(
                "the {currency} wallet was opened after {}",
                crate::rfc3339(at)
            ),
        ));
    }
    let state = projections::read::wallet_as_of(&st.pool, wallet, at).await?;
    let (balance, held, pending, changed) = match state {
        None => (
            rust_decimal::Decimal::ZERO,
            Some(rust_decimal::Decimal::ZERO),
            rust_decimal::Decimal::ZERO,
            opened,
        ),
        Some(s) => (s.balance, s.held_in_escrow, s.pending_payouts, s.at),
    };
    let held = held.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "AS_OF_NOT_RECORDED",
            "the read models have no escrow holds recorded for that instant (it predates this \
             version of the ledger): an operator runs `escrow replay` once to record them",
        )
    })?;
    view.balance = currency.format(balance);
    view.held_in_escrow = currency.format(held);
    view.pending_payouts = currency.format(pending);
    view.updated_at = crate::rfc3339(changed);
    view.as_of = Some(crate::rfc3339(at));
    Ok(())
}

struct MoneyInput {
    user: UserId,
    currency: Currency,
    amount: domain::Amount,
    description: Option<domain::Description>,
}

/// Parses a deposit's or withdrawal's body; `may` says whether the caller may move money
/// in the named user's wallet (or why not).
fn money_input(
    body: &JsonBody,
    may: impl FnOnce(UserId) -> std::result::Result<(), &'static str>,
) -> Result<MoneyInput> {
    let req: MoneyRequest = body.parse()?;
    let user = body_user(&req.user_id, "userId")?;
    let currency = parse_currency(req.currency.as_deref())?;
    let amount = parse_amount(&req.amount, currency)?;
    let description = parse_description(req.description.as_deref())?;
    may(user).map_err(ApiError::forbidden)?;
    Ok(MoneyInput {
        user,
        currency,
        amount,
        description,
    })
}

/// Deposit money into a wallet (own, unless `SELF_DEPOSITS=false`; admins and the `service`
/// role: any). Opens the currency's wallet if needed.
#[utoipa::path(post, path = "/api/v1/wallets/deposit", tag = "wallets", security(("bearer" = [])), request_body = MoneyRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 201, body = MoneyResponse),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn deposit(
    State(st): State<AppState>,
    caller: AuthUser,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    // Admins and the marketplace's service credit anyone; a user its own wallet, unless
    // SELF_DEPOSITS=false leaves money to come in only through them.
    let input = money_input(&body, |user| {
        if matches!(caller.role, Role::Admin | Role::Service) {
            Ok(())
        } else if caller.id != user {
            Err("you may only move money in your own wallets")
        } else if !st.self_deposits {
            Err("deposits come in through the marketplace's service or an admin here (SELF_DEPOSITS=false)")
        } else {
            Ok(())
        }
    })?;
    let ctx = user_context(&caller, "POST /wallets/deposit", &meta, key, &body);
    let cmd = Command::Deposit(Deposit {
        transaction_id: TransactionId::new_v7(),
        user_id: input.user,
        currency: input.currency,
        amount: input.amount,
        description: input.description,
        channel: domain::DepositChannel::Api,
    });
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(&st, executed, &respond_money))
}

/// Withdraw money from a wallet (own; admins: any). Never below zero.
#[utoipa::path(post, path = "/api/v1/wallets/withdraw", tag = "wallets", security(("bearer" = [])), request_body = MoneyRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 201, body = MoneyResponse),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "INSUFFICIENT_FUNDS", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn withdraw(
    State(st): State<AppState>,
    caller: AuthUser,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    let input = money_input(&body, |user| {
        if caller.can_act_for(user) {
            Ok(())
        } else {
            Err("you may only move money in your own wallets")
        }
    })?;
    let ctx = user_context(&caller, "POST /wallets/withdraw", &meta, key, &body);
    let cmd = Command::Withdraw(Withdraw {
        transaction_id: TransactionId::new_v7(),
        user_id: input.user,
        currency: input.currency,
        amount: input.amount,
        description: input.description,
    });
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(&st, executed, &respond_money))
}

/// Transfer from the caller's wallet to another user's wallet of the same currency.
#[utoipa::path(post, path = "/api/v1/transfers", tag = "wallets", security(("bearer" = [])), request_body = TransferRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 201, body = MoneyResponse),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "INSUFFICIENT_FUNDS", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "SELF_TRANSFER and validation errors", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn transfer(
    State(st): State<AppState>,
    caller: AuthUser,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    let req: TransferRequest = body.parse()?;
    let to = body_user(&req.to_user_id, "toUserId")?;
    let currency = parse_currency(req.currency.as_deref())?;
    let amount = parse_amount(&req.amount, currency)?;
    let description = parse_description(req.description.as_deref())?;
    let ctx = user_context(&caller, "POST /transfers", &meta, key, &body);
    let cmd = Command::Transfer(Transfer {
        transaction_id: TransactionId::new_v7(),
        from_user_id: caller.id,
        to_user_id: to,
        currency,
        amount,
        description,
    });
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(&st, executed, &respond_money))
}

/// A user's transaction history across its wallets (or one currency's), newest first.
#[utoipa::path(get, path = "/api/v1/wallets/{userId}/transactions", tag = "wallets", security(("bearer" = [])),
    params(("userId" = String, Path, format = Uuid, description = "Owner (UUID)"),
        ("currency" = Option<String>, Query, pattern = "^([Uu][Ss][Dd]|[Ee][Uu][Rr]|[Gg][Bb][Pp]|[Cc][Hh][Ff]|[Cc][Aa][Dd]|[Aa][Uu][Dd]|[Nn][Zz][Dd]|[Ss][Ee][Kk]|[Nn][Oo][Kk]|[Dd][Kk][Kk]|[Pp][Ll][Nn]|[Jj][Pp][Yy])$", description = "Only this currency's wallet"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, pattern = "^[1-9][0-9]{0,17}$", description = "nextCursor of the previous page"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = TransactionPage),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn transactions(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(user): PathParam,
    q: QueryMap,
) -> Result<Response> {
    let user = UserId(parse_id(&user, "userId")?);
    q.only(&["currency", "limit", "cursor", "minPosition"])?;
    let (limit, before) = crate::routes::page_params(&q, PAGE_ITEMS_MAX)?;
    let currency = match q.0.get("currency") {
        None => None,
        Some(_) => Some(q.currency()?),
    };
    if !caller.can_see(user) {
        return Err(ApiError::forbidden("you may only read your own history"));
    }
    // The wallet's own stream: the rows of a history are its movements.
    let wallet = WalletId::of(user, currency.unwrap_or(Currency::USD));
    let reads = Reads::Stream(StreamId::wallet(wallet));
    let reached = await_position(&st, &caller, q.min_position()?, reads).await?;
    let rows = projections::read::history(
        &st.pool,
        user.0,
        currency.as_ref().map(Currency::code),
        before,
        limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<TransactionView> = rows
        .iter()
        .take(limit as usize)
        .map(TransactionView::of)
        .collect();
    let next_cursor = if more {
        rows.get(limit as usize - 1).map(|r| r.position.to_string())
    } else {
        None
    };
    Ok(with_consistency(
        Json(TransactionPage { items, next_cursor }).into_response(),
        reached,
    ))
}
