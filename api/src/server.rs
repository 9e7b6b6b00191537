//! Building the router and running the process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
use argon2::Argon2;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use command_handlers::Ledger;
use escrow_nats::{JetStreamSettings, Relay, RelaySettings};
use event_store::{EventStore, PoolSettings, MIGRATOR};
use projections::{ProjectionWorker, WorkerSettings};
use rand::RngCore;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::TokenKeys;
use crate::clock::{Clock, SystemClock};
use crate::config::{ServeConfig, WorkerRole};
use crate::error::ApiError;
use crate::limits::Budget;
use crate::routes::{
    audit, auth, contracts, disputes, freezes, health, milestones, payins, payouts, platform,
    statements, users, wallets, webhooks, ws,
};
use crate::scheduler::Deadlines;
use crate::state::AppState;

/// A running ledger process.
pub struct Running {
    /// Where the API listens (when it runs one).
    pub addr: SocketAddr,
    /// Where `/metrics` is served (unless `METRICS_ADDR` is empty).
    pub metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    ledger: Arc<Ledger>,
}

impl Running {
    /// Stops accepting, lets workers finish their current round, and waits (bounded).
    /// The committer stops last: requests still being answered may need it.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.ledger.shutdown().await;
    }

    /// Waits until the process stops (its shutdown handle was sent `true`), then stops
    /// the committer.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        self.ledger.shutdown().await;
    }

    /// A handle that makes the process stop when sent `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// The CORS layer `CORS_ORIGINS` asks for: none when empty; any origin for `*` alone (no
/// credentials are ever allowed, so a wildcard exposes nothing a page could not fetch
/// itself); otherwise the listed origins. `*` among other origins, or an origin that is
/// not a valid header value, is refused.
pub fn cors_layer(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins == ["*"] {
        AllowOrigin::any()
    } else {
        anyhow::ensure!(
            !origins.contains(&"*"),
            "CORS_ORIGINS: `*` allows every origin and must be given alone"
        );
        let mut list = Vec::with_capacity(origins.len());
        for o in origins {
            list.push(
                HeaderValue::from_str(o)
                    .with_context(|| format!("CORS_ORIGINS: {o:?} is not a valid origin"))?,
            );
        }
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderName::from_static("idempotency-key"),
            ]),
    ))
}

