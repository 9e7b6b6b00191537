//! Abuse limits: per-user and per-IP request rates (429 + `Retry-After`) and a bound on how
//! long any request may take.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::ApiError;
use crate::state::AppState;

/// Keys kept before those whose budget is full again are forgotten: bounds memory under
/// an address-spraying attack.
const KEYS_MAX: usize = 100_000;

/// A budget per key (governor's GCRA): `per_minute` requests a minute, in bursts of up to
/// as many. Its keys live in a sharded map, so checks of different keys do not wait for
/// each other and forgetting idle keys locks one shard at a time, never the whole map.
#[derive(Debug)]
pub struct RateLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    /// When idle keys were last forgotten (milliseconds since `started`).
    swept_ms: AtomicU64,
    started: Instant,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests a minute per key (0: unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute)
                .map(|n| governor::RateLimiter::keyed(Quota::per_minute(n))),
            clock: DefaultClock::default(),
            swept_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Whether this limiter limits anything (a limit of 0 is none). Callers skip working
    /// out a key when it does not: the per-user key means verifying the bearer token.
    pub fn enabled(&self) -> bool {
        self.limiter.is_some()
    }

    /// Takes one request from `key`'s budget. `Err(seconds)` says how long until the next
    /// is allowed.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() >= KEYS_MAX {
            self.sweep(limiter);
        }
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }

    /// Forgets the keys whose budget is full again, at most once a second (a flood of new
    /// keys must not make every request walk the map).
    fn sweep(&self, limiter: &DefaultKeyedRateLimiter<String>) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.swept_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1_000
            || self
                .swept_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }

    /// Keys held now.
    pub fn keys(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

/// A request budget: this process's own ([`RateLimiter`]), or one shared by every process
/// on the database (`RATE_LIMITS_SHARED=true`), so that N processes do not give a user or
/// an address N times its budget.
#[derive(Debug)]
pub enum Budget {
    /// Kept in this process's memory.
    Local(RateLimiter),
    /// Kept in PostgreSQL (`rate_budgets`), one statement per request.
    Shared {
        /// Where.
        store: event_store::EventStore,
        /// Requests a minute per key (0: unlimited).
        per_minute: u32,
        /// Which budget: keys of different budgets never meet.
        name: &'static str,
    },
}

impl Budget {
    /// A budget of `per_minute` requests a minute per key, shared through `store` if given.
    pub fn new(
        per_minute: u32,
        name: &'static str,
        store: Option<&event_store::EventStore>,
    ) -> Self {
        match store {
            Some(store) => Budget::Shared {
                store: store.clone(),
                per_minute,
                name,
            },
            None => Budget::Local(RateLimiter::new(per_minute)),
        }
    }

    /// Whether it limits anything.
    pub fn enabled(&self) -> bool {
        match self {
            Budget::Local(l) => l.enabled(),
            Budget::Shared { per_minute, .. } => *per_minute > 0,
        }
    }

    /// Takes one request from `key`'s budget; `Err(seconds)` until the next is allowed. A
    /// shared budget the database cannot answer for lets the request through: a limit is
    /// not worth refusing everyone while PostgreSQL is away (commands fail then anyway).
    pub async fn check(&self, key: &str) -> Result<(), u64> {
        match self {
            Budget::Local(l) => l.check(key),
            Budget::Shared {
                store,
                per_minute,
                name,
            } => {
                if *per_minute == 0 {
                    return Ok(());
                }
                match store
                    .take_from_budget(&format!("{name}:{key}"), *per_minute)
                    .await
                {
                    Ok(taken) => taken,
                    Err(e) => {
                        tracing::warn!(error = %e, budget = name, "shared rate limit unavailable; letting the request through");
                        Ok(())
                    }
                }
            }
        }
    }
}

/// The limiters of a process.
#[derive(Debug)]
pub struct Limits {
    /// Per client address.
    pub per_ip: Budget,
    /// Per client address, for logins and registrations only (each costs an argon2id
    /// computation, and logins are how passwords are guessed).
    pub per_ip_auth: Budget,
    /// Per authenticated user.
    pub per_user: Budget,
    /// Per authenticated user, for looking users up by e-mail (each answer says whether an
    /// address has an account here).
    pub lookups_per_user: Budget,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` names the client ([`crate::client_addr`]).
    pub trusted_proxies: Vec<crate::client_addr::Network>,
}

/// The 429 for a caller over a budget.
pub(crate) fn too_many_error(retry_after: u64, who: &str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        format!("too many requests from this {who}; retry later"),
    );
    e.retry_after = Some(retry_after);
    e
}

fn too_many(retry_after: u64, who: &str) -> Response {
    too_many_error(retry_after, who).into_response()
}

/// Middleware: rate limits by address and (for a valid bearer token) by user, then runs the
/// request under the timeout. A request that times out gets a 503; a command that was
/// already committed stays committed, and its `Idempotency-Key` makes the retry safe.
pub async fn enforce(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let limits: &Arc<Limits> = &st.limits;
    let auth_route = req.method() == axum::http::Method::POST
        && matches!(
            req.uri().path(),
            "/api/v1/auth/login" | "/api/v1/auth/register" | "/api/v1/auth/refresh"
        );
    let by_address = limits.per_ip.enabled() || (auth_route && limits.per_ip_auth.enabled());
    let ip: Option<IpAddr> = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| {
            crate::client_addr::client_address(c.0.ip(), req.headers(), &limits.trusted_proxies)
        })
        .filter(|_| by_address);
    if let Some(ip) = ip {
        let key = ip.to_string();
        for (limiter, applies) in [(&limits.per_ip, true), (&limits.per_ip_auth, auth_route)] {
            if applies && limiter.enabled() {
                if let Err(s) = limiter.check(&key).await {
                    return too_many(s, "address");
                }
            }
        }
    }
    if limits.per_user.enabled() {
        let user = crate::auth::bearer_token(req.headers())
            .ok()
            .flatten()
            .and_then(|t| st.tokens.verify(t).ok());
        if let Some(u) = user {
            if let Err(s) = limits.per_user.check(&u.id.to_string()).await {
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

    #[test]
    fn keys_whose_budget_is_full_again_are_forgotten() {
        let l = RateLimiter::new(6_000);
        for n in 0..super::KEYS_MAX + 10 {
            assert!(l.check(&format!("address-{n}")).is_ok());
        }
        // A budget of 6,000 a minute refills one request in 10 ms.
        std::thread::sleep(std::time::Duration::from_millis(1_100));
        assert!(l.check("one more").is_ok());
        assert!(l.keys() < 10, "{} keys kept", l.keys());
    }
}
