//! Registration and login.

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use command_handlers::{Actor, Command, Outcome};
use domain::{Email, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::auth::{hash_password, verify_password};
use crate::error::{ApiError, Result};
use crate::extract::{IdempotencyKey, JsonBody, RequestMeta};
use crate::routes::{command_context, render, unexpected};
use crate::state::AppState;

/// Shortest password accepted, in characters.
const PASSWORD_CHARS_MIN: usize = 8;
/// Longest password accepted, in characters (argon2 input stays bounded).
const PASSWORD_CHARS_MAX: usize = 128;

/// Registration or login body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// E-mail address (trimmed and lower-cased).
    #[schema(example = "user@example.com", format = Email, max_length = 254)]
    pub email: String,
    /// 8 to 128 characters.
    #[schema(example = "password123", min_length = 8, max_length = 128)]
    pub password: String,
}

/// A registered user.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredUser {
    /// User id.
    pub id: String,
    /// Normalised e-mail.
    pub email: String,
    /// `user`, `arbiter`, `admin` or `service`.
    pub role: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Global position of the registration's last event.
    pub position: i64,
}

/// The user part of a login response.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginUser {
    /// User id.
    pub id: String,
    /// E-mail.
    pub email: String,
    /// Role.
    pub role: String,
}

/// A login response.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// The bearer token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: i64,
    /// Single use: `POST /auth/refresh` trades it for a new access token and the next
    /// refresh token. Presented a second time, it ends the whole session.
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: i64,
    /// Who logged in.
    pub user: LoginUser,
}

fn check_password(p: &str) -> Result<()> {
    let n = p.chars().count();
    if !(PASSWORD_CHARS_MIN..=PASSWORD_CHARS_MAX).contains(&n) {
        return Err(ApiError::unprocessable(
            "INVALID_PASSWORD",
            format!("password must be {PASSWORD_CHARS_MIN} to {PASSWORD_CHARS_MAX} characters"),
        ));
    }
    Ok(())
}

fn respond_registered(outcome: &Outcome, position: i64) -> (u16, Value) {
    match outcome {
        Outcome::Registered(r) => (
            201,
            json!(RegisteredUser {
                id: r.user_id.to_string(),
                email: r.email.to_string(),
                role: r.role.as_str().into(),
                created_at: crate::rfc3339(r.recorded_at),
                position,
            }),
        ),
        other => unexpected(other),
    }
}

/// Register a user; also opens the user's USD wallet.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = Credentials,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    responses(
        (status = 201, body = RegisteredUser, links(("GetUser" = (operation_ref = "#/paths/~1api~1v1~1users~1{id}/get", parameters(("id" = "$response.body#/id")))), ("GetWallet" = (operation_ref = "#/paths/~1api~1v1~1wallets~1{userId}/get", parameters(("userId" = "$response.body#/id")))), ("UserContracts" = (operation_ref = "#/paths/~1api~1v1~1contracts~1user~1{userId}/get", parameters(("userId" = "$response.body#/id")))))),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "EMAIL_TAKEN", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "RATE_LIMITED (per client address)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn register(
    State(st): State<AppState>,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response> {
    let req: Credentials = body.parse()?;
    let email =
        Email::parse(&req.email).map_err(|e| ApiError::from(domain::DomainError::from(e)))?;
    check_password(&req.password)?;
    let ctx = command_context(
        Actor::System,
        &format!("register:{email}"),
        "POST /auth/register",
        &meta,
        key,
        &body,
    );
    let password_hash = hash_password(req.password).await?;
    let user_id = UserId::new_v7();
    let executed = st
        .ledger
        .execute(
            &ctx,
            Command::Register {
                user_id,
                email,
                password_hash,
            },
        )
        .await?;
    Ok(render(&st, executed, &respond_registered))
}

