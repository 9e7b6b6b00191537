//! Authentication: argon2id password hashes and HS256 JSON Web Tokens.

use std::sync::Arc;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::Utc;
use domain::{Role, UserId};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Longest bearer token accepted, in bytes: ours are ~300; anything far larger is abuse.
const TOKEN_BYTES_MAX: usize = 4096;
/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: i64 = 5;
/// Verified tokens remembered at most (~300 bytes each).
const VERIFIED_MAX: usize = 8192;

/// The claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's role when the token was issued.
    pub role: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// The login session the token belongs to (ended by a logout). Tokens minted before
    /// sessions existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Signs and checks tokens. The secret never leaves this struct and is never printed.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// `iss` of the tokens minted here (`JWT_ISSUER`).
    issuer: String,
    /// `aud` of the tokens minted here (`JWT_AUDIENCE`).
    audience: String,
    /// Tokens whose signature and claims were checked, with what they say: a client sends
    /// the same token with every request, and checking it again (HMAC, base64, JSON) costs
    /// every request a visible share of the server's CPU. Only the expiry can change its
    /// answer, and it is checked on every use; nothing else about a token depends on time
    /// or state.
    verified: std::sync::Mutex<std::collections::HashMap<Box<str>, Verified>>,
    /// Lifetime of a token in seconds.
    pub ttl_seconds: i64,
}

/// What a checked token says.
#[derive(Clone, Copy)]
struct Verified {
    user: AuthUser,
    exp: i64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from a shared secret, with the default issuer and audience.
    pub fn new(secret: &[u8], ttl_seconds: i64) -> Self {
        Self::with_claims(secret, ttl_seconds, "escrow-ledger", "escrow-api")
    }

    /// Keys from a shared secret that mint and accept only `issuer` and `audience`.
    pub fn with_claims(secret: &[u8], ttl_seconds: i64, issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "sub", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS as u64;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            verified: Default::default(),
            ttl_seconds,
        }
    }

    /// Mints a token for a user, outside any session (tests, tools).
    pub fn issue(&self, user: UserId, role: Role) -> Result<String, ApiError> {
        self.issue_in(user, role, None)
    }

    /// Mints a token for a user in login session `sid`.
    pub fn issue_in(
        &self,
        user: UserId,
        role: Role,
        sid: Option<Uuid>,
    ) -> Result<String, ApiError> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user.to_string(),
            role: role.as_str().to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + self.ttl_seconds,
            sid: sid.map(|s| s.to_string()),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(ApiError::internal)
    }

    /// Checks a token: HS256 only (so `alg: none` and RS/HS confusion fail), our issuer
    /// and audience, not expired, not before its time.
    pub fn verify(&self, token: &str) -> Result<AuthUser, ApiError> {
        self.verify_at(token, Utc::now().timestamp())
            .map(|(user, _)| user)
    }

    /// [`TokenKeys::verify`], with the token's expiry (`exp`, seconds since the epoch): a
    /// connection that outlives a request (a WebSocket) ends when its token does.
    pub fn verify_until(&self, token: &str) -> Result<(AuthUser, i64), ApiError> {
        self.verify_at(token, Utc::now().timestamp())
    }

    fn verify_at(&self, token: &str, now: i64) -> Result<(AuthUser, i64), ApiError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(ApiError::unauthorized("the bearer token is too large"));
        }
        if let Some(v) = self.remembered(token) {
            // The test `decode` makes of `exp` (signed, so a remembered one is the token's
            // own); `nbf` was passed already and time only moves on.
            return if v.exp >= now - LEEWAY_SECONDS {
                Ok((v.user, v.exp))
            } else {
                Err(ApiError::unauthorized("invalid bearer token: expired"))
            };
        }
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            ApiError::unauthorized(format!("invalid bearer token: {}", token_error(&e)))
        })?;
        let id = Uuid::parse_str(&data.claims.sub)
            .map_err(|_| ApiError::unauthorized("invalid bearer token: bad subject"))?;
        let role = Role::parse(&data.claims.role)
            .ok_or_else(|| ApiError::unauthorized("invalid bearer token: bad role"))?;
        let sid = match &data.claims.sid {
            None => None,
            Some(s) => Some(
                Uuid::parse_str(s)
                    .map_err(|_| ApiError::unauthorized("invalid bearer token: bad session"))?,
            ),
        };
        let user = AuthUser {
            id: UserId(id),
            role,
            sid,
        };
        self.remember(
            token,
            Verified {
                user,
                exp: data.claims.exp,
            },
            now,
        );
        Ok((user, data.claims.exp))
    }

    fn remembered(&self, token: &str) -> Option<Verified> {
        let map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        map.get(token).copied()
    }

    fn remember(&self, token: &str, v: Verified, now: i64) {
        let mut map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= VERIFIED_MAX {
            map.retain(|_, v| v.exp >= now - LEEWAY_SECONDS);
            if map.len() >= VERIFIED_MAX {
                map.clear();
            }
        }
        map.insert(token.into(), v);
    }
}

fn token_error(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "expired",
        K::ImmatureSignature => "not valid yet",
        K::InvalidSignature => "wrong signature",
        K::InvalidAlgorithm | K::InvalidAlgorithmName => "algorithm not accepted",
        K::MissingRequiredClaim(_) => "missing claim",
        K::InvalidIssuer | K::InvalidAudience => "wrong issuer or audience",
        _ => "malformed",
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    /// Who.
    pub id: UserId,
    /// With which role: the account's stored one once [`current`] has checked it.
    pub role: Role,
    /// The login session the token belongs to, if it names one.
    pub sid: Option<Uuid>,
}

