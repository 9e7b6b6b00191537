//! Typed settings, from flags or the environment (the seed's variable names).

use std::fmt;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Which parts of the ledger this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkerRole {
    /// API, relay and projection worker (the default; one process is a whole ledger).
    All,
    /// Only the HTTP API.
    Api,
    /// Only the relay and the projection worker.
    Workers,
    /// Only the API's reads, from a read-only PostgreSQL standby (commands answer 503
    /// `READ_ONLY_NODE`); nothing is migrated, relayed or projected here.
    Query,
}

impl WorkerRole {
    /// Whether this process runs the relay, projections, schedulers and deliverer.
    pub fn runs_workers(self) -> bool {
        matches!(self, WorkerRole::All | WorkerRole::Workers)
    }

    /// Whether this process serves HTTP.
    pub fn serves_http(self) -> bool {
        !matches!(self, WorkerRole::Workers)
    }

    /// Whether this process may write to its database.
    pub fn writes(self) -> bool {
        !matches!(self, WorkerRole::Query)
    }
}

/// A secret that never prints.
#[derive(Clone, Default)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Settings of `escrow serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// NATS server URL; a cluster's members separated by commas
    /// (`nats://a:4222,nats://b:4222,nats://c:4222`).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Copies of the events stream a NATS cluster keeps: 1 on a single server, 3 in a
    /// cluster of three (a node's loss then loses nothing and stops nothing).
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1)]
    pub nats_stream_replicas: usize,
    /// JetStream stream that holds every event.
    #[arg(long, env = "NATS_STREAM", default_value = "ESCROW_EVENTS")]
    pub nats_stream: String,
    /// Subject prefix: events go to `<prefix>.<category>.<id>.<EventType>`.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "escrow.events")]
    pub nats_subject_prefix: String,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// HS256 signing secret for access tokens, at least 32 characters. Required unless --dev.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "JWT_TTL_SECONDS", default_value_t = 900)]
    pub jwt_ttl_seconds: i64,
    /// Lifetime of a refresh token (single use, rotated by `POST /auth/refresh`), seconds.
    #[arg(long, env = "JWT_REFRESH_TTL_SECONDS", default_value_t = 30 * 24 * 3600)]
    pub jwt_refresh_ttl_seconds: i64,
    /// `iss` of the tokens this ledger signs, and the only one it accepts.
    #[arg(long, env = "JWT_ISSUER", default_value = "escrow-ledger")]
    pub jwt_issuer: String,
    /// `aud` of the tokens this ledger signs, and the only one it accepts.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "escrow-api")]
    pub jwt_audience: String,
    /// Development mode: accept a missing or weak JWT_SECRET (with a warning).
    #[arg(long, env = "ESCROW_DEV")]
    pub dev: bool,
    /// Comma-separated origins allowed by CORS (none when empty).
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub body_limit_bytes: usize,
    /// What this process runs.
    #[arg(long, env = "ESCROW_ROLE", value_enum, default_value = "all")]
    pub role: WorkerRole,
    /// Most database connections this process opens.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
    /// How long a query with `minPosition` waits for the read models, in milliseconds.
    #[arg(long, env = "READ_WAIT_MS", default_value_t = 2000)]
    pub read_wait_ms: u64,
    /// Whether users may credit their own wallets with `POST /wallets/deposit` (as the seed
    /// does). `false`, for production: only the `service` role and admins deposit, so money
    /// enters through the marketplace's payment integration.
    #[arg(long, env = "SELF_DEPOSITS", default_value_t = true, action = clap::ArgAction::Set)]
    pub self_deposits: bool,
    /// Whether a query without `minPosition` waits (up to `READ_WAIT_MS`) for the caller's
    /// own last command to reach the read models (`false`: it answers from them as they
    /// are, as `minPosition=0` does).
    #[arg(long, env = "SESSION_CONSISTENCY", default_value_t = true, action = clap::ArgAction::Set)]
    pub session_consistency: bool,
    /// How long an `Idempotency-Key` is remembered, in hours (0: forever). A key reused
    /// after it expired runs its command again, as payment APIs do.
    #[arg(long, env = "IDEMPOTENCY_RETENTION_HOURS", default_value_t = 168)]
    pub idempotency_retention_hours: u64,
    /// How often the deadline scheduler looks for contracts due for auto-release or expiry.
    #[arg(long, env = "AUTO_RELEASE_POLL_MS", default_value_t = 1000)]
    pub auto_release_poll_ms: u64,
    /// Comma-separated reverse proxies (addresses or networks, `10.0.0.0/8`) whose
    /// `X-Forwarded-For` names the client address the per-address limits count; requests
    /// from anywhere else count against their own address. Empty: headers are ignored.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Requests a minute one client address may make (0: unlimited).
    #[arg(long, env = "RATE_LIMIT_PER_IP_PER_MINUTE", default_value_t = 6000)]
    pub rate_limit_per_ip_per_minute: u32,
    /// Logins and registrations a minute one client address may make (0: unlimited).
    #[arg(long, env = "RATE_LIMIT_AUTH_PER_IP_PER_MINUTE", default_value_t = 30)]
    pub rate_limit_auth_per_ip_per_minute: u32,
    /// Look-ups of a user by e-mail a minute one authenticated user may make (0: unlimited).
    #[arg(
        long,
        env = "RATE_LIMIT_LOOKUPS_PER_USER_PER_MINUTE",
        default_value_t = 30
    )]
    pub rate_limit_lookups_per_user_per_minute: u32,
    /// Keep the rate limits' budgets in PostgreSQL, shared by every process (one statement
    /// per limited request), instead of in each process's memory (where N processes allow
    /// N times each budget).
    #[arg(long, env = "RATE_LIMITS_SHARED", default_value_t = false, action = clap::ArgAction::Set)]
    pub rate_limits_shared: bool,
    /// Requests a minute one authenticated user may make (0: unlimited).
    #[arg(long, env = "RATE_LIMIT_PER_USER_PER_MINUTE", default_value_t = 1200)]
    pub rate_limit_per_user_per_minute: u32,
    /// Longest a request may take, in milliseconds, before it is answered with a 503.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// A client must send its request headers within this many milliseconds (slow-loris).
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Largest request head (request line and headers) accepted, in bytes; larger gets 431.
    #[arg(long, env = "HEADER_BYTES_MAX", default_value_t = 32 * 1024)]
    pub header_bytes_max: usize,
    /// Most WebSockets one user may hold open on one server; more are refused with 429.
    #[arg(long, env = "WS_CONNECTIONS_PER_USER_MAX", default_value_t = 10)]
    pub ws_connections_per_user_max: usize,
    /// A webhook delivery not answered 2xx within this many milliseconds fails its attempt.
    #[arg(long, env = "WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
    /// A webhook delivery still failing this many hours after it was queued fails for good
    /// and disables its endpoint (fractions allowed).
    #[arg(long, env = "WEBHOOK_MAX_AGE_HOURS", default_value_t = 72.0)]
    pub webhook_max_age_hours: f64,
    /// The first retry of a failed webhook delivery waits this long; each next one doubles
    /// it, up to an hour.
    #[arg(long, env = "WEBHOOK_RETRY_BASE_MS", default_value_t = 1_000)]
    pub webhook_retry_base_ms: u64,
    /// Most webhook deliveries a second to one endpoint (0: no limit): spares receivers
    /// bursts, and sends a backlog at a pace that leaves the ledger its CPU.
    #[arg(long, env = "WEBHOOK_MAX_RATE_PER_ENDPOINT", default_value_t = 250)]
    pub webhook_max_rate_per_endpoint: u32,
    /// Most webhook deliveries a second to one endpoint while this machine's CPU is
    /// contended (0: no slowing): deliveries yield to commands under load.
    #[arg(long, env = "WEBHOOK_BUSY_RATE_PER_ENDPOINT", default_value_t = 25)]
    pub webhook_busy_rate_per_endpoint: u32,
    /// Where the CPU's pressure stall information is read (Linux; in a container, its
    /// cgroup's `cpu.pressure`). Unreadable: never counted as contended.
    #[arg(
        long,
        env = "WEBHOOK_CPU_PRESSURE_FILE",
        default_value = "/proc/pressure/cpu"
    )]
    pub webhook_cpu_pressure_file: std::path::PathBuf,
    /// Let webhook endpoints point at loopback, private, link-local or multicast addresses
    /// (for tests and private deployments; off, such URLs are refused).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE_NETWORKS", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private_networks: bool,
    /// 32 bytes (64 hex digits or base64) that seal webhook secrets at rest with
    /// AES-256-GCM. Unset: stored as they are.
    #[arg(long, env = "WEBHOOK_SECRETS_KEY", hide_env_values = true)]
    pub webhook_secrets_key: Option<String>,
    /// On a query node, where commands go instead (such as `http://primary:8080`): its
    /// refusals name the same path there in `Location`.
    #[arg(long, env = "PRIMARY_API_URL")]
    pub primary_api_url: Option<String>,
    /// Where `GET /metrics` (Prometheus text) is served: a listener of its own, apart from
    /// the API, so that it is not public with it. Empty: not served.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9090")]
    pub metrics_addr: String,
}

