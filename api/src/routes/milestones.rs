//! A contract's milestones: how they are asked for on creation, how they are shown, and the
//! commands on one of them (deliver, release, refund). The rules are the domain's
//! (`domain::contract::Milestones`).

use axum::extract::State;
use axum::response::Response;
use domain::contract::{Milestone, MilestoneTerms, Milestones};
use domain::Currency;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::clock::to_utc;
use crate::error::{ApiError, Result};
use crate::extract::{parse_amount, IdempotencyKey, JsonBody, PathPair, RequestMeta};
use crate::routes::contracts::{contract_command, Action};
use crate::state::AppState;

/// One stage of a contract.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MilestoneView {
    /// Counted from 1.
    pub number: u16,
    /// What is delivered.
    pub title: String,
    /// Its part of the price, decimal string.
    #[schema(example = "400.00")]
    pub amount: String,
    /// What escrow holds for it now, decimal string.
    pub held_amount: String,
    /// `PENDING`, `DELIVERED`, `RELEASED`, `REFUNDED` or `SETTLED`.
    pub status: String,
    /// Hours the buyer has after its delivery.
    pub inspection_period_hours: Option<u32>,
    /// When the seller delivered it (RFC 3339).
    pub delivered_at: Option<String>,
    /// When its held money releases by itself (RFC 3339).
    pub auto_release_at: Option<String>,
}

fn view(m: &Milestone, currency: Currency) -> MilestoneView {
    MilestoneView {
        number: m.number,
        title: m.title.clone(),
        amount: currency.format(m.amount),
        held_amount: currency.format(m.held_amount),
        status: m.status.as_str().to_owned(),
        inspection_period_hours: m.inspection_period_hours,
        delivered_at: m.delivered_at.map(|t| crate::rfc3339(to_utc(t))),
        auto_release_at: m.auto_release_at.map(|t| crate::rfc3339(to_utc(t))),
    }
}

/// The views of a contract's milestones.
pub fn views(milestones: &Milestones, currency: Currency) -> Vec<MilestoneView> {
    milestones.0.iter().map(|m| view(m, currency)).collect()
}

/// One stage in `POST /contracts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MilestoneRequest {
    /// 1 to 200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub title: String,
    /// Its part of the price: a plain decimal as a JSON number or string (`400`, `"400.00"`),
    /// no exponent.
    #[schema(schema_with = crate::openapi::amount_schema)]
    pub amount: Value,
    /// Its own inspection window (1 to 8784 hours); the contract's when absent.
    #[schema(minimum = 1, maximum = 8784)]
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub inspection_period_hours: Option<u32>,
}

/// The stages asked for, their amounts checked against the contract's currency (the domain
/// checks the rest).
pub fn parse_terms(asked: &[MilestoneRequest], currency: Currency) -> Result<Vec<MilestoneTerms>> {
    asked
        .iter()
        .map(|m| {
            Ok(MilestoneTerms {
                title: m.title.clone(),
                amount: parse_amount(&m.amount, currency)?,
                inspection_period_hours: m.inspection_period_hours,
            })
        })
        .collect()
}

/// Parses a milestone number from the path (1 to 50).
fn parse_number(raw: &str) -> Result<u16> {
    raw.parse::<u16>()
        .ok()
        .filter(|n| (1..=domain::contract::MILESTONES_MAX as u16).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(
                "INVALID_PATH",
                "the milestone number must be a whole number from 1 to 50",
            )
        })
}

macro_rules! milestone_action {
    ($(#[$doc:meta])* $name:ident, $action:expr, $path:literal, $operation:literal) => {
        $(#[$doc])*
        #[utoipa::path(post, path = $path, operation_id = $operation, tag = "contracts", security(("bearer" = [])),
            params(("id" = String, Path, format = Uuid, description = "Contract id"),
                ("n" = u16, Path, minimum = 1, maximum = 50, description = "Milestone number, from 1"),
                ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
            responses((status = 200, body = crate::routes::contracts::ContractView),
                (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 404, description = "CONTRACT_NOT_FOUND or MILESTONE_NOT_FOUND", body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 409, description = "An illegal transition (code names the rule: MILESTONE_CLOSED, ALREADY_DELIVERED, CONTRACT_DISPUTED, …)", body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
        pub async fn $name(State(st): State<AppState>, caller: AuthUser, PathPair(id, n): PathPair, meta: RequestMeta, key: IdempotencyKey, body: JsonBody) -> Result<Response> {
            let n = parse_number(&n)?;
            contract_command(&st, caller, &id, Some(n), meta, key, body, $action).await
        }
    };
}

milestone_action!(
    /// The seller marks one milestone delivered; its own inspection window (if any) starts.
    deliver, Action::Deliver, "/api/v1/contracts/{id}/milestones/{n}/deliver", "deliver_milestone"
);
milestone_action!(
    /// The buyer releases everything one milestone holds to the seller (`PAYMENT`).
    release, Action::Release, "/api/v1/contracts/{id}/milestones/{n}/release", "release_milestone"
);
milestone_action!(
    /// The seller refunds everything one milestone holds to the buyer (`REFUND`).
    refund, Action::Refund, "/api/v1/contracts/{id}/milestones/{n}/refund", "refund_milestone"
);
