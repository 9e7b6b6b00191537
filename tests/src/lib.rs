//! Test harness: a real `escrow` server (in-process, real HTTP on a free port) against real
//! PostgreSQL and NATS JetStream, one fresh database and one fresh JetStream stream per
//! test, plus typed request helpers and checks over the raw event store.
//!
//! Needs `TEST_DATABASE_URL` (a database the tests may `CREATE DATABASE` from) and
//! `NATS_URL`; `scripts/test.sh` provides both.
//!
//! One file past 600 lines: it is the whole harness every test binary links, and a reader
//! looking for how a test gets its server, clients or folds finds it here.

#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use api::{Running, ServeConfig, WorkerRole};
use domain::codec::decode;
use domain::ledger::{postings, Account};
use domain::stream::Versioned;
use domain::{Wallet, WalletId};
use futures::StreamExt as _;
use reqwest::{header::HeaderMap, Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// The JWT secret every test server signs with.
pub const TEST_JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} must be set: run the tests with scripts/test.sh"))
}

/// A database of its own for one test.
pub async fn fresh_database() -> (String, PgPool) {
    let admin_url = env("TEST_DATABASE_URL");
    let name = format!("t_{}", Uuid::new_v4().simple());
    let admin = PgPool::connect(&admin_url)
        .await
        .expect("connect to TEST_DATABASE_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .expect("URL has a database path");
    let url = format!("{base}/{name}");
    let pool = event_store::connect(
        &url,
        &event_store::PoolSettings {
            max_connections: 10,
            ..Default::default()
        },
    )
    .await
    .expect("connect to test database");
    event_store::MIGRATOR.run(&pool).await.expect("migrate");
    (url, pool)
}

/// Options for [`spawn_app_with`].
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// NATS URL (default: `NATS_URL`).
    pub nats_url: Option<String>,
    /// Reuse this database and stream instead of fresh ones (a second process).
    pub share_with: Option<(String, String, String)>,
    /// A clock the test moves forward.
    pub clock: Option<std::sync::Arc<api::clock::ManualClock>>,
    /// Requests per minute per address and per user (0: unlimited, the tests' default).
    pub rate_limits: Option<(u32, u32)>,
    /// Logins and registrations per minute per address (0: unlimited, the tests' default).
    pub auth_rate_limit: Option<u32>,
    /// Lifetime of the tokens it signs (default 900 s, as documented).
    pub jwt_ttl_seconds: Option<i64>,
    /// WebSockets per user (default 10, as documented).
    pub ws_per_user: Option<usize>,
    /// How long `minPosition` waits (default: the documented default, 2 s).
    pub read_wait_ms: Option<u64>,
    /// Whether queries wait for the caller's own last command (default: yes, as documented).
    pub session_consistency: Option<bool>,
    /// Whether users may deposit into their own wallets (default: yes, as documented).
    pub self_deposits: Option<bool>,
    /// Which parts run (default: all of them; `Api` leaves the store unpublished and
    /// unprojected, for tests that feed a worker by hand).
    pub role: Option<WorkerRole>,
    /// A request taking longer is answered 503 `TIMEOUT` (default 30 s, as documented).
    pub request_timeout_ms: Option<u64>,
    /// Look-ups by e-mail per minute per user (0: unlimited, the tests' default).
    pub lookups_per_minute: Option<u32>,
    /// Copies of the events stream (default 1).
    pub nats_stream_replicas: Option<usize>,
    /// Rate-limit budgets in PostgreSQL, shared by every process (default: each its own).
    pub shared_rate_limits: Option<bool>,
    /// `TRUSTED_PROXIES` (default: none).
    pub trusted_proxies: Vec<String>,
    /// `WEBHOOK_BUSY_RATE_PER_ENDPOINT` (default 25, as documented).
    pub webhook_busy_rate_per_endpoint: Option<u32>,
    /// `WEBHOOK_CPU_PRESSURE_FILE` (default `/proc/pressure/cpu`, as documented).
    pub webhook_cpu_pressure_file: Option<std::path::PathBuf>,
    /// Webhook URLs on loopback and private addresses (default: allowed, for the tests'
    /// receivers; the documented default is refused).
    pub webhook_allow_private_networks: Option<bool>,
    /// Hours before a failing webhook delivery disables its endpoint (default 72).
    pub webhook_max_age_hours: Option<f64>,
    /// First webhook retry delay in ms (default: the documented 1,000).
    pub webhook_retry_base_ms: Option<u64>,
    /// Deliveries a second to one webhook endpoint (default: the documented 250).
    pub webhook_max_rate_per_endpoint: Option<u32>,
    /// `PRIMARY_API_URL` (a query node's hint for commands).
    pub primary_api_url: Option<String>,
    /// `WEBHOOK_SECRETS_KEY` (default: none).
    pub webhook_secrets_key: Option<String>,
}

