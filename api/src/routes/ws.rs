//! `GET /api/v1/ws`: live notifications over WebSocket, and `POST /api/v1/notifications`.

use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::{ApiError, Result};
use crate::extract::{parse_body_id, JsonBody, QueryMap};
use crate::state::AppState;

/// How often the server pings an idle connection.
const PING_EVERY: Duration = Duration::from_secs(20);
/// A connection that has not answered for this long is closed.
const PONG_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest message a client may send (clients only answer pings; nothing they send is
/// read): a larger one closes the connection with 1009.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 4 * 1024;
/// Close code when the token the connection was opened with expires.
const TOKEN_EXPIRED: u16 = 4001;

/// A connection registered with the hub, forgotten when dropped: also when the upgrade
/// never completes and the callback that owns it is dropped unrun.
struct Registered {
    st: AppState,
    user: uuid::Uuid,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.st.hub.unregister(self.user, self.id);
    }
}

/// Open a WebSocket for live notifications. Authenticate with `Authorization: Bearer` or,
/// for browsers, `?access_token=`; a missing or invalid token is refused before upgrade.
#[utoipa::path(get, path = "/api/v1/ws", tag = "notifications",
    params(("access_token" = Option<String>, Query, description = "The JWT, for clients that cannot set headers")),
    responses((status = 101, description = "Switching protocols: JSON messages follow"),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn ws(
    State(st): State<AppState>,
    headers: HeaderMap,
    q: QueryMap,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response> {
    let bearer = crate::auth::bearer_token(&headers)?.map(str::to_owned);
    let token = bearer
        .or_else(|| q.0.get("access_token").cloned())
        .ok_or_else(|| {
            ApiError::unauthorized("missing token: send Authorization: Bearer or ?access_token=")
        })?;
    let (user, exp) = st.tokens.verify_until(token.trim())?;
    let user = crate::auth::current(&st, user).await?;
    let upgrade = upgrade.map_err(|_| {
        ApiError::bad_request("NOT_A_WEBSOCKET", "this endpoint speaks WebSocket only")
    })?;
    let staff = matches!(user.role, domain::Role::Arbiter | domain::Role::Admin);
    let Some((id, rx)) = st
        .hub
        .try_register(user.id.0, staff, st.ws_connections_per_user_max)
    else {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_CONNECTIONS",
            format!(
                "at most {} WebSockets per user on this server; close one first",
                st.ws_connections_per_user_max
            ),
        );
        e.retry_after = Some(1);
        return Err(e);
    };
    let registered = Registered {
        st: st.clone(),
        user: user.id.0,
        id,
    };
    // Seconds from now until the token's `exp` (already past: at once).
    let left = u64::try_from(exp - Utc::now().timestamp()).unwrap_or(0);
    let expires = tokio::time::Instant::now() + Duration::from_secs(left);
    Ok(upgrade
        .max_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .max_frame_size(CLIENT_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| serve(st, user, registered, rx, expires, socket)))
}

async fn serve(
    st: AppState,
    user: AuthUser,
    registered: Registered,
    mut rx: tokio::sync::mpsc::Receiver<String>,
    expires: tokio::time::Instant,
    mut socket: WebSocket,
) {
    st.hub.wait_subscribed().await;
    let hello = json!({"type": "hello", "userId": user.id.to_string()}).to_string();
    let _ = socket.send(Message::Text(hello.into())).await;
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut standing = tokio::time::interval(crate::sessions::FRESH_FOR);
    let mut last_seen = Instant::now();
    let mut shutdown = st.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                let _ = socket.send(Message::Close(Some(CloseFrame { code: 1001, reason: "server shutting down".into() }))).await;
                break;
            }
            queued = rx.recv() => match queued {
                Some(text) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                None => {
                    // The hub dropped us: the client reads slower than events arrive.
                    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1008, reason: "too slow".into() }))).await;
                    break;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    // Most often a message over CLIENT_MESSAGE_BYTES_MAX.
                    tracing::debug!(error = %e, "closing a WebSocket on a bad client message");
                    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1009, reason: "message too big or malformed".into() }))).await;
                    break;
                }
                Some(Ok(_)) => last_seen = Instant::now(),
            },
            _ = standing.tick() => {
                // A logout, a suspension or a role change ends the socket too.
                let code = match crate::auth::current(&st, user).await {
                    Ok(now) if now.role == user.role => None,
                    Ok(_) => Some((TOKEN_EXPIRED, "role changed: reconnect")),
                    Err(e) if e.code == "ACCOUNT_SUSPENDED" => Some((1008, "account suspended")),
                    Err(e) if e.status == StatusCode::UNAUTHORIZED => Some((TOKEN_EXPIRED, "session ended")),
                    // The store did not answer: keep the socket, ask again next time.
                    Err(_) => None,
                };
                if let Some((code, reason)) = code {
                    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                    break;
                }
            }
            _ = tokio::time::sleep_until(expires) => {
                let _ = socket.send(Message::Close(Some(CloseFrame { code: TOKEN_EXPIRED, reason: "token expired".into() }))).await;
                break;
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > PONG_TIMEOUT || socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(registered);
}

