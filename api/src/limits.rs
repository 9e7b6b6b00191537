//! Abuse limits: per-user and per-IP request rates (429 + `Retry-After`) and a bound on how
//! long any request may take.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Buckets kept before idle ones are swept: bounds memory under an address-spraying attack.
const BUCKETS_MAX: usize = 100_000;

/// A token bucket per key: `per_minute` requests a minute, with bursts up to the same.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests a minute per key (0: unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this limiter limits anything (a limit of 0 is none). Callers skip working
    /// out a key when it does not: the per-user key means verifying the bearer token.
    pub fn enabled(&self) -> bool {
        self.per_minute > 0
    }

    /// Takes one token for `key`. `Err(seconds)` says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let refill_per_sec = capacity / 60.0;
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= BUCKETS_MAX {
            buckets.retain(|_, (_, seen)| now.duration_since(*seen) < Duration::from_secs(60));
        }
        let (tokens, seen) = buckets.entry(key.to_owned()).or_insert((capacity, now));
        *tokens =
            (*tokens + now.duration_since(*seen).as_secs_f64() * refill_per_sec).min(capacity);
        *seen = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / refill_per_sec).ceil().max(1.0) as u64)
        }
    }
}

/// The limiters of a process.
#[derive(Debug)]
pub struct Limits {
    /// Per client address.
    pub per_ip: RateLimiter,
    /// Per authenticated user.
    pub per_user: RateLimiter,
    /// Longest a request may take.
    pub request_timeout: Duration,
}

fn too_many(retry_after: u64, who: &str) -> Response {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        format!("too many requests from this {who}; retry later"),
    );
    e.retry_after = Some(retry_after);
    e.into_response()
}

/// Middleware: rate limits by address and (for a valid bearer token) by user, then runs the
/// request under the timeout. A request that times out gets a 503; a command that was
/// already committed stays committed, and its `Idempotency-Key` makes the retry safe.
pub async fn enforce(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let limits: &Arc<Limits> = &st.limits;
    if limits.per_ip.enabled() {
        let ip: Option<IpAddr> = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = ip {
            if let Err(s) = limits.per_ip.check(&ip.to_string()) {
                return too_many(s, "address");
            }
        }
    }
    if limits.per_user.enabled() {
        let user = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|t| st.tokens.verify(t.trim()).ok());
        if let Some(u) = user {
            if let Err(s) = limits.per_user.check(&u.id.to_string()) {
                return too_many(s, "user");
            }
        }
    }
    match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TIMEOUT",
                "the request took too long; retry it (with the same Idempotency-Key)",
            );
            e.retry_after = Some(1);
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimiter;

    #[test]
    fn a_bucket_allows_its_burst_then_says_when_to_retry() {
        let l = RateLimiter::new(3);
        assert!(l.check("a").is_ok() && l.check("a").is_ok() && l.check("a").is_ok());
        let retry = l.check("a").expect_err("the fourth is refused");
        assert!((1..=20).contains(&retry), "{retry}");
        assert!(l.check("b").is_ok(), "keys are independent");
        assert!(RateLimiter::new(0).check("a").is_ok(), "0 disables");
    }
}
