//! `escrow-bench`: drives a running ledger over HTTP with JWTs, like real clients.
//!
//! It registers N users and funds their wallets, then runs one workload for D seconds at
//! concurrency C: `transfers` (random pairs), `hot` (every transfer pays into or draws from
//! one fee wallet), `escrow` (create → fund → deliver → release flows) or `mixed`
//! (transfers plus balance and history queries). It reports commands/s, latency
//! percentiles, non-2xx answers by status and problem code, projection lag (from a
//! command's response until a query with `minPosition` sees it), the server's peak RSS,
//! and checks that no money appeared or vanished. The last line is one JSON summary.
//! `--every S` also prints a timeline to stderr — rate, latency and lag per S seconds —
//! which tells a tail made by a few stalls from one spread through the run.
//!
//! `bench/run.sh` starts a server and Postgres/NATS and passes `--ceiling-cmd`, with which
//! the one-transaction-per-transfer ceiling is measured by pgbench right before the load
//! and right after it; the ratio is taken against their mean.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use rand::Rng;
use rust_decimal::Decimal;
use serde_json::{json, Value};

mod flows;
mod hooks;
mod http;
mod report;
use flows::{Commands, User};
use http::{Http, Method};
use report::{measure_ceiling, peak_rss_mib, percentile, print_timeline, Ceiling, Stats};

/// The load generator allocates on every request; with glibc's allocator that was a sixth
/// of its CPU, which the server it shares the machine with did not get.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Transfers between random pairs of users.
    Transfers,
    /// Every transfer pays into, or draws from, one fee wallet.
    Hot,
    /// Full escrow flows: create, fund, deliver, release.
    Escrow,
    /// Half transfers, a quarter balance queries, a quarter history queries.
    Mixed,
}

/// Load generator for the escrow ledger.
#[derive(Debug, Parser)]
#[command(name = "escrow-bench", version, about)]
struct Args {
    /// The API's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/api/v1")]
    base: String,
    /// Which workload to run.
    #[arg(long, value_enum, default_value = "transfers")]
    workload: Workload,
    /// Users to register and fund.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Seconds to run the workload.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Each user's starting balance.
    #[arg(long, default_value = "1000.00")]
    balance: Decimal,
    /// Measure the projection lag of every Nth successful command (of each client).
    #[arg(long, default_value_t = 10)]
    lag_every: u64,
    /// The server's process id, to report its peak RSS (VmHWM).
    #[arg(long)]
    server_pid: Option<u32>,
    /// The one-transaction-per-transfer ceiling measured in the same run (pgbench TPS).
    #[arg(long, conflicts_with = "ceiling_cmd")]
    ceiling_tps: Option<f64>,
    /// A shell command that measures the ceiling and prints its TPS as its last line
    /// (`bench/ceiling.sh …`). It is run right before the load and again after it (with
    /// `CEILING_ROUND` set to `before` or `after`), and the ratio is taken against the
    /// mean of the two, so a drift of the machine's speed during the run shows and does
    /// not favour either side.
    #[arg(long)]
    ceiling_cmd: Option<String>,
    /// Also print a timeline to stderr: commands/s, latency and lag per this many seconds
    /// (0: none), to tell a tail made by a few stalls from one spread through the run.
    #[arg(long, default_value_t = 0)]
    every: u64,
    /// An admin's token: with platform fees on, what the users paid in fees is in the
    /// platform's revenue, which conservation then counts (env BENCH_ADMIN_TOKEN).
    #[arg(long, env = "BENCH_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Webhook endpoints subscribed to every event for the load, all answered (200 at
    /// once) by a receiver in this process; needs --admin-token and a server with
    /// WEBHOOK_ALLOW_PRIVATE_NETWORKS=true. Their delivery lag is reported.
    #[arg(long, default_value_t = 0)]
    webhooks: usize,
    /// After the load, how long to wait at most for the webhook deliveries still queued
    /// (a backlog larger than the endpoints' rate allows is reported, not waited out).
    #[arg(long, default_value_t = 60)]
    webhook_drain_s: u64,
}