impl ServeConfig {
    /// The token signing key: `JWT_SECRET`, refused when weak unless `--dev`.
    pub fn signing_secret(&self) -> anyhow::Result<Vec<u8>> {
        let config = self;
        let given = config.jwt_secret.as_ref().map(|s| s.0.as_str());
        match (weak_secret_reason(given), config.dev) {
            (None, _) => Ok(given.unwrap_or_default().as_bytes().to_vec()),
            (Some(reason), false) => anyhow::bail!(
                "{reason}. Set JWT_SECRET to a random string of at least 32 characters (for example `openssl rand -hex 32`), \
                 or pass --dev for a throw-away development server"
            ),
            (Some(reason), true) => {
                match given {
                    Some(s) if !s.is_empty() => {
                        tracing::warn!("DEVELOPMENT MODE: {reason}; using it anyway");
                        Ok(s.as_bytes().to_vec())
                    }
                    _ => {
                        tracing::warn!("DEVELOPMENT MODE: {reason}; using a random secret (tokens die with this process)");
                        let mut key = vec![0u8; 32];
                        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
                        Ok(key)
                    }
                }
            }
        }
    }

    /// How the webhook deliverer sends.
    pub fn webhook_settings(&self, secrets: &webhooks::SecretBox) -> webhooks::WebhookSettings {
        webhooks::WebhookSettings {
            timeout: Duration::from_millis(self.webhook_timeout_ms.max(1)),
            // Fractions of an hour are for tests; the bounds keep the conversion finite.
            max_age: Duration::from_secs_f64(
                self.webhook_max_age_hours.clamp(0.0001, 24.0 * 365.0) * 3600.0,
            ),
            retry_base: Duration::from_millis(self.webhook_retry_base_ms.max(1)),
            retry_max: Duration::from_secs(3600),
            allow_private_networks: self.webhook_allow_private_networks,
            max_rate_per_endpoint: self.webhook_max_rate_per_endpoint,
            busy_rate_per_endpoint: self.webhook_busy_rate_per_endpoint,
            cpu_pressure_file: Some(self.webhook_cpu_pressure_file.clone()),
            secrets: secrets.clone(),
        }
    }
}

