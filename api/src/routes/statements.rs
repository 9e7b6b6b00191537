//! Statements: one wallet's movements over a period, with the opening balance, the
//! balance after each movement, the closing balance and the net total per type, as JSON
//! or CSV (RFC 4180). Streamed page by page from the read models, so a period of a million
//! movements is served in the memory of one page.
//!
//! Opening + every movement = closing, by construction: the opening is the balance before
//! the first movement listed, and each movement's balance after is the projection's
//! running balance, which `verify` checks against the events.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use domain::{Currency, Role, StreamId, UserId, WalletId};
use futures::stream::{self, StreamExt};
use projections::read::TransactionRow;
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, Result};
use crate::extract::{parse_id, PathParam, QueryMap};
use crate::routes::wallets::{parse_instant, TransactionView};
use crate::routes::{await_position, read_or_wait, with_consistency, Reads};
use crate::state::AppState;

/// Movements read per page while streaming.
const PAGE_ROWS: i64 = 500;
/// The longest period one statement covers.
const PERIOD_DAYS_MAX: i64 = 3_653;

/// A statement (the JSON form; the body is streamed in this field order).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    /// The wallet's owner.
    pub user_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Start of the period (inclusive), RFC 3339 UTC.
    pub from: String,
    /// End of the period (exclusive), RFC 3339 UTC.
    pub to: String,
    /// The available balance before the period's first movement, decimal string.
    pub opening_balance: String,
    /// Every movement of the period, oldest first, each with the balance after it.
    pub items: Vec<TransactionView>,
    /// The balance after the period's last movement: the opening balance plus every
    /// movement.
    pub closing_balance: String,
    /// Net amount per movement type (credits minus debits), decimal strings: the opening
    /// balance plus these is the closing balance.
    pub totals: BTreeMap<String, String>,
}

/// The CSV header row.
const CSV_HEADER: &str = "id,createdAt,type,direction,amount,currency,balanceAfter,description,counterpartyUserId,counterpartyEmail,contractId\r\n";

/// A field as RFC 4180 writes it: quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv_row(v: &TransactionView) -> String {
    let fields = [
        v.id.as_str(),
        v.created_at.as_str(),
        v.kind.as_str(),
        v.direction.as_deref().unwrap_or(""),
        v.amount.as_str(),
        v.currency.as_str(),
        v.balance_after.as_deref().unwrap_or(""),
        v.description.as_deref().unwrap_or(""),
        v.counterparty_user_id.as_deref().unwrap_or(""),
        v.counterparty_email.as_deref().unwrap_or(""),
        v.contract_id.as_deref().unwrap_or(""),
    ];
    let mut line = fields.map(csv_field).join(",");
    line.push_str("\r\n");
    line
}

/// A movement's signed effect on the wallet.
fn signed(r: &TransactionRow) -> Decimal {
    if r.direction.as_deref() == Some("IN") {
        r.amount
    } else {
        -r.amount
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Json,
    Csv,
}

/// Where a streamed statement stands between pages.
struct Cursor {
    st: AppState,
    user: Uuid,
    wallet: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    currency: Currency,
    format: Format,
    /// The page read before the body started, served first.
    first: Option<Vec<TransactionRow>>,
    after: i64,
    closing: Decimal,
    totals: BTreeMap<String, Decimal>,
    wrote_item: bool,
    done: bool,
}

impl Cursor {
    /// The next chunk of the body, or `None` at its end.
    async fn next_chunk(&mut self) -> Option<std::io::Result<String>> {
        if self.done {
            return None;
        }
        let page = match self.first.take() {
            Some(p) => p,
            None => match projections::read::statement_page(
                &self.st.pool,
                self.user,
                self.wallet,
                self.from,
                self.to,
                self.after,
                PAGE_ROWS,
            )
            .await
            {
                Ok(p) => p,
                Err(e) => {
                    self.done = true;
                    // The status is sent: the client sees the body end early.
                    tracing::error!(error = %e, "a statement stopped part-way");
                    return Some(Err(std::io::Error::other(e)));
                }
            },
        };
        if page.is_empty() {
            self.done = true;
            return Some(Ok(self.ending()));
        }
        let mut out = String::with_capacity(page.len() * 256);
        for r in &page {
            self.after = r.position;
            if let Some(b) = r.balance_after {
                self.closing = b;
            }
            *self.totals.entry(r.kind.clone()).or_default() += signed(r);
            let v = TransactionView::of(r);
            match self.format {
                Format::Csv => out.push_str(&csv_row(&v)),
                Format::Json => {
                    if self.wrote_item {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(&v).unwrap_or_default());
                }
            }
            self.wrote_item = true;
        }
        Some(Ok(out))
    }

    /// What follows the last movement.
    fn ending(&self) -> String {
        match self.format {
            Format::Csv => String::new(),
            Format::Json => {
                let totals: BTreeMap<&String, String> = self
                    .totals
                    .iter()
                    .map(|(k, v)| (k, self.currency.format(*v)))
                    .collect();
                format!(
                    "],\"closingBalance\":{},\"totals\":{}}}",
                    serde_json::Value::String(self.currency.format(self.closing)),
                    serde_json::to_string(&totals).unwrap_or_else(|_| "{}".into())
                )
            }
        }
    }
}

fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request("INVALID_QUERY_PARAMETER", detail)
}