struct Bench {
    http: Http,
    args: Args,
    users: Vec<User>,
    stats: Mutex<Stats>,
    started: Instant,
}

/// One answer: status, problem code (if any), body.
struct Answer {
    status: u16,
    body: Value,
}

impl Commands for Bench {
    /// A command, timed and counted. Returns the answer if it was 2xx.
    async fn command(&self, path: &str, user: &User, body: Value) -> Option<Value> {
        let t0 = Instant::now();
        let answer = self
            .call(Method::POST, path, Some(&user.token), Some(body))
            .await;
        let micros = t0.elapsed().as_micros() as u64;
        let mut s = self.stats.lock().ok()?;
        s.commands.push(micros);
        s.answered_at.push(self.started.elapsed().as_secs_f32());
        match answer {
            Err(_) => {
                s.transport_errors += 1;
                None
            }
            Ok(a) if (200..300).contains(&a.status) => {
                if let Some(p) = a.body.get("position").and_then(Value::as_i64) {
                    s.max_position = s.max_position.max(p);
                }
                Some(a.body)
            }
            Ok(a) => {
                let code = a.body.get("code").and_then(Value::as_str).unwrap_or("");
                *s.refused.entry(format!("{} {code}", a.status)).or_default() += 1;
                None
            }
        }
    }
}

impl Bench {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let res = self
            .http
            .request(method, path, token, body.as_ref())
            .await?;
        Ok(Answer {
            status: res.status,
            body: res.json(),
        })
    }

    async fn query(&self, path: &str, user: &User) {
        let t0 = Instant::now();
        let answer = self.call(Method::GET, path, Some(&user.token), None).await;
        let micros = t0.elapsed().as_micros() as u64;
        if let Ok(mut s) = self.stats.lock() {
            s.queries.push(micros);
            match answer {
                Err(_) => s.transport_errors += 1,
                Ok(a) if (200..300).contains(&a.status) => {}
                Ok(a) => {
                    let code = a.body.get("code").and_then(Value::as_str).unwrap_or("");
                    *s.refused.entry(format!("{} {code}", a.status)).or_default() += 1;
                }
            }
        }
    }

    /// Time from a command's answer until a read-model query includes it. The server
    /// waits up to its READ_WAIT_MS for `minPosition`; a `stale` answer is asked again.
    async fn probe_lag(self: Arc<Self>, user: User, position: i64, answered: Instant) {
        let path = format!("/wallets/{}?minPosition={position}", user.id);
        while answered.elapsed() < Duration::from_secs(60) {
            let Ok(res) = self
                .http
                .request(Method::GET, &path, Some(&user.token), None)
                .await
            else {
                return;
            };
            let fresh = res.header("x-read-consistency") == Some(b"fresh");
            if res.status != 200 {
                return;
            }
            if fresh {
                let at = self.started.elapsed().as_secs_f64();
                if let Ok(mut s) = self.stats.lock() {
                    s.lags.push((at, answered.elapsed().as_micros() as u64));
                }
                return;
            }
        }
    }

    fn transfer_body(to: &User) -> Value {
        let cents: i64 = rand::thread_rng().gen_range(1..=100);
        json!({"toUserId": to.id, "amount": Decimal::new(cents, 2).to_string()})
    }

    /// One client's loop until the deadline.
    async fn client(self: Arc<Self>, deadline: Instant) {
        let n = self.users.len();
        // Each client starts its count at a random point, so that the probes of clients
        // started together do not all fall in the same moments of the run.
        let mut done: u64 = rand::thread_rng().gen_range(0..self.args.lag_every);
        while Instant::now() < deadline {
            let (a, b, roll) = {
                let mut rng = rand::thread_rng();
                let roll: u8 = rng.gen_range(0..4);
                let a = rng.gen_range(0..n);
                let mut b = rng.gen_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                (a, b, roll)
            };
            let (from, to) = (&self.users[a], &self.users[b]);
            let answered = match self.args.workload {
                Workload::Transfers => self
                    .command("/transfers", from, Self::transfer_body(to))
                    .await
                    .map(|r| (r, from.clone())),
                Workload::Hot => {
                    let fee = &self.users[0];
                    let payer = if a == 0 { to } else { from };
                    let (from, to) = if roll < 2 { (payer, fee) } else { (fee, payer) };
                    self.command("/transfers", from, Self::transfer_body(to))
                        .await
                        .map(|r| (r, from.clone()))
                }
                Workload::Mixed => match roll {
                    0 => {
                        self.query(&format!("/wallets/{}", from.id), from).await;
                        None
                    }
                    1 => {
                        self.query(&format!("/wallets/{}/transactions?limit=20", from.id), from)
                            .await;
                        None
                    }
                    _ => self
                        .command("/transfers", from, Self::transfer_body(to))
                        .await
                        .map(|r| (r, from.clone())),
                },
                // The release's answer, for the lag probe as the seller.
                Workload::Escrow => flows::escrow_flow(&*self, from, to, "bench")
                    .await
                    .map(|r| (r, to.clone())),
            };
            if let Some((body, user)) = answered {
                done += 1;
                if done % self.args.lag_every == 0 {
                    if let Some(p) = body.get("position").and_then(Value::as_i64) {
                        tokio::spawn(self.clone().probe_lag(user, p, Instant::now()));
                    }
                }
            }
        }
    }
}