/// Log in and receive a bearer token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = Credentials,
    responses(
        (status = 200, body = LoginResponse),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown e-mail or wrong password (indistinguishable)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "ACCOUNT_SUSPENDED (the password was right)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "LOGIN_THROTTLED (after 5 failed logins for the address, attempts wait 1 s, doubling, at most 15 min) or RATE_LIMITED (per client address)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn login(State(st): State<AppState>, body: JsonBody) -> Result<Json<LoginResponse>> {
    let req: Credentials = body.parse()?;
    let denied = || ApiError::unauthorized("invalid email or password");
    if req.password.chars().count() > PASSWORD_CHARS_MAX {
        return Err(denied());
    }
    crate::login_guard::attempt(&st.pool, &req.email).await?;
    let email = Email::parse(&req.email).ok();
    let record = match &email {
        Some(e) => st.ledger.find_login(e).await?,
        None => None,
    };
    let ok = verify_password(
        req.password,
        record.as_ref().map(|r| r.password_hash.clone()),
        st.dummy_hash.clone(),
    )
    .await?;
    let (Some(record), Some(email), true) = (record, email, ok) else {
        return Err(denied());
    };
    crate::login_guard::succeeded(&st.pool, &req.email).await?;
    let user = st.ledger.user(record.user_id).await?;
    if user.state.suspended.is_some() {
        return Err(ApiError::suspended());
    }
    let role = user.state.role;
    st.sessions.forget_account(record.user_id);
    let expires = chrono::Utc::now() + chrono::Duration::seconds(st.refresh_ttl_seconds);
    let (sid, refresh_token) =
        crate::sessions::Sessions::start(&st.pool, record.user_id, expires).await?;
    let token = st.tokens.issue_in(record.user_id, role, Some(sid))?;
    Ok(Json(LoginResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: st.tokens.ttl_seconds,
        refresh_token,
        refresh_expires_in: st.refresh_ttl_seconds,
        user: LoginUser {
            id: record.user_id.to_string(),
            email: email.to_string(),
            role: role.as_str().into(),
        },
    }))
}

/// End the session of the presented token: it, and every token of the same login, stop
/// working on every server within a second or two.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "The session has ended"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "SESSION_UNKNOWN: a token minted before sessions existed; it ends at its expiry", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn logout(
    State(st): State<AppState>,
    caller: crate::auth::AuthUser,
) -> Result<axum::http::StatusCode> {
    let sid = caller.sid.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "SESSION_UNKNOWN",
            "this token belongs to no session; it ends at its expiry",
        )
    })?;
    st.sessions.end(&st.pool, sid).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Body of `POST /auth/refresh`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token of the last login or refresh.
    pub refresh_token: String,
}

/// Trade a refresh token for a new access token and the next refresh token (the one given
/// is spent: presenting it again ends the session everywhere).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = LoginResponse),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "INVALID_REFRESH_TOKEN: unknown, expired, spent (the session is then ended) or of an ended session", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "ACCOUNT_SUSPENDED", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "RATE_LIMITED (per client address)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn refresh(State(st): State<AppState>, body: JsonBody) -> Result<Json<LoginResponse>> {
    let req: RefreshRequest = body.parse()?;
    if req.refresh_token.len() > 256 {
        return Err(ApiError::unauthorized("the refresh token is unknown"));
    }
    let expires = chrono::Utc::now() + chrono::Duration::seconds(st.refresh_ttl_seconds);
    let (user_id, sid, refresh_token) = st
        .sessions
        .refresh(&st.pool, &req.refresh_token, expires)
        .await?;
    st.sessions.forget_account(user_id);
    let user = st.ledger.user(user_id).await?;
    if user.state.suspended.is_some() {
        return Err(ApiError::suspended());
    }
    let email = user
        .state
        .email
        .clone()
        .ok_or_else(|| ApiError::unauthorized("the refresh token's user does not exist"))?;
    let role = user.state.role;
    Ok(Json(LoginResponse {
        access_token: st.tokens.issue_in(user_id, role, Some(sid))?,
        token_type: "Bearer",
        expires_in: st.tokens.ttl_seconds,
        refresh_token,
        refresh_expires_in: st.refresh_ttl_seconds,
        user: LoginUser {
            id: user_id.to_string(),
            email: email.to_string(),
            role: role.as_str().into(),
        },
    }))
}
