//! User queries.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::{StreamId, UserId};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, Result};
use crate::extract::{parse_id, PathParam, QueryMap};
use crate::routes::Reads;
use crate::routes::{await_position, read_or_wait, with_consistency};
use crate::state::AppState;

/// A user as others see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    /// User id.
    pub id: String,
    /// E-mail.
    pub email: String,
    /// Role.
    pub role: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
}

async fn load(st: &AppState, id: Uuid) -> Result<Option<UserView>> {
    let row = read_or_wait(st, &StreamId::user(UserId(id)), || {
        projections::read::user(&st.pool, id)
    })
    .await?;
    Ok(row.map(|r| UserView {
        id: r.id.to_string(),
        email: r.email,
        role: r.role,
        created_at: crate::rfc3339(r.created_at),
        updated_at: crate::rfc3339(r.updated_at),
    }))
}

async fn show(st: &AppState, caller: AuthUser, id: Uuid, q: QueryMap) -> Result<Response> {
    q.only(&["minPosition"])?;
    if !caller.can_see(UserId(id)) {
        return Err(ApiError::forbidden("you may only read your own user"));
    }
    let reached = await_position(
        st,
        &caller,
        q.min_position()?,
        Reads::Stream(StreamId::user(UserId(id))),
    )
    .await?;
    let user = load(st, id)
        .await?
        .ok_or_else(|| ApiError::not_found("USER_NOT_FOUND", "user not found"))?;
    Ok(with_consistency(Json(user).into_response(), reached))
}

/// Who an e-mail address belongs to, for naming the other party of a transfer or contract.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserLookup {
    /// User id.
    pub id: String,
    /// The address, normalised.
    pub email: String,
}

/// The user with an e-mail address (any authenticated user; at most
/// `RATE_LIMIT_LOOKUPS_PER_USER_PER_MINUTE` a minute, 30 by default).
#[utoipa::path(get, path = "/api/v1/users/lookup", operation_id = "lookup_user", tag = "users", security(("bearer" = [])),
    params(("email" = String, Query, format = Email, max_length = 254, description = "The e-mail address (compared as registration normalises it)")),
    responses((status = 200, body = UserLookup),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "USER_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "INVALID_EMAIL", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "RATE_LIMITED", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn lookup(State(st): State<AppState>, caller: AuthUser, q: QueryMap) -> Result<Response> {
    q.only(&["email"])?;
    let raw =
        q.0.get("email")
            .ok_or_else(|| ApiError::bad_request("INVALID_QUERY_PARAMETER", "email is required"))?;
    let email = domain::Email::parse(raw)
        .map_err(|e| ApiError::unprocessable("INVALID_EMAIL", e.to_string()))?;
    st.limits
        .lookups_per_user
        .check(&caller.id.to_string())
        .await
        .map_err(|s| crate::limits::too_many_error(s, "user"))?;
    // The credentials are written with the registration, so someone who registered a
    // moment ago is found before the read models show them.
    let login =
        st.ledger.find_login(&email).await?.ok_or_else(|| {
            ApiError::not_found("USER_NOT_FOUND", "no user has this e-mail address")
        })?;
    Ok(Json(UserLookup {
        id: login.user_id.to_string(),
        email: email.to_string(),
    })
    .into_response())
}

/// The caller's own user.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])),
    params(("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = UserView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "READ_MODEL_BEHIND: it exists, but the read models have not caught up within the wait; retry", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn me(State(st): State<AppState>, caller: AuthUser, q: QueryMap) -> Result<Response> {
    show(&st, caller, caller.id.0, q).await
}

/// A user by id (self, arbiter or admin).
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "User id (UUID)"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = UserView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "READ_MODEL_BEHIND: it exists, but the read models have not caught up within the wait; retry", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn by_id(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    q: QueryMap,
) -> Result<Response> {
    let id = parse_id(&id, "user id")?;
    show(&st, caller, id, q).await
}

/// Body of a suspension.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    /// Why (1 to 500 characters; recorded in the event and the audit trail).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub reason: String,
}