/// Body of `POST /notifications`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotificationRequest {
    /// The recipient.
    #[schema(format = Uuid)]
    pub user_id: String,
    /// A short type for clients to switch on (1 to 64 characters, not only whitespace).
    #[serde(rename = "type")]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[\\s\\S]*[^\\u0009-\\u000D\\u0020\\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][\\s\\S]*$"
    )]
    pub kind: String,
    /// The text (1 to 2000 characters, not only whitespace). The pattern lists the characters
    /// Unicode counts as whitespace (what the handler's `trim` removes), because `\s` means
    /// different sets in different regex engines.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = "^[\\s\\S]*[^\\u0009-\\u000D\\u0020\\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][\\s\\S]*$"
    )]
    pub message: String,
}

/// Accepted for delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationAccepted {
    /// Always `queued`: delivered to the recipient's open connections, on every server.
    pub status: &'static str,
}

/// Push a custom message to a user's open connections (admins; the seed's `POST /notify`).
#[utoipa::path(post, path = "/api/v1/notifications", tag = "notifications", security(("bearer" = [])), request_body = NotificationRequest,
    responses((status = 202, body = NotificationAccepted),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn notify(
    State(st): State<AppState>,
    caller: AuthUser,
    body: JsonBody,
) -> Result<Response> {
    if caller.role != domain::Role::Admin {
        return Err(ApiError::forbidden("only admins send notifications"));
    }
    let req: NotificationRequest = body.parse()?;
    let user = parse_body_id(&req.user_id, "userId")?;
    if req.kind.trim().is_empty() || req.kind.chars().count() > 64 {
        return Err(ApiError::unprocessable(
            "INVALID_TEXT",
            "type must be 1 to 64 characters",
        ));
    }
    if req.message.trim().is_empty() || req.message.chars().count() > 2000 {
        return Err(ApiError::unprocessable(
            "INVALID_TEXT",
            "message must be 1 to 2000 characters",
        ));
    }
    let nats = st
        .nats
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("no NATS connection"))?;
    let payload = json!({
        "type": "notification",
        "userId": user,
        "notificationType": req.kind,
        "message": req.message,
        "from": caller.id.to_string(),
        "createdAt": crate::rfc3339(Utc::now()),
    });
    nats.publish(
        crate::notify::notification_subject(&st.subject_prefix, Some(user)),
        payload.to_string().into_bytes(),
    )
    .await
    .map_err(ApiError::unavailable)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(NotificationAccepted { status: "queued" }),
    )
        .into_response())
}

/// Push a custom message at the seed's path (`POST /notify`): the same as
/// `POST /notifications`.
#[utoipa::path(post, path = "/api/v1/notify", tag = "notifications", security(("bearer" = [])), request_body = NotificationRequest,
    responses((status = 202, body = NotificationAccepted),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn notify_at_seed_path(
    st: State<AppState>,
    caller: AuthUser,
    body: JsonBody,
) -> Result<Response> {
    notify(st, caller, body).await
}
