//! `escrow-large-store`: grows a ledger's store to millions of events through its real
//! write path (HTTP, the group commit, the relay, the projections) and measures, at each
//! size asked for, what its users and operators would feel: each read endpoint's latency,
//! then whatever `--checkpoint-cmd` measures (`bench/large-store.sh` times `escrow verify`
//! and `escrow replay` and weighs the store on disk).
//!
//! The load: users pay each other small sums; one user (the marketplace's own wallet, as
//! it were) is on one side of a tenth of the transfers, so its history grows large; one
//! command in fifty starts an escrow flow (create → fund → deliver → release). Reads are
//! measured with the load paused and the read models caught up, one request at a time per
//! client, four clients.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rand::Rng;
use serde_json::{json, Value};

mod flows;
// The load generator's client, shared as a file: this binary uses only part of it.
#[path = "http.rs"]
#[allow(dead_code)]
mod http;
use flows::{Commands, User};
use http::{Http, Method};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Grows a ledger's store and measures its reads at given sizes.
#[derive(Debug, Parser)]
#[command(name = "escrow-large-store", version, about)]
struct Args {
    /// The API's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/api/v1")]
    base: String,
    /// An admin's token (the audit reads need one; env BENCH_ADMIN_TOKEN).
    #[arg(long, env = "BENCH_ADMIN_TOKEN")]
    admin_token: String,
    /// Store sizes (events) at which to measure, ascending, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    events: Vec<i64>,
    /// Users paying each other.
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Concurrent clients while growing.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per read endpoint at each size.
    #[arg(long, default_value_t = 1000)]
    reads: usize,
    /// Run at each size after the reads (with `EVENTS` set to the size reached); its
    /// last line, if JSON, is part of the size's summary.
    #[arg(long)]
    checkpoint_cmd: Option<String>,
}

struct Grower {
    http: Http,
    users: Vec<User>,
    head: AtomicI64,
    commands: AtomicI64,
    failures: AtomicI64,
    stop: AtomicBool,
}