/// An account after its suspension changed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountStatus {
    /// User id.
    pub id: String,
    /// E-mail.
    pub email: String,
    /// Role.
    pub role: String,
    /// `ACTIVE` or `SUSPENDED`.
    pub status: String,
    /// Why it is suspended, while it is.
    pub suspended_reason: Option<String>,
    /// RFC 3339 UTC.
    pub updated_at: String,
    /// Global position of the change.
    pub position: i64,
}

fn respond_status(outcome: &command_handlers::Outcome, position: i64) -> (u16, serde_json::Value) {
    match outcome {
        command_handlers::Outcome::UserStatus(u) => (
            200,
            serde_json::json!(AccountStatus {
                id: u.user_id.to_string(),
                email: u.email.to_string(),
                role: u.role.as_str().into(),
                status: if u.suspended.is_some() {
                    "SUSPENDED"
                } else {
                    "ACTIVE"
                }
                .into(),
                suspended_reason: u.suspended.as_ref().map(|r| r.as_str().to_owned()),
                updated_at: crate::rfc3339(u.recorded_at),
                position,
            }),
        ),
        other => crate::routes::unexpected(other),
    }
}

fn admin_only(caller: &AuthUser) -> Result<()> {
    if caller.role != domain::Role::Admin {
        return Err(ApiError::forbidden(
            "only an admin may suspend or reactivate accounts",
        ));
    }
    Ok(())
}

/// Suspend an account (admins): it cannot log in, and its tokens and WebSockets stop
/// working on every server within a second or two.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/suspend", tag = "users", security(("bearer" = [])),
    request_body = SuspendRequest,
    params(("id" = String, Path, format = Uuid, description = "User id (UUID)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 200, body = AccountStatus),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "USER_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "USER_ALREADY_SUSPENDED, or CANNOT_SUSPEND_SELF (an admin's own account)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn suspend(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    meta: crate::extract::RequestMeta,
    key: crate::extract::IdempotencyKey,
    body: crate::extract::JsonBody,
) -> Result<Response> {
    let id = parse_id(&id, "user id")?;
    admin_only(&caller)?;
    if caller.id == UserId(id) {
        // An admin who locks themselves out may leave nobody able to undo it.
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "CANNOT_SUSPEND_SELF",
            "an admin cannot suspend their own account",
        ));
    }
    let req: SuspendRequest = body.parse()?;
    let reason = crate::extract::parse_description(Some(&req.reason))?.ok_or_else(|| {
        ApiError::unprocessable("INVALID_REASON", "reason must be 1 to 500 characters")
    })?;
    let ctx =
        crate::routes::user_context(&caller, "POST /admin/users/{id}/suspend", &meta, key, &body);
    let cmd = command_handlers::Command::SuspendUser {
        user_id: UserId(id),
        reason,
    };
    change_status(&st, &ctx, UserId(id), cmd).await
}

/// Executes a suspension or reactivation, and forgets this server's remembered reading of
/// the account so that its next request here sees the change at once.
async fn change_status(
    st: &AppState,
    ctx: &command_handlers::CommandContext,
    user: UserId,
    cmd: command_handlers::Command,
) -> Result<Response> {
    let executed = st.ledger.execute(ctx, cmd).await?;
    st.sessions.forget_account(user);
    Ok(crate::routes::render(st, executed, &respond_status))
}

/// Lift an account's suspension (admins).
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/reactivate", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "User id (UUID)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses((status = 200, body = AccountStatus),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "USER_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "USER_NOT_SUSPENDED", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn reactivate(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    meta: crate::extract::RequestMeta,
    key: crate::extract::IdempotencyKey,
    body: crate::extract::JsonBody,
) -> Result<Response> {
    let id = parse_id(&id, "user id")?;
    admin_only(&caller)?;
    let ctx = crate::routes::user_context(
        &caller,
        "POST /admin/users/{id}/reactivate",
        &meta,
        key,
        &body,
    );
    let cmd = command_handlers::Command::ReactivateUser {
        user_id: UserId(id),
    };
    change_status(&st, &ctx, UserId(id), cmd).await
}
