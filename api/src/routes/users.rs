//! User queries.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use domain::UserId;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, Result};
use crate::extract::{parse_id, PathParam, QueryMap};
use crate::routes::{await_position, with_consistency};
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

type UserRow = (Uuid, String, String, DateTime<Utc>, DateTime<Utc>);

async fn load(st: &AppState, id: Uuid) -> Result<Option<UserView>> {
    let row: Option<UserRow> = sqlx::query_as(
        "SELECT id, email, role, created_at, updated_at FROM rm_users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&st.pool)
    .await?;
    Ok(row.map(|(id, email, role, c, u)| UserView {
        id: id.to_string(),
        email,
        role,
        created_at: crate::rfc3339(c),
        updated_at: crate::rfc3339(u),
    }))
}

async fn show(st: &AppState, caller: AuthUser, id: Uuid, q: QueryMap) -> Result<Response> {
    q.only(&["minPosition"])?;
    if !caller.can_see(UserId(id)) {
        return Err(ApiError::forbidden("you may only read your own user"));
    }
    let reached = await_position(st, q.min_position()?).await?;
    let user = load(st, id)
        .await?
        .ok_or_else(|| ApiError::not_found("USER_NOT_FOUND", "user not found"))?;
    Ok(with_consistency(Json(user).into_response(), reached))
}

/// The caller's own user.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])),
    params(("minPosition" = Option<i64>, Query, description = "Wait (up to 2 s) until the read models include this position")),
    responses((status = 200, body = UserView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn me(State(st): State<AppState>, caller: AuthUser, q: QueryMap) -> Result<Response> {
    show(&st, caller, caller.id.0, q).await
}

/// A user by id (self, arbiter or admin).
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id (UUID)"),
        ("minPosition" = Option<i64>, Query, description = "Wait (up to 2 s) until the read models include this position")),
    responses((status = 200, body = UserView),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn by_id(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(id): PathParam,
    q: QueryMap,
) -> Result<Response> {
    let id = parse_id(&id, "user id")?;
    show(&st, caller, id, q).await
}