/// The router for a state and config.
pub fn router(state: AppState, config: &ServeConfig, cors: Option<CorsLayer>) -> Router {
    let api = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route(
            "/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/refresh", post(auth::refresh))
        .route("/admin/users/{id}/suspend", post(users::suspend))
        .route("/admin/users/{id}/reactivate", post(users::reactivate))
        .route(
            "/admin/fee-schedule",
            put(platform::set_fee_schedule).get(platform::fee_schedules),
        )
        .route("/platform/revenue", get(platform::revenue))
        .route(
            "/platform/revenue/transactions",
            get(platform::revenue_transactions),
        )
        .route(
            "/platform/revenue/withdraw",
            post(platform::withdraw_revenue),
        )
        .route("/users/me", get(users::me))
        .route("/users/lookup", get(users::lookup))
        .route("/users/{id}", get(users::by_id))
        .route("/wallets/deposit", post(wallets::deposit))
        .route("/wallets/withdraw", post(wallets::withdraw))
        .route("/wallets/{userId}", get(wallets::get_wallet))
        .route("/wallets/{userId}/transactions", get(wallets::transactions))
        .route("/wallets/{userId}/statement", get(statements::statement))
        .route("/transfers", post(wallets::transfer))
        .route("/contracts", post(contracts::create))
        .route("/contracts/{id}", get(contracts::get))
        .route("/contracts/user/{userId}", get(contracts::list_for_user))
        .route("/contracts/{id}/fund", post(contracts::fund))
        .route("/contracts/{id}/deliver", post(contracts::deliver))
        .route("/contracts/{id}/release", post(contracts::release))
        .route("/contracts/{id}/refund", post(contracts::refund))
        .route("/contracts/{id}/cancel", post(contracts::cancel))
        .route("/payins", post(payins::create).get(payins::list))
        .route("/payins/{id}", get(payins::get))
        .route("/payins/{id}/confirm", post(payins::confirm))
        .route("/payins/{id}/fail", post(payins::fail))
        .route("/payouts", post(payouts::create).get(payouts::list))
        .route("/payouts/{id}", get(payouts::get))
        .route("/payouts/{id}/complete", post(payouts::complete))
        .route("/payouts/{id}/fail", post(payouts::fail))
        .merge(webhooks::routes())
        .route("/admin/wallets/{userId}/freeze", post(freezes::freeze))
        .route("/admin/wallets/{userId}/unfreeze", post(freezes::unfreeze))
        .route(
            "/contracts/{id}/milestones/{n}/deliver",
            post(milestones::deliver),
        )
        .route(
            "/contracts/{id}/milestones/{n}/release",
            post(milestones::release),
        )
        .route(
            "/contracts/{id}/milestones/{n}/refund",
            post(milestones::refund),
        )
        .route("/disputes", post(disputes::raise).get(disputes::list))
        .route("/disputes/{id}", get(disputes::get))
        .route("/disputes/{id}/resolve", put(disputes::resolve))
        .route("/contracts/{id}/history", get(audit::contract_history))
        .route("/audit/logs", get(audit::all))
        .route("/audit/logs/user/{userId}", get(audit::for_user))
        .route("/logs", post(audit::record))
        .route("/logs/user/{userId}", get(audit::logs_for_user))
        .route("/notify", post(ws::notify_at_seed_path))
        .route("/ws", get(ws::ws))
        .route("/notifications", post(ws::notify))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::record,
        ));
    let mut app = Router::new()
        .nest("/api/v1", api)
        .fallback(|| async { ApiError::not_found("NOT_FOUND", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "this endpoint does not accept that method",
            )
        })
        .with_state(state.clone())
        .merge(crate::pages::routes())
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::limits::enforce,
        ))
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(axum::middleware::from_fn(crate::telemetry::trace_request));
    if config.role == WorkerRole::Query {
        let primary = crate::query_node::Primary(config.primary_api_url.clone());
        app = app.layer(axum::middleware::from_fn_with_state(
            primary,
            crate::query_node::refuse_writes,
        ));
    }
    if let Some(cors) = cors {
        app = app.layer(cors);
    }
    app
}

/// Serves `GET /metrics` on a listener of its own until shutdown.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(crate::metrics::scrape))
        .fallback(|| async { ApiError::not_found("NOT_FOUND", "only /metrics is served here") })
        .with_state(state);
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::warn!(error = %e, "the metrics listener stopped");
    }
}

/// Folds histogram samples into their buckets every few seconds until shutdown, whether or
/// not anyone scrapes.
async fn keep_metrics(metrics: Arc<crate::metrics::Metrics>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(crate::metrics::UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => metrics.upkeep(),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Limits applied to every HTTP connection before a request reaches the router.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    /// A client must send its whole request head within this time (slow-loris defence).
    header_read_timeout: Duration,
    /// Largest request head accepted; a larger one gets 431.
    header_bytes_max: usize,
}

/// Accepts connections until shutdown and serves each with HTTP/1.1 (WebSocket upgrades
/// included) under [`ConnectionLimits`]. On shutdown every connection finishes its
/// in-flight request and closes.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
        };
        let service = TowerToHyperService::new(
            app.clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        );
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.header_bytes_max);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                }
                _ = async { let _ = conn_shutdown.wait_for(|stop| *stop).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

/// Migrates the database (idempotent; safe with several processes starting at once).
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    let pool = event_store::connect(
        database_url,
        &PoolSettings {
            max_connections: 2,
            ..Default::default()
        },
    )
    .await
    .context("connecting to Postgres")?;
    MIGRATOR.run(&pool).await.context("running migrations")?;
    pool.close().await;
    Ok(())
}

/// Where the ledger's reports go: commands and appends to the metrics, committed events to
/// read-your-writes (so a `minPosition` this instance answered needs no statement).
struct Reports {
    metrics: Arc<crate::metrics::Metrics>,
    freshness: Arc<projections::Freshness>,
}