/// Secrets that appear in examples and tutorials; a ledger must never run with one.
const PLACEHOLDER_SECRETS: &[&str] = &[
    "your-super-secret-jwt-key-here",
    "changeme",
    "change-me",
    "secret",
    "jwt-secret",
    "development",
];

/// Phrases of examples and tutorials: a secret containing one was typed by a person.
const PLACEHOLDER_PHRASES: &[&str] = &[
    "changeme",
    "change-me",
    "change_me",
    "your-super-secret",
    "your_super_secret",
    "supersecret",
    "super-secret",
    "placeholder",
    "example",
    "password",
    "secret-key",
    "secretkey",
    "replace-me",
    "replaceme",
];

/// The least entropy a signing secret must show, in bits, estimated from its characters'
/// frequencies. 32 random hex characters (128 bits) show about 115; 64 show about 250.
pub const JWT_SECRET_BITS_MIN: f64 = 96.0;

/// The entropy a string shows, in bits: its length times the Shannon entropy of its
/// characters' frequencies. An estimate from the text alone: it cannot see a secret that
/// is random-looking but known (only its source can), but it refuses the typed ones.
fn shown_entropy_bits(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for b in s.bytes() {
        *counts.entry(b).or_insert(0usize) += 1;
    }
    let n = s.len() as f64;
    let per_char: f64 = counts
        .values()
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum();
    per_char * n
}

