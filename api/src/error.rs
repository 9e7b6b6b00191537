//! The API's one error type, rendered as RFC 9457 `application/problem+json`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use command_handlers::CommandError;
use domain::DomainError;
use serde::Serialize;
use utoipa::ToSchema;

/// `type Result<T> = Result<T, ApiError>` for handlers.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// A problem detail body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Stable machine-readable code, such as `INSUFFICIENT_FUNDS`.
    pub code: String,
}

/// An error answered to the client. 5xx details are logged, never shown.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Explanation for the client.
    pub detail: String,
    /// Seconds after which to retry, for 429/503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, a code and a detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 422 with a code.
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", detail)
    }

    /// 404 with a code.
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    /// 403 `ACCOUNT_SUSPENDED`: an admin suspended the account.
    pub fn suspended() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "ACCOUNT_SUSPENDED",
            "the account is suspended",
        )
    }

    /// 500: the cause is logged here and hidden from the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "an internal error occurred",
        )
    }

    /// 503: a dependency is unavailable; retry later.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the service is temporarily unavailable",
        );
        e.retry_after = Some(1);
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error").to_owned();
        let body = Problem {
            kind: format!(
                "urn:escrow-ledger:problem:{}",
                self.code.to_ascii_lowercase().replace('_', "-")
            ),
            title,
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code.to_owned(),
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        // Exhaustive on purpose: a new rejection must be given its status here.
        let status = match &e {
            DomainError::UnknownUser
            | DomainError::WalletNotFound(_)
            | DomainError::ContractNotFound
            | DomainError::DisputeNotFound
            | DomainError::MilestoneNotFound(_)
            | DomainError::PayinNotFound
            | DomainError::PayoutNotFound
            | DomainError::WebhookNotFound => StatusCode::NOT_FOUND,
            DomainError::InsufficientFunds { .. }
            | DomainError::UserAlreadyExists
            | DomainError::RoleAlreadyHeld(_)
            | DomainError::InvalidTransition { .. } => StatusCode::CONFLICT,
            DomainError::Forbidden(_) => StatusCode::FORBIDDEN,
            DomainError::Money(_)
            | DomainError::Email(_)
            | DomainError::Description(_)
            | DomainError::SelfTransfer
            | DomainError::SameParties
            | DomainError::ExceedsHeld { .. }
            | DomainError::SplitMismatch { .. }
            | DomainError::InvalidText(_)
            | DomainError::InvalidFundBy(_)
            | DomainError::InvalidFee(_)
            | DomainError::InvalidDetails(_)
            | DomainError::InvalidMilestones(_)
            | DomainError::InvalidWebhook(_)
            | DomainError::UnknownEventFilter(_)
            | DomainError::MilestonesMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Domain(d) => d.into(),
            CommandError::EmailTaken => {
                ApiError::new(StatusCode::CONFLICT, "EMAIL_TAKEN", e.to_string())
            }
            CommandError::IdempotencyMismatch => {
                ApiError::unprocessable("IDEMPOTENCY_KEY_REUSED", e.to_string())
            }
            CommandError::Busy => {
                let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "BUSY", e.to_string());
                err.retry_after = Some(1);
                err
            }
            CommandError::Store(s) => store_error(s),
            CommandError::Unavailable(m) => ApiError::unavailable(m),
            CommandError::Internal(m) => ApiError::internal(m),
            CommandError::Decode(d) => ApiError::internal(d),
        }
    }
}

/// Database trouble: a lost connection, a pool timeout, a server shutting down or out of
/// resources is a 503 (retry, with the same `Idempotency-Key`); anything else a 500.
pub fn store_error(e: event_store::StoreError) -> ApiError {
    if e.is_transient() {
        ApiError::unavailable(e)
    } else {
        ApiError::internal(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        store_error(event_store::StoreError::from(e))
    }
}

impl From<event_store::StoreError> for ApiError {
    fn from(e: event_store::StoreError) -> Self {
        store_error(e)
    }
}