impl Commands for Grower {
    async fn command(&self, path: &str, user: &User, body: Value) -> Option<Value> {
        match self
            .http
            .request(Method::POST, path, Some(&user.token), Some(&body))
            .await
        {
            Ok(r) if (200..300).contains(&r.status) => {
                let v = r.json();
                if let Some(p) = v.get("position").and_then(Value::as_i64) {
                    self.head.fetch_max(p, Ordering::Relaxed);
                }
                self.commands.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            _ => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

impl Grower {
    async fn client(self: Arc<Self>, until: i64) {
        while !self.stop.load(Ordering::Relaxed) && self.head.load(Ordering::Relaxed) < until {
            let (a, b, roll) = {
                let mut rng = rand::thread_rng();
                let n = self.users.len();
                let a = rng.gen_range(1..n);
                let mut b = rng.gen_range(1..n);
                if b == a {
                    b = if b + 1 < n { b + 1 } else { 1 };
                }
                (a, b, rng.gen_range(0..50))
            };
            let (from, to) = match roll {
                // The large wallet (user 0) pays or is paid.
                0..=2 => (&self.users[0], &self.users[b]),
                3..=4 => (&self.users[a], &self.users[0]),
                5 => {
                    flows::escrow_flow(&*self, &self.users[a], &self.users[b], "large store").await;
                    continue;
                }
                _ => (&self.users[a], &self.users[b]),
            };
            self.command(
                "/transfers",
                from,
                json!({"toUserId": to.id, "amount": "0.01"}),
            )
            .await;
        }
    }
}

async fn register(http: &Http, run: &str, i: usize) -> anyhow::Result<User> {
    let creds =
        json!({"email": format!("large-{run}-{i}@example.com"), "password": "large-store-1"});
    let r = http
        .request(Method::POST, "/auth/register", None, Some(&creds))
        .await?;
    if r.status != 201 {
        bail!("register answered {}: {}", r.status, r.json());
    }
    let login = http
        .request(Method::POST, "/auth/login", None, Some(&creds))
        .await?
        .json();
    let user = User {
        id: login["user"]["id"].as_str().context("user id")?.to_owned(),
        token: login["access_token"].as_str().context("token")?.to_owned(),
    };
    let deposit = json!({"userId": user.id, "amount": "100000000"});
    let r = http
        .request(
            Method::POST,
            "/wallets/deposit",
            Some(&user.token),
            Some(&deposit),
        )
        .await?;
    if r.status != 201 {
        bail!("deposit answered {}: {}", r.status, r.json());
    }
    Ok(user)
}

/// p50 and p99 of `n` GETs of the paths `path(i)` gives, as `token(i)`, four at a time.
async fn latencies(
    http: &Arc<Http>,
    n: usize,
    path: impl Fn(usize) -> (String, String) + Send + Sync + 'static,
) -> anyhow::Result<Value> {
    let path = Arc::new(path);
    let mut tasks = Vec::new();
    for c in 0..4 {
        let (http, path) = (http.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            for i in (c..n).step_by(4) {
                let (p, token) = path(i);
                let t0 = Instant::now();
                let r = http.request(Method::GET, &p, Some(&token), None).await?;
                if r.status != 200 {
                    bail!("GET {p} answered {}: {}", r.status, r.json());
                }
                times.push(t0.elapsed().as_micros() as u64);
            }
            anyhow::Ok(times)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_unstable();
    let at = |p: f64| {
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all.get(i)
            .map_or(0.0, |us| (*us as f64 / 10.0).round() / 100.0)
    };
    Ok(json!({"p50_ms": at(0.5), "p99_ms": at(0.99), "requests": all.len()}))
}

/// Waits until the read models include `position` (a wallet read with `minPosition`).
async fn caught_up(http: &Http, user: &User, position: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let r = http
            .request(
                Method::GET,
                &format!("/wallets/{}?minPosition={position}", user.id),
                Some(&user.token),
                None,
            )
            .await?;
        if r.status == 200 && r.header("x-read-consistency") == Some(b"fresh".as_slice()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the read models did not reach position {position} in 10 minutes");
        }
    }
}

async fn measure_reads(
    http: &Arc<Http>,
    users: &[User],
    admin: &str,
    head: i64,
    n: usize,
) -> anyhow::Result<Value> {
    let big = users[0].clone();
    let others: Arc<Vec<User>> = Arc::new(users[1..].to_vec());
    let admin = admin.to_owned();
    let wallet = {
        let big = big.clone();
        latencies(http, n, move |_| {
            (format!("/wallets/{}", big.id), big.token.clone())
        })
        .await?
    };
    // Pages that begin a tenth of the way into the store, whose rows are the large
    // wallet's oldest tenth: a client paging back through a long history.
    let deep = {
        let big = big.clone();
        latencies(http, n, move |i| {
            let cursor = head / 10 + (i as i64 * 7919) % (head / 20).max(1);
            (
                format!("/wallets/{}/transactions?limit=20&cursor={cursor}", big.id),
                big.token.clone(),
            )
        })
        .await?
    };
    let contracts = {
        let others = others.clone();
        latencies(http, n, move |i| {
            let u = &others[i % others.len()];
            (format!("/contracts/user/{}", u.id), u.token.clone())
        })
        .await?
    };
    let audit_user = {
        let (others, admin) = (others.clone(), admin.clone());
        latencies(http, n, move |i| {
            let u = &others[i % others.len()];
            (format!("/audit/logs/user/{}", u.id), admin.clone())
        })
        .await?
    };
    let audit_filter = {
        let admin = admin.clone();
        latencies(http, n, move |i| {
            let kind = ["ContractReleased", "ContractFunded", "FundsDeposited"][i % 3];
            (format!("/audit/logs?type={kind}&limit=50"), admin.clone())
        })
        .await?
    };
    Ok(json!({
        "wallet": wallet,
        "history_deep_page": deep,
        "contract_list": contracts,
        "audit_by_user": audit_user,
        "audit_by_filter": audit_filter,
    }))
}

fn checkpoint(cmd: &str, events: i64) -> anyhow::Result<Value> {
    eprintln!("at {events} events: {cmd}");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("EVENTS", events.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the checkpoint command")?;
    if !out.status.success() {
        bail!("the checkpoint command failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.users < 3 || args.events.is_empty() || args.reads == 0 {
        bail!("need at least 3 users, one size and one read");
    }
    let http = Arc::new(Http::new(&args.base, Duration::from_secs(60))?);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut users = Vec::with_capacity(args.users);
    for chunk in (0..args.users).collect::<Vec<_>>().chunks(8) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|i| {
                let (http, run, i) = (http.clone(), run.clone(), *i);
                tokio::spawn(async move { register(&http, &run, i).await })
            })
            .collect();
        for h in batch {
            users.push(h.await??);
        }
    }
    let http = Arc::into_inner(http).context("registration still holds the client")?;
    let grower = Arc::new(Grower {
        http,
        users,
        head: AtomicI64::new(0),
        commands: AtomicI64::new(0),
        failures: AtomicI64::new(0),
        stop: AtomicBool::new(false),
    });
    let reader = Arc::new(Http::new(&args.base, Duration::from_secs(60))?);
    let mut grown_for = Duration::ZERO;
    let mut results = Vec::new();
    for &target in &args.events {
        let (t0, commands0, head0) = (
            Instant::now(),
            grower.commands.load(Ordering::Relaxed),
            grower.head.load(Ordering::Relaxed),
        );
        let clients: Vec<_> = (0..args.concurrency)
            .map(|_| tokio::spawn(grower.clone().client(target)))
            .collect();
        let mut last_report = Instant::now();
        for c in clients {
            while !c.is_finished() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if last_report.elapsed() >= Duration::from_secs(30) {
                    last_report = Instant::now();
                    eprintln!(
                        "… {} events, {:.0} events/s",
                        grower.head.load(Ordering::Relaxed),
                        (grower.head.load(Ordering::Relaxed) - head0) as f64
                            / t0.elapsed().as_secs_f64()
                    );
                }
            }
            c.await?;
        }
        let took = t0.elapsed();
        grown_for += took;
        let head = grower.head.load(Ordering::Relaxed);
        let rate = (head - head0) as f64 / took.as_secs_f64();
        eprintln!(
            "{head} events ({} commands in {:.0} s, {rate:.0} events/s); waiting for the read models",
            grower.commands.load(Ordering::Relaxed) - commands0,
            took.as_secs_f64()
        );
        caught_up(&reader, &grower.users[0], head).await?;
        let reads =
            measure_reads(&reader, &grower.users, &args.admin_token, head, args.reads).await?;
        let ops = match &args.checkpoint_cmd {
            Some(cmd) => checkpoint(cmd, head)?,
            None => Value::Null,
        };
        let summary = json!({
            "events": head,
            "grown_events_per_s": rate.round(),
            "grown_for_s": grown_for.as_secs(),
            "failed_commands": grower.failures.load(Ordering::Relaxed),
            "reads": reads,
            "operations": ops,
        });
        println!("{summary}");
        results.push(summary);
    }
    println!("{}", Value::Array(results));
    Ok(())
}