/// Deletes, once per test binary, the JetStream streams that earlier runs' tests left
/// (`T_<uuid>`, `L_<uuid>`) once they are an hour old — a running test's own are younger.
/// `scripts/test.sh` drops their databases the same way; without this a developer's
/// JetStream gains some fifty streams a run.
async fn delete_stale_test_streams(nats_url: &str) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let Ok(client) = async_nats::connect(nats_url).await else {
            return;
        };
        let js = async_nats::jetstream::new(client);
        let cutoff = chrono::Utc::now().timestamp() - 3600;
        let mut stale = Vec::new();
        let mut streams = js.streams();
        while let Some(Ok(info)) = streams.next().await {
            let name = info.config.name;
            let test_made = ["T_", "L_"].iter().any(|p| {
                name.strip_prefix(p)
                    .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            });
            if test_made && info.created.unix_timestamp() < cutoff {
                stale.push(name);
            }
        }
        for name in stale {
            let _ = js.delete_stream(&name).await;
        }
    })
    .await;
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub base: String,
    /// `http://<METRICS_ADDR>/metrics`.
    pub metrics_url: String,
    pub http: reqwest::Client,
    pub db_url: String,
    pub pool: PgPool,
    pub nats_url: String,
    pub stream: String,
    pub prefix: String,
    running: Option<Running>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}