async fn setup(http: &Arc<Http>, args: &Args) -> anyhow::Result<Vec<User>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let one = |i: usize| {
        let http = http.clone();
        let email = format!("bench-{run}-{i}@example.com");
        let balance = args.balance;
        async move {
            let creds = json!({"email": email, "password": "bench-password-1"});
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
                id: login["user"]["id"]
                    .as_str()
                    .context("login: user id")?
                    .to_owned(),
                token: login["access_token"]
                    .as_str()
                    .context("login: token")?
                    .to_owned(),
            };
            let deposit = json!({"userId": user.id, "amount": balance.to_string()});
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
            anyhow::Ok(user)
        }
    };
    let mut users = Vec::with_capacity(args.users);
    // Registration hashes a password (argon2id): a few at a time.
    for chunk in (0..args.users).collect::<Vec<_>>().chunks(8) {
        let batch: Vec<_> = chunk.iter().map(|i| tokio::spawn(one(*i))).collect();
        for h in batch {
            users.push(h.await??);
        }
    }
    Ok(users)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.users < 2 {
        bail!("--users must be at least 2");
    }
    if args.lag_every == 0 {
        bail!("--lag-every must be at least 1");
    }
    let http = Arc::new(Http::new(&args.base, Duration::from_secs(30))?);
    let t0 = Instant::now();
    let users = setup(&http, &args).await?;
    let http = Arc::into_inner(http).context("setup still holds the client")?;
    eprintln!(
        "set up {} users with {} each in {:.1} s",
        users.len(),
        args.balance,
        t0.elapsed().as_secs_f64()
    );
    let ceiling_before = match &args.ceiling_cmd {
        Some(cmd) => Some(measure_ceiling(cmd, "before")?),
        None => None,
    };
    // Subscribed after the setup and the first ceiling (which blocks this process while it
    // runs): the endpoints get the load's events only, and the receiver always answers.
    let receiver = match args.webhooks {
        0 => None,
        n => {
            let token = args
                .admin_token
                .as_deref()
                .context("--webhooks needs --admin-token")?;
            let (addr, got) = hooks::receiver().await?;
            let ids = hooks::subscribe(&http, token, addr, n).await?;
            Some((got, token.to_owned(), ids))
        }
    };
    let bench = Arc::new(Bench {
        http,
        users,
        stats: Mutex::new(Stats {
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            ..Stats::default()
        }),
        started: Instant::now(),
        args,
    });
    let deadline = Instant::now() + Duration::from_secs(bench.args.duration);
    let clients: Vec<_> = (0..bench.args.concurrency)
        .map(|_| tokio::spawn(bench.clone().client(deadline)))
        .collect();
    for c in clients {
        c.await?;
    }
    let elapsed = bench.started.elapsed().as_secs_f64();
    // The deliveries still queued are sent before anything else is measured.
    let drain = match &receiver {
        Some((got, token, ids)) => {
            let d = hooks::drained(got, Duration::from_secs(bench.args.webhook_drain_s)).await?;
            hooks::pause(&bench.http, token, ids).await?;
            Some(d)
        }
        None => None,
    };
    // Let the last lag probes answer (they give up after a minute).
    let probes_until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < probes_until && Arc::strong_count(&bench) > 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Conservation: with every flow finished, the users' balances add up to what was
    // deposited (the read models are asked to include the last command first).
    let max_position = bench.stats.lock().map(|s| s.max_position).unwrap_or(0);
    let mut total = Decimal::ZERO;
    let mut negative = 0;
    for u in &bench.users {
        let a = bench
            .call(
                Method::GET,
                &format!("/wallets/{}?minPosition={max_position}", u.id),
                Some(&u.token),
                None,
            )
            .await?;
        let balance: Decimal = a.body["balance"]
            .as_str()
            .with_context(|| format!("wallet of {}: {} {}", u.id, a.status, a.body))?
            .parse()?;
        if balance < Decimal::ZERO {
            negative += 1;
        }
        total += balance;
    }
    if let Some(admin) = &bench.args.admin_token {
        let r = bench
            .call(
                Method::GET,
                &format!("/platform/revenue?minPosition={max_position}"),
                Some(admin),
                None,
            )
            .await?;
        for account in r.body.as_array().into_iter().flatten() {
            if let Some(b) = account["balance"].as_str() {
                total += b.parse::<Decimal>()?;
            }
        }
    }
    let expected = bench.args.balance * Decimal::from(bench.users.len());
    let conserved = total == expected && negative == 0;
    let ceiling = match (&bench.args.ceiling_cmd, ceiling_before) {
        (Some(cmd), Some(before)) => {
            let after = measure_ceiling(cmd, "after")?;
            Some(Ceiling {
                tps: (before + after) / 2.0,
                sides: Some((before, after)),
            })
        }
        _ => bench
            .args
            .ceiling_tps
            .map(|tps| Ceiling { tps, sides: None }),
    };

    let s = bench
        .stats
        .lock()
        .map_err(|_| anyhow::anyhow!("stats lock poisoned"))?;
    let mut lat = s.commands.clone();
    lat.sort_unstable();
    let mut lags: Vec<u64> = s.lags.iter().map(|(_, l)| *l).collect();
    lags.sort_unstable();
    // Does the lag grow through the run? p99 of the first and the last third.
    let third = |from: f64, to: f64| {
        let mut v: Vec<u64> = s
            .lags
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, l)| *l)
            .collect();
        v.sort_unstable();
        percentile(&v, 0.99)
    };
    let d = bench.args.duration as f64;
    if bench.args.every > 0 {
        print_timeline(&s, bench.args.every as f64, d);
    }
    let (lag_first, lag_last) = (third(0.0, d / 3.0), third(2.0 * d / 3.0, d + 10.0));
    let overdrafts = s
        .refused
        .get("409 INSUFFICIENT_FUNDS")
        .copied()
        .unwrap_or(0);
    let other_refusals: u64 = s.refused.values().sum::<u64>() - overdrafts;
    let ok_commands = lat.len() as u64 - s.refused.values().sum::<u64>() - s.transport_errors;
    let cmds_per_s = lat.len() as f64 / elapsed;
    let rss = bench.args.server_pid.and_then(peak_rss_mib);
    let ratio = ceiling.as_ref().map(|c| cmds_per_s / c.tps);

    println!(
        "workload {:?}, {} clients, {} users, {:.1} s",
        bench.args.workload,
        bench.args.concurrency,
        bench.users.len(),
        elapsed
    );
    println!(
        "commands: {} ({} ok) = {:.0}/s; queries: {}",
        lat.len(),
        ok_commands,
        cmds_per_s,
        s.queries.len()
    );
    println!(
        "latency ms: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&lat, 0.50),
        percentile(&lat, 0.95),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    println!(
        "non-2xx: {:?}; transport errors: {}",
        s.refused, s.transport_errors
    );
    println!(
        "projection lag ms ({} samples): p50 {:.1}  p99 {:.1}; p99 first third {:.1}, last third {:.1}",
        lags.len(),
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        lag_first,
        lag_last
    );
    if let Some(r) = rss {
        println!("server peak RSS: {r:.1} MiB");
    }
    if let (Some(c), Some(r)) = (&ceiling, ratio) {
        if let Some((b, a)) = c.sides {
            println!("one-tx-per-transfer TPS: {b:.0} before the load, {a:.0} after it");
        }
        println!(
            "ratio = {cmds_per_s:.0} ledger commands/s ÷ {:.0} one-tx-per-transfer TPS = {r:.2}",
            c.tps
        );
    }
    let deliveries = receiver.as_ref().and_then(|(got, _, _)| {
        let g = got.lock().ok()?;
        // In microseconds, as `percentile` (which answers milliseconds) takes them.
        let mut lags = g.lags_us.clone();
        lags.sort_unstable();
        Some((g.count, percentile(&lags, 0.50), percentile(&lags, 0.99)))
    });
    if let (Some((n, p50, p99)), Some(d)) = (deliveries, drain) {
        println!(
            "webhooks: {} endpoints, {n} deliveries by {:.1} s after the load, lag ms p50 {p50:.1}  p99 {p99:.1} (of those delivered)",
            bench.args.webhooks,
            d.as_secs_f64()
        );
    }
    println!(
        "conservation: {} (sum of balances {total}, deposited {expected}, negative wallets {negative})",
        if conserved { "ok" } else { "BROKEN" }
    );
    let summary = json!({
        "workload": format!("{:?}", bench.args.workload).to_lowercase(),
        "concurrency": bench.args.concurrency,
        "users": bench.users.len(),
        "seconds": (elapsed * 10.0).round() / 10.0,
        "commands": lat.len(),
        "commands_ok": ok_commands,
        "commands_per_s": cmds_per_s.round(),
        "queries": s.queries.len(),
        "p50_ms": percentile(&lat, 0.50),
        "p95_ms": percentile(&lat, 0.95),
        "p99_ms": percentile(&lat, 0.99),
        "max_ms": percentile(&lat, 1.0),
        "non_2xx": s.refused,
        "overdrafts": overdrafts,
        "other_non_2xx": other_refusals,
        "transport_errors": s.transport_errors,
        "lag_samples": lags.len(),
        "lag_p50_ms": percentile(&lags, 0.50),
        "lag_p99_ms": percentile(&lags, 0.99),
        "lag_p99_first_third_ms": lag_first,
        "lag_p99_last_third_ms": lag_last,
        "server_peak_rss_mib": rss,
        "ceiling_tps": ceiling.as_ref().map(|c| c.tps),
        "ceiling_tps_before": ceiling.as_ref().and_then(|c| c.sides).map(|(b, _)| b),
        "ceiling_tps_after": ceiling.as_ref().and_then(|c| c.sides).map(|(_, a)| a),
        "ratio": ratio.map(|r| (r * 100.0).round() / 100.0),
        "conservation": if conserved { "ok" } else { "broken" },
        "webhooks": bench.args.webhooks,
        "webhook_deliveries": deliveries.map(|d| d.0),
        "webhook_lag_p50_ms": deliveries.map(|d| d.1),
        "webhook_lag_p99_ms": deliveries.map(|d| d.2),
        "webhook_drain_s": drain.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
    });
    println!("{summary}");
    if !conserved {
        bail!("money was not conserved");
    }
    Ok(())
}