impl command_handlers::Observer for Reports {
    fn command(&self, command: &'static str, outcome: &str, seconds: f64, attempts: u32) {
        self.metrics.command(command, outcome, seconds, attempts);
    }

    fn append(&self, commands: usize, streams: usize, events: usize) {
        self.metrics.append(commands, streams, events);
    }

    fn committed(&self, events: &[(i64, &str, i64)]) {
        self.freshness.events_committed(events.iter().copied());
    }
}

/// Starts the API and/or the workers and returns once the listener is bound.
pub async fn start(config: ServeConfig) -> anyhow::Result<Running> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// [`start`] with a clock of the caller's (tests move time forward with it).
pub async fn start_with_clock(
    config: ServeConfig,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Running> {
    let secret = config.signing_secret()?;
    let cors = cors_layer(&config.cors_origins)?;
    let pool = event_store::connect(
        &config.database_url,
        &PoolSettings {
            max_connections: config.db_max_connections,
            ..Default::default()
        },
    )
    .await
    .context("connecting to Postgres")?;
    // A query node's standby is read-only: the primary migrates, and checks restores.
    if config.role.writes() {
        MIGRATOR.run(&pool).await.context("running migrations")?;
    }
    let store = EventStore::new(pool.clone());
    // Serving a store restored from a busier cluster would hide its events from the feed
    // (docs/operations.md, "Backups"): refuse until `escrow restore` has repaired it.
    let ahead = match config.role.writes() {
        true => store.restored_ahead().await?,
        false => None,
    };
    if let Some(ahead) = ahead {
        anyhow::bail!(
            "the event store holds transaction ids up to {} but this PostgreSQL cluster is at {}: \
             it was restored from another cluster's dump. Run `escrow restore` once (no server \
             running), then start again",
            ahead.stored,
            ahead.cluster_next
        );
    }
    let nats_settings = JetStreamSettings {
        url: config.nats_url.clone(),
        stream_name: config.nats_stream.clone(),
        subject_prefix: config.nats_subject_prefix.clone(),
        replicas: config.nats_stream_replicas,
    };
    let nats = escrow_nats::Nats::connect(&config.nats_url)
        .await
        .context("configuring the NATS client")?;
    let js = nats.jetstream().clone();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let relay_wake = Arc::new(Notify::new());
    let freshness = Arc::new(projections::Freshness::default());
    let mut tasks = Vec::new();

    if config.role.runs_workers() {
        let relay = Relay::new(
            store.clone(),
            js.clone(),
            nats_settings.clone(),
            RelaySettings::default(),
            relay_wake.clone(),
        );
        tasks.push(tokio::spawn(relay.run(shutdown_rx.clone())));
        let worker = ProjectionWorker::new(
            pool.clone(),
            js.clone(),
            nats_settings.clone(),
            WorkerSettings::default(),
        )
        .with_freshness(freshness.clone());
        tasks.push(tokio::spawn(worker.run(shutdown_rx.clone())));
    }

    let dummy_hash = tokio::task::spawn_blocking(|| {
        let salt = SaltString::generate(&mut OsRng);
        let mut pw = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut pw);
        Argon2::default()
            .hash_password(&pw, &salt)
            .map(|h| h.to_string())
    })
    .await?
    .map_err(|e| anyhow::anyhow!("hashing: {e}"))?;

    let webhook_secrets = ::webhooks::SecretBox::new(config.webhook_secrets_key.as_deref())
        .context("WEBHOOK_SECRETS_KEY")?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    tasks.push(tokio::spawn(keep_metrics(
        metrics.clone(),
        shutdown_rx.clone(),
    )));
    let ledger = Arc::new(Ledger::observed(
        store,
        Arc::new(Reports {
            metrics: metrics.clone(),
            freshness: freshness.clone(),
        }),
    ));
    if config.role.runs_workers() {
        tasks.push(tokio::spawn(crate::retention::prune(
            event_store::EventStore::new(pool.clone()),
            Duration::from_secs(config.idempotency_retention_hours.saturating_mul(3600)),
            shutdown_rx.clone(),
        )));
        let scheduler = Deadlines::new(
            ledger.clone(),
            pool.clone(),
            clock.clone(),
            relay_wake.clone(),
            config.auto_release_poll_ms,
        );
        tasks.push(tokio::spawn(scheduler.run(shutdown_rx.clone())));
        let deliverer = ::webhooks::Deliverer::new(
            pool.clone(),
            nats.clone(),
            nats_settings.clone(),
            ledger.clone(),
            config.webhook_settings(&webhook_secrets),
        )?;
        tasks.push(tokio::spawn(deliverer.run(shutdown_rx.clone())));
    }
    let hub = Arc::new(crate::notify::Hub::default());
    if config.role.serves_http() {
        tasks.push(tokio::spawn(crate::notify::fan_out(
            nats.clone(),
            pool.clone(),
            hub.clone(),
            config.nats_subject_prefix.clone(),
            shutdown_rx.clone(),
        )));
    }
    let kept = ledger.clone();
    // RATE_LIMITS_SHARED: one budget per user and address across every process.
    let shared_budgets =
        (config.rate_limits_shared && config.role.writes()).then(|| EventStore::new(pool.clone()));
    let shared = shared_budgets.as_ref();
    let state = AppState::new(crate::state::Shared {
        ledger,
        pool,
        tokens: Arc::new(TokenKeys::with_claims(
            &secret,
            config.jwt_ttl_seconds,
            &config.jwt_issuer,
            &config.jwt_audience,
        )),
        nats: Some(nats),
        relay_wake,
        dummy_hash: Arc::new(dummy_hash),
        read_wait: Duration::from_millis(config.read_wait_ms),
        session_consistency: config.session_consistency,
        self_deposits: config.self_deposits,
        freshness,
        clock,
        hub,
        ws_connections_per_user_max: config.ws_connections_per_user_max,
        sessions: Arc::default(),
        refresh_ttl_seconds: config.jwt_refresh_ttl_seconds,
        subject_prefix: config.nats_subject_prefix.clone(),
        limits: Arc::new(crate::limits::Limits {
            per_ip: Budget::new(config.rate_limit_per_ip_per_minute, "ip", shared),
            per_user: Budget::new(config.rate_limit_per_user_per_minute, "user", shared),
            per_ip_auth: Budget::new(config.rate_limit_auth_per_ip_per_minute, "ip-auth", shared),
            lookups_per_user: Budget::new(
                config.rate_limit_lookups_per_user_per_minute,
                "lookup",
                shared,
            ),
            request_timeout: Duration::from_millis(config.request_timeout_ms.max(1)),
            trusted_proxies: crate::client_addr::parse_list(&config.trusted_proxies)
                .map_err(|e| anyhow::anyhow!("TRUSTED_PROXIES: {e}"))?,
        }),
        metrics,
        webhooks: Arc::new(crate::state::WebhookAdmin {
            allow_private_networks: config.webhook_allow_private_networks,
            secrets: webhook_secrets,
        }),
        shutdown: shutdown_rx.clone(),
    });

    let metrics_addr = match config.metrics_addr.trim() {
        "" => None,
        given => {
            let at: SocketAddr = given
                .parse()
                .with_context(|| format!("METRICS_ADDR {given:?} is not an address:port"))?;
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding METRICS_ADDR {at}"))?;
            let bound = listener.local_addr()?;
            tasks.push(tokio::spawn(serve_metrics(
                listener,
                state.clone(),
                shutdown_rx.clone(),
            )));
            tracing::info!("metrics on http://{bound}/metrics");
            Some(bound)
        }
    };
    let mut addr: SocketAddr = format!("{}:{}", config.host, config.port)
        .parse()
        .with_context(|| format!("invalid listen address {}:{}", config.host, config.port))?;
    if config.role.serves_http() {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        addr = listener.local_addr()?;
        let app = router(state, &config, cors);
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms.max(100)),
            header_bytes_max: config.header_bytes_max.max(8 * 1024),
        };
        tasks.push(tokio::spawn(serve_http(
            listener,
            app,
            limits,
            shutdown_rx.clone(),
        )));
        tracing::info!("escrow ledger listening on http://{addr}/api/v1");
    }
    Ok(Running {
        addr,
        metrics_addr,
        shutdown: shutdown_tx,
        tasks,
        ledger: kept,
    })
}