/// A wallet's statement for a period (its owner, admins): every movement with the balance
/// after it, the opening and closing balances and the net total per type; JSON or CSV.
#[utoipa::path(get, path = "/api/v1/wallets/{userId}/statement", operation_id = "wallet_statement", tag = "wallets", security(("bearer" = [])),
    params(("userId" = String, Path, format = Uuid, description = "Owner (UUID)"),
        ("from" = Option<String>, Query, format = DateTime, description = "Start (inclusive), RFC 3339; default: when the wallet was opened"),
        ("to" = Option<String>, Query, format = DateTime, description = "End (exclusive), RFC 3339; default: now. At most ten years after `from`, and not before it (422 `INVALID_PERIOD`)"),
        ("currency" = Option<String>, Query, pattern = "^([Uu][Ss][Dd]|[Ee][Uu][Rr]|[Gg][Bb][Pp]|[Cc][Hh][Ff]|[Cc][Aa][Dd]|[Aa][Uu][Dd]|[Nn][Zz][Dd]|[Ss][Ee][Kk]|[Nn][Oo][Kk]|[Dd][Kk][Kk]|[Pp][Ll][Nn]|[Jj][Pp][Yy])$", description = "ISO 4217 code, default USD"),
        ("format" = Option<String>, Query, pattern = "^(json|csv)$", description = "`json` (default) or `csv` (RFC 4180, a header row, decimal strings, UTC times)"),
        ("minPosition" = Option<i64>, Query, minimum = 0, description = "Wait (up to READ_WAIT_MS, 2 s by default) until the read models include this position; without it, they include your own last command (0: no wait)")),
    responses((status = 200, body = Statement, content_type = "application/json"),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "READ_MODEL_BEHIND: it exists, but the read models have not caught up within the wait; retry", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn statement(
    State(st): State<AppState>,
    caller: AuthUser,
    PathParam(user): PathParam,
    q: QueryMap,
) -> Result<Response> {
    let user = UserId(parse_id(&user, "userId")?);
    q.only(&["from", "to", "currency", "format", "minPosition"])?;
    let currency = q.currency()?;
    let format = match q.0.get("format").map(String::as_str) {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some(_) => return Err(bad("format must be json or csv")),
    };
    let to = match q.0.get("to") {
        None => st.clock.now(),
        Some(t) => parse_instant(t, "to")?,
    };
    let from = match q.0.get("from") {
        None => None,
        Some(t) => Some(parse_instant(t, "from")?),
    };
    // An order between two parameters, which the document cannot state: 422.
    if from.is_some_and(|f| f > to) {
        return Err(ApiError::unprocessable(
            "INVALID_PERIOD",
            "from is after to",
        ));
    }
    if caller.id != user && caller.role != Role::Admin {
        return Err(ApiError::forbidden(
            "only the wallet's owner or an admin may read its statement",
        ));
    }
    let stream = StreamId::wallet(WalletId::of(user, currency));
    let reads = Reads::Stream(stream.clone());
    let reached = await_position(&st, &caller, q.min_position()?, reads).await?;
    let wallet = read_or_wait(&st, &stream, || {
        projections::read::wallet(&st.pool, user.0, currency.code())
    })
    .await?
    .ok_or_else(|| {
        ApiError::not_found(
            "WALLET_NOT_FOUND",
            format!("no {currency} wallet for this user"),
        )
    })?;
    let from = from.unwrap_or(wallet.created_at.min(to));
    if to - from > Duration::days(PERIOD_DAYS_MAX) {
        return Err(ApiError::unprocessable(
            "INVALID_PERIOD",
            "a statement covers at most ten years",
        ));
    }
    let first =
        projections::read::statement_page(&st.pool, user.0, wallet.id, from, to, 0, PAGE_ROWS)
            .await?;
    let opening = match first.first() {
        Some(r) => r.balance_after.unwrap_or_default() - signed(r),
        None => projections::read::balance_before(&st.pool, wallet.id, from).await?,
    };
    let head = match format {
        Format::Csv => CSV_HEADER.to_owned(),
        Format::Json => {
            let fields = serde_json::json!({
                "userId": user.to_string(),
                "currency": currency.code(),
                "from": crate::rfc3339(from),
                "to": crate::rfc3339(to),
                "openingBalance": currency.format(opening),
            });
            // The object without its closing brace: items, closing balance and totals
            // follow as they are read.
            let text = fields.to_string();
            format!("{},\"items\":[", text.trim_end_matches('}'))
        }
    };
    let cursor = Cursor {
        st: st.clone(),
        user: user.0,
        wallet: wallet.id,
        from,
        to,
        currency,
        format,
        first: Some(first),
        after: 0,
        closing: opening,
        totals: BTreeMap::new(),
        wrote_item: false,
        done: false,
    };
    let body = stream::once(async move { Ok::<_, std::io::Error>(head) })
        .chain(stream::unfold(cursor, |mut c| async move {
            c.next_chunk().await.map(|chunk| (chunk, c))
        }));
    let mut res = Body::from_stream(body).into_response();
    let (content_type, name) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Json => ("application/json", "json"),
    };
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if format == Format::Csv {
        let disposition = format!(
            "attachment; filename=\"statement-{}-{}.{name}\"",
            currency.code(),
            from.format("%Y%m%d")
        );
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(with_consistency(res, reached))
}