/// Whether `s` is one shorter string written several times over.
fn is_repeated_pattern(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=b.len() / 2).any(|p| b.len() % p == 0 && b.chunks(p).all(|c| c == &b[..p]))
}

/// Shortest acceptable signing secret, in bytes (HS256 wants 256 bits of key).
pub const JWT_SECRET_BYTES_MIN: usize = 32;

/// Why a secret is refused, if it is.
pub fn weak_secret_reason(secret: Option<&str>) -> Option<&'static str> {
    match secret {
        None | Some("") => Some("JWT_SECRET is not set"),
        Some(s)
            if PLACEHOLDER_SECRETS
                .iter()
                .any(|p| s.eq_ignore_ascii_case(p)) =>
        {
            Some("JWT_SECRET is a well-known placeholder")
        }
        Some(s) if s.len() < JWT_SECRET_BYTES_MIN => {
            Some("JWT_SECRET is shorter than 32 characters")
        }
        Some(s) if s.bytes().all(|b| b == s.as_bytes()[0]) => {
            Some("JWT_SECRET is one repeated character")
        }
        Some(s) if is_repeated_pattern(s) => Some("JWT_SECRET is a repeated pattern"),
        Some(s)
            if PLACEHOLDER_PHRASES
                .iter()
                .any(|p| s.to_ascii_lowercase().contains(p)) =>
        {
            Some("JWT_SECRET contains a placeholder phrase")
        }
        Some(s) if shown_entropy_bits(s) < JWT_SECRET_BITS_MIN => {
            Some("JWT_SECRET has too little entropy (too few different characters for its length)")
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::weak_secret_reason;

    #[test]
    fn refuses_missing_placeholder_short_and_repeated_secrets() {
        assert!(weak_secret_reason(None).is_some());
        assert!(weak_secret_reason(Some("")).is_some());
        assert!(weak_secret_reason(Some("your-super-secret-jwt-key-here")).is_some());
        assert!(weak_secret_reason(Some("short-secret")).is_some());
        assert!(weak_secret_reason(Some(&"a".repeat(64))).is_some());
        // Low entropy shown by the text: patterns, phrases, few characters.
        assert!(weak_secret_reason(Some(&"ab".repeat(32))).is_some());
        assert!(weak_secret_reason(Some(&"secret1".repeat(6))).is_some());
        assert!(
            weak_secret_reason(Some("my-super-secret-jwt-token-for-production-2024")).is_some()
        );
        assert!(weak_secret_reason(Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab")).is_some());
        assert!(weak_secret_reason(Some("0101010110101010011010100101101011")).is_some());
        // Random ones pass: 32 hex characters (128 bits), 64, and base64.
        assert_eq!(
            weak_secret_reason(Some("3f9a0c7e51d2b8846e0fa1c39d7b2e65")),
            None
        );
        assert_eq!(
            weak_secret_reason(Some(
                "c1e5a7f09b3d2e4681f7a0c9d3b5e7f1a2c4e6081b3d5f7092a4c6e8f0b1d3e5"
            )),
            None
        );
        assert_eq!(
            weak_secret_reason(Some("q8Zt1nVx+3KpLw9RfYc/2HmGd7Ue0sBa")),
            None
        );
        assert_eq!(
            weak_secret_reason(Some("9f2c1e7b4a5d6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9")),
            None
        );
    }
}
