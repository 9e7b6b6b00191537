//! Frozen wallets: an admin freezes a user's wallet (it keeps receiving money, sends
//! none) and lifts the freeze. The rule is the domain's (`domain::wallet::freeze`); a
//! wallet's view shows whether it is frozen (`routes::wallets`).

use axum::extract::State;
use axum::response::Response;
use command_handlers::{Command, Outcome};
use domain::UserId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::Result;
use crate::extract::{parse_currency, parse_id, IdempotencyKey, JsonBody, PathParam, RequestMeta};
use crate::routes::{render, user_context};
use crate::state::AppState;

/// A wallet right after an admin froze or unfroze it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalletStatusView {
    /// Wallet id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Available balance, decimal string.
    pub balance: String,
    /// Whether it is frozen now.
    pub frozen: bool,
    /// Why (absent when not frozen).
    pub frozen_reason: Option<String>,
    /// RFC 3339 UTC.
    pub updated_at: String,
    /// Global position reached.
    pub position: i64,
}

/// Body of `POST /admin/wallets/{userId}/freeze`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeRequest {
    /// ISO 4217 code; USD when absent.
    #[schema(
        pattern = "^([Uu][Ss][Dd]|[Ee][Uu][Rr]|[Gg][Bb][Pp]|[Cc][Hh][Ff]|[Cc][Aa][Dd]|[Aa][Uu][Dd]|[Nn][Zz][Dd]|[Ss][Ee][Kk]|[Nn][Oo][Kk]|[Dd][Kk][Kk]|[Pp][Ll][Nn]|[Jj][Pp][Yy])$"
    )]
    pub currency: Option<String>,
    /// Why (1 to 500 characters), shown to admins.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub reason: String,
}

/// Body of `POST /admin/wallets/{userId}/unfreeze` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnfreezeRequest {
    /// ISO 4217 code; USD when absent.
    #[schema(
        pattern = "^([Uu][Ss][Dd]|[Ee][Uu][Rr]|[Gg][Bb][Pp]|[Cc][Hh][Ff]|[Cc][Aa][Dd]|[Aa][Uu][Dd]|[Nn][Zz][Dd]|[Ss][Ee][Kk]|[Nn][Oo][Kk]|[Dd][Kk][Kk]|[Pp][Ll][Nn]|[Jj][Pp][Yy])$"
    )]
    pub currency: Option<String>,
}

fn respond_status(outcome: &Outcome, position: i64) -> (u16, Value) {
    match outcome {
        Outcome::WalletStatus(w) => (
            200,
            json!(WalletStatusView {
                id: w.wallet_id.to_string(),
                user_id: w.user_id.to_string(),
                currency: w.currency.code().into(),
                balance: w.currency.format(w.balance),
                frozen: w.frozen.is_some(),
                frozen_reason: w.frozen.clone(),
                updated_at: crate::rfc3339(w.recorded_at),
                position,
            }),
        ),
        other => crate::routes::unexpected(other),
    }
}

/// Freeze a user's wallet (admin): it keeps receiving money, but transfers, withdrawals and
/// contract fundings from it are refused (409 `WALLET_FROZEN`) until it is unfrozen;
/// contracts it funded already go on.
#[utoipa::path(post, path = "/api/v1/admin/wallets/{userId}/freeze", tag = "wallets", security(("bearer" = [])), request_body = FreezeRequest,
    params(("userId" = String, Path, format = Uuid, description = "The wallet's owner"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 200, body = WalletStatusView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "WALLET_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "WALLET_ALREADY_FROZEN", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn freeze(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(user): PathParam,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    let user = UserId(parse_id(&user, "userId")?);
    let req: FreezeRequest = body.parse()?;
    let target = (user, req.currency.as_deref(), Some(req.reason));
    set_frozen(&st, caller, target, meta, key, &body).await
}

/// Lift a wallet's freeze (admin).
#[utoipa::path(post, path = "/api/v1/admin/wallets/{userId}/unfreeze", tag = "wallets", security(("bearer" = [])), request_body(content = Option<UnfreezeRequest>),
    params(("userId" = String, Path, format = Uuid, description = "The wallet's owner"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 200, body = WalletStatusView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "WALLET_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "WALLET_NOT_FROZEN", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn unfreeze(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(user): PathParam,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    let user = UserId(parse_id(&user, "userId")?);
    let req: UnfreezeRequest = body.parse()?;
    let target = (user, req.currency.as_deref(), None);
    set_frozen(&st, caller, target, meta, key, &body).await
}

/// Freezes (`reason`) or unfreezes (`None`) the wallet of `user` in `currency`.
async fn set_frozen(
    st: &AppState,
    caller: AuthUser,
    (user, currency, reason): (UserId, Option<&str>, Option<String>),
    meta: RequestMeta,
    key: IdempotencyKey,
    body: &JsonBody,
) -> Result<Response> {
    let currency = parse_currency(currency)?;
    let verb = if reason.is_some() {
        "freeze"
    } else {
        "unfreeze"
    };
    let cmd = Command::SetWalletFrozen {
        actor: domain::Actor::User {
            id: caller.id,
            role: caller.role,
        },
        user_id: user,
        currency,
        reason,
        now: st.clock.timestamp(),
    };
    let endpoint = format!("POST /admin/wallets/{}/{verb}", user.0);
    let ctx = user_context(&caller, &endpoint, &meta, key, body);
    let executed = st.ledger.execute(&ctx, cmd).await?;
    Ok(render(st, executed, &respond_status))
}
