//! `escrow`: the ledger's one binary.

use clap::{Parser, Subcommand};

use api::ServeConfig;

/// jemalloc instead of glibc's malloc: argon2id allocates 19 MiB per password hash, and
/// glibc (whose mmap threshold rises after the first such block is freed) then serves those
/// blocks from per-thread arenas it never returns, so the server's memory grows with every
/// burst of logins. jemalloc rather than mimalloc: its thread cache keeps free blocks in an
/// array instead of in the blocks themselves, which cost fewer cache misses per command and
/// a smaller peak RSS (docs/performance.md, "Tried and not kept").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Event-sourced escrow ledger.
#[derive(Debug, Parser)]
#[command(name = "escrow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    log_format: String,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Migrate the database, then serve the API and run the relay and projection worker.
    Serve(Box<ServeConfig>),
    /// Apply the database migrations and exit.
    Migrate {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Check the whole store: hash chains, conservation, escrow, read models. Exits 1 on any problem.
    Verify {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Rebuild read models from the event store aside from the live ones, then swap them in
    /// atomically. Interrupted, it resumes where it stopped when run again.
    Replay {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Which projection: `all` or `read_models` (they are rebuilt together).
        #[arg(long, default_value = "all")]
        projection: String,
        /// Events applied per transaction.
        #[arg(long, default_value_t = 5000)]
        batch_events: i64,
    },
    /// After restoring a dump into a new cluster: repair the feed's transaction ids if they
    /// are ahead of the cluster's, forget the feed checkpoints, rebuild the read models.
    /// Run once, with no server running; then serve with a fresh JetStream stream.
    Restore {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Re-send events to JetStream from a global position on (for integrations).
    Republish {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// NATS server URL.
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// JetStream stream name.
        #[arg(long, env = "NATS_STREAM", default_value = "ESCROW_EVENTS")]
        nats_stream: String,
        /// Subject prefix.
        #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "escrow.events")]
        nats_subject_prefix: String,
        /// First global position to send.
        #[arg(long)]
        from: i64,
    },
    /// Manage users (works against a running ledger).
    #[command(subcommand)]
    Users(UsersCmd),
    /// Exit 0 if the local server answers `GET /api/v1/ready` with 200 (for container
    /// health checks: no curl needed in the image).
    Healthcheck {
        /// Where the server listens.
        #[arg(long, env = "HEALTHCHECK_ADDR", default_value = "127.0.0.1:8080")]
        addr: String,
    },
    /// Read the event stream: follow it on NATS, or export it from Postgres (NDJSON).
    #[command(subcommand)]
    Events(EventsCmd),
}

#[derive(Debug, Subcommand)]
enum EventsCmd {
    /// Print events from JetStream as NDJSON; with --durable, a rerun resumes where it stopped.
    Tail {
        /// NATS server URL.
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// JetStream stream name.
        #[arg(long, env = "NATS_STREAM", default_value = "ESCROW_EVENTS")]
        nats_stream: String,
        /// Subject prefix.
        #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "escrow.events")]
        nats_subject_prefix: String,
        /// Subject filter, e.g. `wallet.>` or `contract.*.ContractFunded`.
        #[arg(long)]
        subject: Option<String>,
        /// Durable consumer name (resumable).
        #[arg(long)]
        durable: Option<String>,
        /// Skip events before this global position.
        #[arg(long)]
        from: Option<i64>,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// Stop after this many milliseconds without events.
        #[arg(long)]
        idle_exit_ms: Option<u64>,
    },
    /// Write the whole store (or one stream) as NDJSON envelopes, from Postgres.
    Export {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Only this stream, e.g. `wallet-<uuid>`.
        #[arg(long)]
        stream: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCmd {
    /// Give a user the arbiter, admin or service role (recorded as a RoleGranted event by
    /// `operator`).
    GrantRole {
        #[command(flatten)]
        who: WhoArgs,
        /// `arbiter`, `admin`, `service` or `user`.
        #[arg(long)]
        role: String,
    },
    /// Suspend an account (a UserSuspended event by `operator`): it cannot log in, and its
    /// tokens and sockets stop working within 5 seconds on every server.
    Suspend {
        #[command(flatten)]
        who: WhoArgs,
        /// Why (kept in the event and shown to admins).
        #[arg(long)]
        reason: String,
    },
    /// Lift an account's suspension (a UserReactivated event by `operator`).
    Reactivate {
        #[command(flatten)]
        who: WhoArgs,
    },
}

/// The database, and the user a `users` command acts on.
#[derive(Debug, clap::Args)]
struct WhoArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The user's e-mail address.
    #[arg(long, required_unless_present = "user_id", conflicts_with = "user_id")]
    email: Option<String>,
    /// The user's id, instead of the e-mail address.
    #[arg(long)]
    user_id: Option<String>,
}

impl WhoArgs {
    fn user(&self) -> anyhow::Result<api::admin::UserRef> {
        match (&self.email, &self.user_id) {
            (Some(e), _) => Ok(api::admin::UserRef::Email(e.clone())),
            (None, Some(id)) => Ok(api::admin::UserRef::Id(id.clone())),
            (None, None) => Err(anyhow::anyhow!("name the user with --email or --user-id")),
        }
    }
}

/// Logs to stdout (text or JSON), plus OpenTelemetry export when built with the `otel`
/// feature and configured; the guard flushes the export at exit.
fn init_logs(format: &str) -> api::otel::Guard {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let (otel, guard) = api::otel::layer::<tracing_subscriber::Registry>();
    let registry = tracing_subscriber::registry().with(otel).with(filter);
    if format == "json" {
        registry
            .with(tracing_subscriber::fmt::layer().json())
            .init();
    } else {
        // Colour only for a terminal: escape codes in a log file are noise, and painting
        // every span field costs CPU on every request.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        registry
            .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
            .init();
    }
    guard
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _otel = init_logs(&cli.log_format);
    let result = match cli.command {
        Cmd::Migrate { database_url } => api::server::migrate(&database_url).await,
        Cmd::Serve(config) => serve(*config).await,
        Cmd::Verify { database_url } => verify(&database_url).await,
        Cmd::Restore { database_url } => api::admin::restore(&database_url).await.map(|r| {
            println!(
                "restored: {} events renumbered, read models rebuilt from {} events; \
                 serve with a fresh JetStream stream",
                r.renumbered, r.replayed
            )
        }),
        Cmd::Replay {
            database_url,
            projection,
            batch_events,
        } => replay(&database_url, &projection, batch_events).await,
        Cmd::Republish {
            database_url,
            nats_url,
            nats_stream,
            nats_subject_prefix,
            from,
        } => {
            republish(
                &database_url,
                escrow_nats::JetStreamSettings {
                    url: nats_url,
                    stream_name: nats_stream,
                    subject_prefix: nats_subject_prefix,
                    ..Default::default()
                },
                from,
            )
            .await
        }
        Cmd::Events(EventsCmd::Tail {
            nats_url,
            nats_stream,
            nats_subject_prefix,
            subject,
            durable,
            from,
            limit,
            idle_exit_ms,
        }) => {
            let settings = escrow_nats::JetStreamSettings {
                url: nats_url,
                stream_name: nats_stream,
                subject_prefix: nats_subject_prefix,
                ..Default::default()
            };
            let options = escrow_nats::TailOptions {
                subject,
                durable,
                from_position: from,
                limit,
                idle_exit: idle_exit_ms.map(std::time::Duration::from_millis),
            };
            events_tail(settings, options).await
        }
        Cmd::Events(EventsCmd::Export {
            database_url,
            stream,
        }) => events_export(&database_url, stream.as_deref()).await,
        Cmd::Users(UsersCmd::GrantRole { who, role }) => match who.user() {
            Ok(user) => api::admin::grant_role_to(&who.database_url, &user, &role).await,
            Err(e) => Err(e),
        },
        Cmd::Users(UsersCmd::Suspend { who, reason }) => match who.user() {
            Ok(user) => api::admin::suspend(&who.database_url, &user, &reason).await,
            Err(e) => Err(e),
        },
        Cmd::Users(UsersCmd::Reactivate { who }) => match who.user() {
            Ok(user) => api::admin::reactivate(&who.database_url, &user).await,
            Err(e) => Err(e),
        },
        Cmd::Healthcheck { addr } => healthcheck(&addr).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("escrow: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn healthcheck(addr: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        let request =
            format!("GET /api/v1/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await?;
        let mut head = vec![0u8; 64];
        let n = conn.read(&mut head).await?;
        anyhow::Ok(String::from_utf8_lossy(&head[..n]).into_owned())
    };
    let head = tokio::time::timeout(std::time::Duration::from_secs(5), probe)
        .await
        .map_err(|_| anyhow::anyhow!("{addr} did not answer within 5 s"))??;
    let status = head.split_whitespace().nth(1).unwrap_or("none");
    anyhow::ensure!(status == "200", "{addr}: /api/v1/ready answered {status}");
    Ok(())
}

async fn verify(database_url: &str) -> anyhow::Result<()> {
    let started = chrono::Utc::now();
    let pool = event_store::connect(
        database_url,
        &event_store::PoolSettings {
            max_connections: 4,
            ..Default::default()
        },
    )
    .await?;
    let report = api::verify::verify(&pool).await?;
    if api::verify::print(&report, started) {
        Ok(())
    } else {
        std::process::exit(1);
    }
}

async fn replay(database_url: &str, projection: &str, batch_events: i64) -> anyhow::Result<()> {
    if projection != "all" && !projections::replay::PROJECTIONS.contains(&projection) {
        anyhow::bail!(
            "unknown projection {projection:?}; known: all, {}",
            projections::replay::PROJECTIONS.join(", ")
        );
    }
    let pool = event_store::connect(
        database_url,
        &event_store::PoolSettings {
            max_connections: 4,
            ..Default::default()
        },
    )
    .await?;
    let options = projections::replay::ReplayOptions {
        batch_events: batch_events.clamp(1, 100_000),
        ..Default::default()
    };
    let mut last_print = std::time::Instant::now();
    let stats = projections::replay::replay(&pool, &options, |p| {
        if last_print.elapsed() >= std::time::Duration::from_millis(500) || p.done >= p.total {
            last_print = std::time::Instant::now();
            let width = 30usize;
            let frac = if p.total == 0 {
                1.0
            } else {
                (p.done as f64 / p.total as f64).min(1.0)
            };
            let filled = (frac * width as f64) as usize;
            let eta = if p.rate > 0.0 {
                (p.total.saturating_sub(p.done)) as f64 / p.rate
            } else {
                0.0
            };
            eprint!(
                "\r[{}{}] {}/{} events  {:.0} ev/s  ETA {:.0}s   ",
                "#".repeat(filled),
                "-".repeat(width - filled),
                p.done,
                p.total,
                p.rate,
                eta
            );
        }
    })
    .await?;
    eprintln!();
    println!(
        "replayed {} events in {:.2}s ({:.0} events/s; loading {:.2}s, indexes and swap {:.2}s); \
         read models swapped in",
        stats.events,
        stats.elapsed.as_secs_f64(),
        stats.events as f64 / stats.elapsed.as_secs_f64().max(1e-6),
        stats.loading.as_secs_f64(),
        stats.elapsed.saturating_sub(stats.loading).as_secs_f64()
    );
    Ok(())
}

async fn republish(
    database_url: &str,
    nats: escrow_nats::JetStreamSettings,
    from: i64,
) -> anyhow::Result<()> {
    let pool = event_store::connect(
        database_url,
        &event_store::PoolSettings {
            max_connections: 2,
            ..Default::default()
        },
    )
    .await?;
    let client = escrow_nats::Nats::connect(&nats.url).await?;
    escrow_nats::ensure_stream(client.jetstream(), &nats).await?;
    let relay = escrow_nats::Relay::new(
        event_store::EventStore::new(pool),
        client.jetstream().clone(),
        nats,
        escrow_nats::RelaySettings::default(),
        std::sync::Arc::new(tokio::sync::Notify::new()),
    );
    let sent = relay.republish_from(from).await?;
    println!("re-sent {sent} events from position {from}");
    Ok(())
}

async fn events_tail(
    settings: escrow_nats::JetStreamSettings,
    options: escrow_nats::TailOptions,
) -> anyhow::Result<()> {
    let client = escrow_nats::Nats::connect_once(&settings.url).await?;
    let mut out = std::io::stdout();
    escrow_nats::tail(client.jetstream(), &settings, &options, &mut out).await?;
    Ok(())
}

async fn events_export(database_url: &str, stream: Option<&str>) -> anyhow::Result<()> {
    let pool = event_store::connect(
        database_url,
        &event_store::PoolSettings {
            max_connections: 2,
            ..Default::default()
        },
    )
    .await?;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let n = escrow_nats::export(&event_store::EventStore::new(pool), stream, &mut out).await?;
    drop(out);
    eprintln!("exported {n} events");
    Ok(())
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let running = api::start(config).await?;
    let stop = running.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    running.wait().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