/// The caller as the store says it stands now: refused (401) if its session was ended by
/// a logout, refused (403 `ACCOUNT_SUSPENDED`) if the account is suspended, and with the
/// account's stored role, not the one the token was minted with.
pub async fn current(state: &AppState, user: AuthUser) -> Result<AuthUser, ApiError> {
    if let Some(sid) = user.sid {
        if state.sessions.ended(&state.pool, sid).await? {
            return Err(ApiError::unauthorized(
                "the session has ended: log in again",
            ));
        }
    }
    let standing = state.sessions.standing(&state.ledger, user.id).await?;
    if standing.suspended {
        return Err(ApiError::suspended());
    }
    Ok(AuthUser {
        role: standing.role,
        ..user
    })
}

impl AuthUser {
    /// The caller may read `owner`'s data: it is the owner, an arbiter or an admin.
    pub fn can_see(&self, owner: UserId) -> bool {
        self.id == owner || self.role.sees_everything()
    }

    /// The caller may move `owner`'s money: it is the owner or an admin.
    pub fn can_act_for(&self, owner: UserId) -> bool {
        self.id == owner || self.role == Role::Admin
    }
}

/// The bearer token of a request's `Authorization` header: `None` without the header. The
/// scheme is case-insensitive (RFC 9110 §11.1), so `bearer` and `BEARER` count as `Bearer`.
/// Authentication and the per-user rate limit both read the token here, so that no form
/// of the header passes one and escapes the other.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(header) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::unauthorized(
            "the Authorization header must be 'Bearer <token>'",
        ));
    }
    Ok(Some(token))
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers)?
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let user = state.tokens.verify(token)?;
        current(state, user).await
    }
}

/// Password hashes computed at once. Each argon2id computation takes 19 MiB and a core
/// for tens of milliseconds: unbounded, a burst of logins or registrations would take
/// every blocking thread and gigabytes of memory (measured: 1.5 GiB peak RSS for 16
/// concurrent registrations). Beyond this many, requests queue for a permit.
fn hashing_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new(cores.clamp(1, 4))
    })
}

/// Hashes a password with argon2id (off the async threads: it is deliberately slow).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    let _permit = hashing_permits()
        .acquire()
        .await
        .map_err(ApiError::internal)?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

/// Checks a password against a stored hash. With no stored hash (unknown e-mail) it
/// checks against a fixed dummy hash, so both failures take the same time.
pub async fn verify_password(
    password: String,
    stored: Option<String>,
    dummy: Arc<String>,
) -> Result<bool, ApiError> {
    let _permit = hashing_permits()
        .acquire()
        .await
        .map_err(ApiError::internal)?;
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let hash_text = stored.unwrap_or_else(|| dummy.as_str().to_owned());
        let parsed = PasswordHash::new(&hash_text).map_err(ApiError::internal)?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(ok && known)
    })
    .await
    .map_err(ApiError::internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"a test secret of thirty-two bytes!", 60)
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let keys = keys();
        let user = UserId(Uuid::now_v7());
        let token = keys.issue(user, Role::User).expect("issue");
        let now = Utc::now().timestamp();
        assert_eq!(
            keys.verify_at(&token, now).map(|(u, _)| u.id).ok(),
            Some(user)
        );
        assert!(
            keys.remembered(&token).is_some(),
            "remembered after one check"
        );
        assert!(keys.verify_at(&token, now + 60 + LEEWAY_SECONDS).is_ok());
        let late = keys.verify_at(&token, now + 60 + LEEWAY_SECONDS + 2);
        assert_eq!(late.map_err(|e| e.status.as_u16()), Err(401));
    }

    #[test]
    fn a_token_with_another_signature_is_not_taken_for_a_remembered_one() {
        let keys = keys();
        let token = keys
            .issue(UserId(Uuid::now_v7()), Role::User)
            .expect("issue");
        assert!(keys.verify(&token).is_ok());
        let (head, sig) = token.rsplit_once('.').expect("three parts");
        let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
        let forged = format!("{head}.{flipped}{}", &sig[1..]);
        assert!(keys.verify(&forged).is_err());
        let other = TokenKeys::new(b"another secret, also thirty-two!!", 60)
            .issue(UserId(Uuid::now_v7()), Role::Admin)
            .expect("issue");
        assert!(keys.verify(&other).is_err());
    }

    #[test]
    fn issuer_and_audience_are_the_configured_ones() {
        let secret = b"a test secret of thirty-two bytes!";
        let ours = TokenKeys::with_claims(secret, 60, "shop-ledger", "shop-api");
        let token = ours
            .issue(UserId(Uuid::now_v7()), Role::User)
            .expect("issue");
        assert!(ours.verify(&token).is_ok());
        // Same secret, other issuer or audience: refused both ways.
        for (iss, aud) in [("escrow-ledger", "shop-api"), ("shop-ledger", "escrow-api")] {
            let other = TokenKeys::with_claims(secret, 60, iss, aud);
            assert!(other.verify(&token).is_err(), "{iss} {aud}");
            let theirs = other
                .issue(UserId(Uuid::now_v7()), Role::Admin)
                .expect("issue");
            assert!(ours.verify(&theirs).is_err(), "{iss} {aud}");
        }
    }

    #[test]
    fn the_memory_is_bounded() {
        let keys = keys();
        for _ in 0..=VERIFIED_MAX {
            let token = keys
                .issue(UserId(Uuid::now_v7()), Role::User)
                .expect("issue");
            assert!(keys.verify(&token).is_ok());
        }
        let len = keys.verified.lock().map(|m| m.len()).unwrap_or(usize::MAX);
        assert!(len <= VERIFIED_MAX, "{len} remembered");
    }
}