/// Two servers on one ledger (database and stream) and one clock the test moves forward:
/// for the schedulers' exactly-once tests.
pub async fn two_servers_one_clock() -> (std::sync::Arc<api::clock::ManualClock>, TestApp, TestApp)
{
    let clock = std::sync::Arc::new(api::clock::ManualClock::default());
    let first = spawn_app_with(AppOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    let second = spawn_app_with(AppOptions {
        clock: Some(clock.clone()),
        share_with: Some(first.shared()),
        ..Default::default()
    })
    .await;
    (clock, first, second)
}

pub async fn spawn_app_with(opts: AppOptions) -> TestApp {
    try_spawn_app_with(opts).await.expect("server starts")
}

/// [`spawn_app_with`], returning the server's refusal to start instead of panicking.
pub async fn try_spawn_app_with(opts: AppOptions) -> anyhow::Result<TestApp> {
    let (db_url, pool, stream, prefix) = match opts.share_with {
        Some((url, stream, prefix)) => {
            let pool = PgPool::connect(&url).await.expect("connect");
            (url, pool, stream, prefix)
        }
        None => {
            let (url, pool) = fresh_database().await;
            let id = Uuid::new_v4().simple().to_string();
            (url, pool, format!("T_{id}"), format!("t{id}.escrow.events"))
        }
    };
    let nats_url = opts.nats_url.unwrap_or_else(|| env("NATS_URL"));
    delete_stale_test_streams(&nats_url).await;
    let config = ServeConfig {
        database_url: db_url.clone(),
        nats_url: nats_url.clone(),
        nats_stream: stream.clone(),
        nats_stream_replicas: opts.nats_stream_replicas.unwrap_or(1),
        nats_subject_prefix: prefix.clone(),
        host: "127.0.0.1".into(),
        port: 0,
        jwt_secret: Some(api::config::Secret(TEST_JWT_SECRET.into())),
        jwt_ttl_seconds: opts.jwt_ttl_seconds.unwrap_or(900),
        jwt_refresh_ttl_seconds: 30 * 24 * 3600,
        jwt_issuer: "escrow-ledger".into(),
        jwt_audience: "escrow-api".into(),
        dev: false,
        cors_origins: vec![],
        body_limit_bytes: 64 * 1024,
        role: opts.role.unwrap_or(WorkerRole::All),
        db_max_connections: 20,
        read_wait_ms: opts.read_wait_ms.unwrap_or(2_000),
        session_consistency: opts.session_consistency.unwrap_or(true),
        self_deposits: opts.self_deposits.unwrap_or(true),
        auto_release_poll_ms: 50,
        idempotency_retention_hours: 168,
        trusted_proxies: opts.trusted_proxies.clone(),
        rate_limit_per_ip_per_minute: opts.rate_limits.map_or(0, |r| r.0),
        rate_limit_per_user_per_minute: opts.rate_limits.map_or(0, |r| r.1),
        rate_limits_shared: opts.shared_rate_limits.unwrap_or(false),
        rate_limit_lookups_per_user_per_minute: opts.lookups_per_minute.unwrap_or(0),
        rate_limit_auth_per_ip_per_minute: opts.auth_rate_limit.unwrap_or(0),
        request_timeout_ms: opts.request_timeout_ms.unwrap_or(30_000),
        header_read_timeout_ms: 1_500,
        header_bytes_max: 32 * 1024,
        metrics_addr: "127.0.0.1:0".into(),
        ws_connections_per_user_max: opts.ws_per_user.unwrap_or(10),
        webhook_timeout_ms: 10_000,
        webhook_max_age_hours: opts.webhook_max_age_hours.unwrap_or(72.0),
        webhook_retry_base_ms: opts.webhook_retry_base_ms.unwrap_or(1_000),
        webhook_max_rate_per_endpoint: opts.webhook_max_rate_per_endpoint.unwrap_or(250),
        webhook_busy_rate_per_endpoint: opts.webhook_busy_rate_per_endpoint.unwrap_or(25),
        webhook_cpu_pressure_file: opts
            .webhook_cpu_pressure_file
            .clone()
            .unwrap_or_else(|| "/proc/pressure/cpu".into()),
        webhook_allow_private_networks: opts.webhook_allow_private_networks.unwrap_or(true),
        webhook_secrets_key: opts.webhook_secrets_key.clone(),
        primary_api_url: opts.primary_api_url.clone(),
    };
    let clock: std::sync::Arc<dyn api::clock::Clock> = match opts.clock {
        Some(c) => c,
        None => std::sync::Arc::new(api::clock::SystemClock),
    };
    let running = api::start_with_clock(config, clock).await?;
    Ok(TestApp {
        base: format!("http://{}/api/v1", running.addr),
        metrics_url: format!(
            "http://{}/metrics",
            running.metrics_addr.expect("metrics are served")
        ),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        db_url,
        pool,
        nats_url,
        stream,
        prefix,
        running: Some(running),
    })
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub token: String,
}

/// A response: status, headers, JSON body (Null when empty or not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    /// The problem+json `code`, if any.
    pub fn code(&self) -> &str {
        self.body.get("code").and_then(Value::as_str).unwrap_or("")
    }

    pub fn str(&self, field: &str) -> String {
        self.body
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

impl TestApp {
    /// Stops the server (its workers finish their round).
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    /// What a second process needs to share this ledger.
    pub fn shared(&self) -> (String, String, String) {
        (
            self.db_url.clone(),
            self.stream.clone(),
            self.prefix.clone(),
        )
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body read");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn raw_post(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Resp {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let headers = res.headers().clone();
        let body = serde_json::from_slice(&res.bytes().await.expect("body")).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.request(Method::GET, path, token, None, &[]).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.request(Method::POST, path, token, Some(&body), &[])
            .await
    }

    /// Registers and logs in a fresh user.
    pub async fn user(&self) -> TestUser {
        let email = format!("u{}@example.com", Uuid::new_v4().simple());
        let r = self
            .post(
                "/auth/register",
                None,
                json!({ "email": email, "password": "password123" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "register: {:?}", r.body);
        let l = self
            .post(
                "/auth/login",
                None,
                json!({ "email": email, "password": "password123" }),
            )
            .await;
        assert_eq!(l.status, StatusCode::OK, "login: {:?}", l.body);
        TestUser {
            id: r.str("id"),
            email,
            token: l.str("access_token"),
        }
    }

    pub async fn deposit(&self, u: &TestUser, amount: &str) -> Resp {
        self.post(
            "/wallets/deposit",
            Some(&u.token),
            json!({ "userId": u.id, "amount": amount }),
        )
        .await
    }

    pub async fn transfer(&self, from: &TestUser, to: &str, amount: &str) -> Resp {
        self.post(
            "/transfers",
            Some(&from.token),
            json!({ "toUserId": to, "amount": amount }),
        )
        .await
    }

    /// Grants a role the way an operator does (`escrow users grant-role`), then logs in again.
    pub async fn grant(&self, u: &TestUser, role: &str) -> TestUser {
        api::admin::grant_role(&self.db_url, &u.email, role)
            .await
            .expect("role granted");
        let l = self
            .post(
                "/auth/login",
                None,
                json!({ "email": u.email, "password": "password123" }),
            )
            .await;
        assert_eq!(l.body["user"]["role"], json!(role));
        TestUser {
            token: l.str("access_token"),
            ..u.clone()
        }
    }

    /// Number of events in the store.
    pub async fn event_count(&self) -> i64 {
        sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
            .0
    }

    /// Waits until the read models have applied every event in the store.
    pub async fn wait_for_read_models(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (behind,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM (SELECT stream_id, max(version) v FROM events GROUP BY stream_id) e \
                 LEFT JOIN projection_streams p ON p.projection = 'read_models' AND p.stream_id = e.stream_id \
                 WHERE coalesce(p.version, 0) < e.v",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap();
            if behind == 0 {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Balances folded from the raw events, and the sum over every account (escrow, platform
/// revenue and world included).
pub async fn folded_ledger(pool: &PgPool) -> (HashMap<Uuid, Decimal>, Decimal) {
    let rows: Vec<(String, String, i32, Value)> =
        sqlx::query_as("SELECT stream_id, event_type, schema_version, data FROM events ORDER BY stream_id, version")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut wallets: HashMap<String, Versioned<Wallet>> = HashMap::new();
    let mut sums: HashMap<Account, Decimal> = HashMap::new();
    for (stream, ty, sv, data) in rows {
        let e = decode(&ty, sv, &data).expect("stored events decode");
        if let Some(id) = stream.strip_prefix("wallet-") {
            let wid = WalletId(Uuid::parse_str(id).unwrap());
            let w = wallets.entry(stream.clone()).or_default();
            for p in postings(Some(wid), &e) {
                *sums.entry(p.account).or_default() += p.delta;
            }
            w.apply(&e);
            assert!(
                w.state.balance >= Decimal::ZERO,
                "negative balance folded in {stream}"
            );
        } else if stream.starts_with("revenue-") || stream.starts_with("payout-") {
            for p in postings(None, &e) {
                *sums.entry(p.account).or_default() += p.delta;
            }
        }
    }
    // Each contract's escrow account must hold exactly what its own stream says is held.
    let held: Vec<(String, Decimal)> = sqlx::query_as::<_, (String,)>(
        "SELECT DISTINCT stream_id FROM events WHERE stream_id LIKE 'contract-%'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(s,)| (s, Decimal::ZERO))
    .collect();
    for (stream, _) in held {
        let rows: Vec<(String, i32, Value)> =
            sqlx::query_as("SELECT event_type, schema_version, data FROM events WHERE stream_id = $1 ORDER BY version")
                .bind(&stream)
                .fetch_all(pool)
                .await
                .unwrap();
        let events: Vec<domain::Event> = rows
            .iter()
            .map(|(t, v, d)| decode(t, *v, d).unwrap())
            .collect();
        let c: Versioned<domain::Contract> = Versioned::from_events(&events);
        let id = c
            .state
            .id
            .expect("contract stream starts with ContractCreated");
        let account = sums.get(&Account::Escrow(id)).copied().unwrap_or_default();
        assert_eq!(
            account,
            c.state.held + c.state.fee_held,
            "escrow account of {stream} equals its held amount and prepaid fee"
        );
    }
    let total = sums.values().copied().sum();
    let balances = wallets
        .into_values()
        .filter_map(|w| w.state.id.map(|id| (id.0, w.state.balance)))
        .collect();
    (balances, total)
}

/// Read-model balances by wallet id.
pub async fn read_model_balances(pool: &PgPool) -> HashMap<Uuid, Decimal> {
    sqlx::query_as::<_, (Uuid, Decimal)>("SELECT id, balance FROM rm_wallets")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// A nats-server of a test's own (for outage tests), on a free port with its own store.
pub struct OwnNats {
    pub url: String,
    port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

/// A port nobody listens on, for a server a test starts, stops and starts again. It is
/// taken below the kernel's range of ephemeral ports (`ip_local_port_range`): while such a
/// server is down, a client reconnecting to a port inside that range can be handed the
/// same port as its own source and connect to itself, and the restarted server then cannot
/// bind (a bench run met a port held by a client socket in the same way).
pub fn free_port() -> u16 {
    use rand::Rng as _;
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    if low > 11_000 {
        for _ in 0..64 {
            let port = rand::thread_rng().gen_range(10_000..low);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl OwnNats {
    pub async fn start() -> OwnNats {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("escrow-nats-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut n = OwnNats {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            dir,
            child: None,
        };
        n.restart().await;
        n
    }

    pub async fn restart(&mut self) {
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let child = tokio::process::Command::new(bin)
            .args(["-js", "-sd"])
            .arg(self.dir.join("js"))
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts (set NATS_SERVER_BIN)");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not start");
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A JetStream cluster of three nats-servers of a test's own, on free ports, each with its
/// own store.
pub struct OwnNatsCluster {
    /// Every member's client URL, comma-separated (as `NATS_URL` takes them).
    pub url: String,
    /// Each member's server name and client port.
    pub members: Vec<(String, u16)>,
    children: Vec<Option<tokio::process::Child>>,
    /// Each member's client and route port.
    ports: Vec<(u16, u16)>,
    dir: PathBuf,
}

impl OwnNatsCluster {
    /// Starts three members routed to each other; returns once each accepts clients.
    pub async fn start() -> OwnNatsCluster {
        let dir = std::env::temp_dir().join(format!("escrow-natsc-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let members: Vec<(String, u16)> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, _))| (format!("n{i}"), *client))
            .collect();
        let url = members
            .iter()
            .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = OwnNatsCluster {
            url,
            members,
            children: vec![None, None, None],
            ports,
            dir,
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.until_listening(i).await;
        }
        cluster
    }

    /// Starts member `i` on its ports and its own store (kept across restarts).
    fn spawn(&mut self, i: usize) {
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let routes = self
            .ports
            .iter()
            .map(|(_, r)| format!("nats://127.0.0.1:{r}"))
            .collect::<Vec<_>>()
            .join(",");
        let (name, (client, route)) = (&self.members[i].0, self.ports[i]);
        let child = tokio::process::Command::new(&bin)
            .args(["-js", "-sd"])
            .arg(self.dir.join(name))
            .args(["-a", "127.0.0.1", "-p", &client.to_string()])
            .args(["--server_name", name, "--cluster_name", "escrow"])
            .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
            .args(["--routes", &routes])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts (set NATS_SERVER_BIN)");
        self.children[i] = Some(child);
    }

    async fn until_listening(&self, i: usize) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.ports[i].0))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cluster member {} did not start", self.members[i].0);
    }

    fn index(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    /// Kills the member named `name` at once (SIGKILL: no goodbye to the others).
    pub async fn kill(&mut self, name: &str) {
        let i = self.index(name);
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill().await;
        }
    }

    /// Starts a killed member again, on its old ports and store; returns once it listens.
    pub async fn restart(&mut self, name: &str) {
        let i = self.index(name);
        assert!(self.children[i].is_none(), "{name} is running");
        self.spawn(i);
        self.until_listening(i).await;
    }
}

impl Drop for OwnNatsCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL cluster of a test's own (for restart tests), on a free port, run as the
/// `postgres` user when the tests run as root.
pub struct OwnPostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

fn as_postgres(cmd: &std::path::Path) -> std::process::Command {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(cmd);
        c
    } else {
        std::process::Command::new(cmd)
    }
}

impl OwnPostgres {
    /// Initialises and starts a cluster (a few seconds).
    pub fn start() -> OwnPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL installed under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("pg_ctl").exists())
            .max()
            .expect("a PostgreSQL version with pg_ctl");
        Self::made_by(
            bin.clone(),
            &bin.join("initdb"),
            &["-U", "postgres", "--auth=trust", "-D"],
        )
    }

    /// A cluster whose data directory `program args… <dir>/data` makes, in a fresh
    /// directory the `postgres` user owns, started on a free port.
    fn made_by(bin: PathBuf, program: &std::path::Path, args: &[&str]) -> OwnPostgres {
        let dir = std::env::temp_dir().join(format!("escrow-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let ok = as_postgres(program)
            .args(args)
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("{} runs: {e}", program.display()))
            .success();
        assert!(ok, "{} failed", program.display());
        let pg = OwnPostgres {
            port: free_port(),
            dir,
            bin,
        };
        pg.ctl(&["start", "-w", "-t", "60"]);
        pg
    }

    fn ctl(&self, args: &[&str]) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            self.port,
            self.dir.display()
        );
        let ok = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-o", &opts])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl runs")
            .success();
        assert!(ok, "pg_ctl {args:?} failed");
    }

    /// Stops with `mode` (`fast` or `immediate`) and starts again.
    pub fn restart(&self, mode: &str) {
        self.stop(mode);
        self.start_again();
    }

    /// Stops with `mode` (`fast`, or `immediate`: a crash, WAL recovery on the next start).
    pub fn stop(&self, mode: &str) {
        self.ctl(&["stop", "-m", mode, "-w"]);
    }

    /// Starts the cluster again after [`OwnPostgres::stop`].
    pub fn start_again(&self) {
        self.ctl(&["start", "-w", "-t", "60"]);
    }

    /// A hot standby of `primary` on a port of its own, streaming its WAL
    /// (`pg_basebackup -R`: the same cluster, transaction ids and all).
    pub fn standby_of(primary: &OwnPostgres) -> OwnPostgres {
        let port = primary.port.to_string();
        Self::made_by(
            primary.bin.clone(),
            &primary.bin.join("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                "-c",
                "fast",
                "-D",
            ],
        )
    }

    /// From now on a commit here returns only once a standby has applied it
    /// (`synchronous_standby_names = '*'`, `synchronous_commit = remote_apply`: what is
    /// acknowledged is on the standby, and readable there).
    pub async fn require_a_synchronous_standby(&self) {
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let pool = PgPool::connect(&admin).await.expect("connect");
        for q in [
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "ALTER SYSTEM SET synchronous_commit = 'remote_apply'",
            "SELECT pg_reload_conf()",
        ] {
            sqlx::query(q).execute(&pool).await.expect("configured");
        }
        pool.close().await;
    }

    /// Promotes a standby to a primary.
    pub fn promote(&self) {
        self.ctl(&["promote", "-w", "-t", "60"]);
    }

    /// The URL of database `name` (created if missing).
    pub async fn database(&self, name: &str) -> String {
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let pool = PgPool::connect(&admin)
            .await
            .expect("connect to own cluster");
        let _ = sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await;
        pool.close().await;
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
