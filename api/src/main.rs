//! `escrow`: the ledger's one binary.

use clap::{Parser, Subcommand};

use api::ServeConfig;

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
    /// Manage users (works against a running ledger).
    #[command(subcommand)]
    Users(UsersCmd),
}

#[derive(Debug, Subcommand)]
enum UsersCmd {
    /// Give a user the arbiter or admin role (recorded as a RoleGranted event by `operator`).
    GrantRole {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// The user's e-mail address.
        #[arg(long)]
        email: String,
        /// `arbiter`, `admin` or `user`.
        #[arg(long)]
        role: String,
    },
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.log_format);
    let result = match cli.command {
        Cmd::Migrate { database_url } => api::server::migrate(&database_url).await,
        Cmd::Serve(config) => serve(*config).await,
        Cmd::Verify { database_url } => verify(&database_url).await,
        Cmd::Users(UsersCmd::GrantRole {
            database_url,
            email,
            role,
        }) => api::admin::grant_role(&database_url, &email, &role).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("escrow: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
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
