//! Fault tests against the real `escrow` binary: `kill -9` mid-load, then restart.
//! Every acknowledged command must survive; retries with the same Idempotency-Key must
//! answer the same; `verify` must pass; read models must converge.
//!
//! Each fault is injected after a number of acknowledged commands (a counter, not a
//! sleep), lasts until the load has seen it (a client retry), and each test asserts that
//! commands crossed it: retried commands that were acknowledged in the end, and
//! acknowledgements after it.
//!
//! One file past 600 lines: the three tests share the real binary's harness, the load, its
//! counters and the exactly-once check, and read best beside them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use escrow_tests::{free_port, fresh_database, TEST_JWT_SECRET};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const PASSWORD: &str = "fault-test-Passw0rd-1979";

pub(crate) fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("ESCROW_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("escrow")
}

/// The real `escrow serve` as a child process; its stdout and stderr go to `log`.
pub(crate) struct Server {
    pub(crate) child: Option<Child>,
    pub(crate) db: String,
    pub(crate) stream: String,
    pub(crate) prefix: String,
    pub(crate) port: u16,
    pub(crate) log: PathBuf,
    /// Extra arguments after `serve`.
    pub(crate) args: Vec<String>,
    /// Extra environment variables.
    pub(crate) env: Vec<(String, String)>,
}

impl Server {
    /// A server (not started) on a free port with its own JetStream stream and subjects,
    /// logging to a temporary file named after `tag`.
    pub(crate) fn new(db: String, tag: &str) -> Server {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let port = free_port();
        Server {
            child: None,
            db,
            stream: format!("{}_{id}", tag.to_uppercase()),
            prefix: format!("{tag}{id}.escrow.events"),
            port,
            log: std::env::temp_dir().join(format!("escrow-{tag}-{id}.log")),
            args: vec![],
            env: vec![],
        }
    }

    pub(crate) async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let out = log.try_clone().expect("log file");
        let child = Command::new(binary())
            .arg("serve")
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("DATABASE_URL", &self.db)
            .env("NATS_URL", std::env::var("NATS_URL").expect("NATS_URL"))
            .env("NATS_STREAM", &self.stream)
            .env("NATS_SUBJECT_PREFIX", &self.prefix)
            .env("PORT", self.port.to_string())
            .env("JWT_SECRET", TEST_JWT_SECRET)
            .env("RATE_LIMIT_PER_IP_PER_MINUTE", "0")
            .env("RATE_LIMIT_PER_USER_PER_MINUTE", "0")
            .env("RATE_LIMIT_AUTH_PER_IP_PER_MINUTE", "0")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .stdout(out)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("escrow binary starts (build it with `cargo build -p api --bin escrow`)");
        self.child = Some(child);
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http
                .get(format!("http://127.0.0.1:{}/api/v1/health", self.port))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("escrow did not start; see {}", self.log.display());
    }

    pub(crate) async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.expect("SIGKILL");
        }
    }
}

async fn call(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: &Value,
) -> Option<(u16, Value)> {
    let mut req = http.post(url).json(body).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await.ok()?;
    let status = res.status().as_u16();
    Some((status, res.json().await.unwrap_or(Value::Null)))
}

/// Commands acknowledged by the server: (Idempotency-Key, path, body, response).
pub(crate) type Acked = Vec<(String, String, Value, Value)>;

/// What the load has done so far, read by the test while it runs.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) acked: AtomicUsize,
    /// Failed attempts (no answer, 5xx or 429), each retried with the same key.
    pub(crate) retries: AtomicU64,
    /// Commands acknowledged after at least one failed attempt: in flight across a fault.
    pub(crate) retried_commands: AtomicUsize,
}

impl Progress {
    pub(crate) fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` commands were acknowledged (at most 60 s).
    pub(crate) async fn until_acked(&self, n: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acked() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} commands acknowledged within 60 s",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the load has retried more than `before` times (at most 60 s): the
    /// fault is one the clients met.
    pub(crate) async fn until_retried(&self, before: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.retries() <= before {
            assert!(
                Instant::now() < deadline,
                "{what}: no client retried within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub(crate) struct Load {
    pub(crate) acked: Acked,
    pub(crate) sent: u64,
    pub(crate) progress: Arc<Progress>,
}

/// Sends one command until it is answered (same key, same body on every try), as a careful
/// client does across a crash. Returns the response body.
async fn until_answered(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    path: &str,
    body: &Value,
    load: &mut Load,
) -> Value {
    load.sent += 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failed = false;
    loop {
        match call(http, &format!("{base}{path}"), Some(token), Some(key), body).await {
            Some((200 | 201, resp)) => {
                load.acked
                    .push((key.to_owned(), path.to_owned(), body.clone(), resp.clone()));
                if failed {
                    load.progress
                        .retried_commands
                        .fetch_add(1, Ordering::SeqCst);
                }
                load.progress.acked.fetch_add(1, Ordering::SeqCst);
                return resp;
            }
            Some((status, resp)) if status < 500 && status != 429 => {
                panic!("{path} refused: {status} {resp}")
            }
            _ if Instant::now() < deadline => {
                failed = true;
                load.progress.retries.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => panic!("{path} never answered"),
        }
    }
}

/// The load: deposits, transfers and whole escrow flows (create → fund → release), every
/// command with its own Idempotency-Key. `progress` counts as it goes.
pub(crate) fn start_load(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    payer: &str,
    payee: &str,
    stop: &Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<Load>, Arc<Progress>) {
    let (http, base, stop) = (http.clone(), base.to_owned(), stop.clone());
    let (token, payer, payee) = (token.to_owned(), payer.to_owned(), payee.to_owned());
    let progress = Arc::new(Progress::default());
    let shared = progress.clone();
    let handle = tokio::spawn(async move {
        let mut load = Load {
            acked: Vec::new(),
            sent: 0,
            progress: shared,
        };
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let key = format!("load-{n}");
            match n % 5 {
                0 => {
                    let c = json!({"sellerId": payee, "buyerId": payer, "title": format!("job {n}"), "amount": "2.00"});
                    let created = until_answered(
                        &http,
                        &base,
                        &token,
                        &format!("{key}-create"),
                        "/contracts",
                        &c,
                        &mut load,
                    )
                    .await;
                    let id = created["id"].as_str().expect("contract id").to_owned();
                    for step in ["fund", "release"] {
                        let path = format!("/contracts/{id}/{step}");
                        until_answered(
                            &http,
                            &base,
                            &token,
                            &format!("{key}-{step}"),
                            &path,
                            &json!({}),
                            &mut load,
                        )
                        .await;
                    }
                }
                1 | 3 => {
                    let body = json!({"toUserId": payee, "amount": "1.00"});
                    until_answered(&http, &base, &token, &key, "/transfers", &body, &mut load)
                        .await;
                }
                _ => {
                    let body = json!({"userId": payer, "amount": "0.50"});
                    until_answered(
                        &http,
                        &base,
                        &token,
                        &key,
                        "/wallets/deposit",
                        &body,
                        &mut load,
                    )
                    .await;
                }
            }
        }
        load
    });
    (handle, progress)
}

/// Asserts that commands crossed the faults: some were retried and acknowledged in the end,
/// and every fault was followed by acknowledgements (`acked_after` holds, per fault, how many
/// commands were acknowledged after it ended).
pub(crate) fn assert_crossed(progress: &Progress, acked_after: &[(&str, usize)]) {
    assert!(progress.retries() > 0, "the load met the fault");
    assert!(
        progress.retried_commands.load(Ordering::SeqCst) > 0,
        "a command was in flight across the fault and acknowledged after it"
    );
    for (fault, n) in acked_after {
        assert!(*n > 0, "commands were acknowledged after {fault}");
    }
}

async fn count(pool: &sqlx::PgPool, sql: &str, arg: &str) -> i64 {
    sqlx::query_as::<_, (i64,)>(sql)
        .bind(arg)
        .fetch_one(pool)
        .await
        .unwrap()
        .0
}

/// Every acknowledged command is in the store exactly once, a retried key answers what it
/// answered first, read models converge (within 10 s) and `verify` passes. Returns
/// (lost, duplicated, time to converge).
pub(crate) async fn check_exactly_once(
    pool: &sqlx::PgPool,
    http: &reqwest::Client,
    base: &str,
    token: &str,
    acked: &Acked,
) -> (usize, usize, Duration) {
    let (mut lost, mut duplicated) = (0, 0);
    let mut tally = |n: i64, expected: i64| {
        if n == 0 {
            lost += 1;
        } else if n != expected {
            duplicated += 1;
        }
    };
    for (_, path, _, resp) in acked {
        let of_stream = "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = ";
        if path == "/transfers" || path == "/wallets/deposit" {
            let tx = resp["transaction"]["id"].as_str().unwrap();
            let n = count(
                pool,
                "SELECT count(*) FROM events WHERE data->>'transactionId' = $1",
                tx,
            )
            .await;
            tally(n, if path == "/transfers" { 2 } else { 1 });
        } else {
            let stream = format!("contract-{}", resp["id"].as_str().unwrap());
            let kind = match path.rsplit('/').next() {
                Some("fund") => "'ContractFunded'",
                Some("release") => "'ContractReleased'",
                _ => "'ContractCreated'",
            };
            tally(count(pool, &format!("{of_stream}{kind}"), &stream).await, 1);
        }
    }
    // Nothing took effect that was not acknowledged: every movement in the store is one
    // the client was told about (plus the initial funding deposit).
    let (movements,): (i64,) = sqlx::query_as(
        "SELECT count(DISTINCT data->>'transactionId') FROM events WHERE data ? 'transactionId'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let acked_movements = acked
        .iter()
        .filter(|(_, p, _, _)| !p.ends_with("/contracts"))
        .count();
    assert_eq!(
        movements as usize,
        acked_movements + 1,
        "no command took effect unacknowledged"
    );
    for (key, path, body, resp) in acked.iter().step_by((acked.len() / 7).max(1)) {
        let again = call(http, &format!("{base}{path}"), Some(token), Some(key), body)
            .await
            .unwrap();
        assert_eq!(&again.1, resp, "replay of {key}");
    }
    let recovered = Instant::now();
    let converged = loop {
        let (behind,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM (SELECT stream_id, max(version) v FROM events GROUP BY stream_id) e \
             LEFT JOIN projection_streams p ON p.projection = 'read_models' AND p.stream_id = e.stream_id WHERE coalesce(p.version, 0) < e.v",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if behind == 0 {
            break recovered.elapsed();
        }
        assert!(
            recovered.elapsed() < Duration::from_secs(10),
            "read models did not converge within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let report = api::verify::verify(pool).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    (lost, duplicated, converged)
}

/// One message per event on JetStream, and no event under two positions.
pub(crate) async fn assert_published_once(stream: &str, pool: &sqlx::PgPool, nats_url: &str) {
    let client = async_nats::connect(escrow_nats::server_addrs(nats_url).unwrap())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let messages = js
            .get_stream(stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages as i64;
        if messages == events || Instant::now() > deadline {
            assert_eq!(messages, events, "one JetStream message per event");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn two_users(
    http: &reqwest::Client,
    base: &str,
    id: &str,
) -> ((String, String), String) {
    let mut users = Vec::new();
    for n in 0..2 {
        let email = format!("f{n}{id}@example.com");
        let r = call(
            http,
            &format!("{base}/auth/register"),
            None,
            None,
            &json!({"email": email, "password": PASSWORD}),
        )
        .await
        .unwrap();
        assert_eq!(r.0, 201);
        let l = call(
            http,
            &format!("{base}/auth/login"),
            None,
            None,
            &json!({"email": email, "password": PASSWORD}),
        )
        .await
        .unwrap();
        assert_eq!(l.0, 200, "login: {}", l.1);
        users.push((
            r.1["id"].as_str().unwrap().to_owned(),
            l.1["access_token"].as_str().unwrap().to_owned(),
        ));
    }
    let payer = users[0].clone();
    let funded = call(
        http,
        &format!("{base}/wallets/deposit"),
        Some(&payer.1),
        None,
        &json!({"userId": payer.0, "amount": "100000"}),
    )
    .await
    .unwrap();
    assert_eq!(funded.0, 201, "the payer's funding: {}", funded.1);
    (payer, users[1].0.clone())
}

/// Fails when a stored answer is not the one first given (`event-store/src/batch.rs`: the
/// `CASE` that sets the stored response's `position` to the position its command reached
/// made `WHEN false`): a key retried against the restarted server answers position 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_load_loses_nothing_and_duplicates_nothing() {
    let (db, pool) = fresh_database().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut server = Server::new(db, "fault");
    let (port, log) = (server.port, server.log.clone());
    server.start().await;
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let http = reqwest::Client::new();
    let ((payer, payer_token), payee) = two_users(&http, &base, &id).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (load, progress) = start_load(&http, &base, &payer_token, &payer, &payee, &stop);
    progress.until_acked(40, "before the kill").await;
    let retries_before = progress.retries();
    server.kill9().await;
    let killed_at = Instant::now();
    // Down until a client has met the crash (a command failed and will be retried).
    progress
        .until_retried(retries_before, "after the kill")
        .await;
    server.start().await;
    let restarted_in = killed_at.elapsed();
    let acked_at_restart = progress.acked();
    progress
        .until_acked(acked_at_restart + 40, "after the restart")
        .await;
    stop.store(true, Ordering::Relaxed);
    let Load { acked, sent, .. } = load.await.expect("load finished");
    assert_crossed(
        &progress,
        &[("the restart", acked.len() - acked_at_restart)],
    );

    let (lost, duplicated, converged) =
        check_exactly_once(&pool, &http, &base, &payer_token, &acked).await;

    assert_published_once(&server.stream, &pool, &std::env::var("NATS_URL").unwrap()).await;

    // Nothing secret in the server's logs.
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !logs.contains(PASSWORD) && !logs.contains(TEST_JWT_SECRET) && !logs.contains("$argon2"),
        "secrets in logs"
    );

    println!(
        "kill -9: sent {sent}, acknowledged {} ({} after the restart), lost {lost}, duplicated {duplicated}, \
         client retries {}, commands across the crash {}, restart {restarted_in:?}, read models converged {converged:?} after the load",
        acked.len(),
        acked.len() - acked_at_restart,
        progress.retries(),
        progress.retried_commands.load(Ordering::SeqCst),
    );
    assert_eq!((lost, duplicated), (0, 0));
    server.kill9().await;
    std::fs::remove_file(&log).ok();
}

/// The backend `application_name`s of the sessions holding the relay's and the projection
/// worker's leases for `stream` (`None` where nobody holds it).
async fn lease_holders(pool: &sqlx::PgPool, stream: &str) -> [Option<String>; 2] {
    let mut holders = [None, None];
    for (slot, lease) in holders.iter_mut().zip([
        escrow_nats::relay_lease_name(stream),
        projections::lease_name(stream),
    ]) {
        if let Some(pid) = event_store::Lease::holder(pool, &lease).await.unwrap() {
            let (name,): (String,) =
                sqlx::query_as("SELECT application_name FROM pg_stat_activity WHERE pid = $1")
                    .bind(pid)
                    .fetch_one(pool)
                    .await
                    .unwrap();
            *slot = Some(name);
        }
    }
    holders
}

/// How long a standby may take to relay and project after the lease holder is killed, as
/// docs/operations.md states it: the standby asks for each lease once a second, and then
/// publishes and projects what the holder left.
const TAKEOVER_BOUND: Duration = Duration::from_secs(3);

/// Two processes; the one holding the relay and projection leases is killed with -9; the
/// other takes over and the read models keep up.
///
/// Fails without the lease being a session lock that dies with its connection
/// (`event-store/src/lease.rs`: `pg_try_advisory_lock` made `pg_try_advisory_xact_lock`
/// leaves both processes relaying, which the holder check before the kill refuses; the
/// standby never asking again, `Ok(None)` in `Relay::run` returning, fails the takeover
/// bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_holder_killed_the_standby_takes_over() {
    let (db, pool) = fresh_database().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let log = std::env::temp_dir().join(format!("escrow-lease-{id}.log"));
    let stream = format!("L_{id}");
    let mut holder = Server {
        child: None,
        db: format!("{db}?application_name=escrow-holder"),
        stream: stream.clone(),
        prefix: format!("l{id}.escrow.events"),
        port: free_port(),
        log: log.clone(),
        args: vec![],
        env: vec![],
    };
    holder.start().await;
    // The holder takes both leases before the standby exists.
    let deadline = Instant::now() + Duration::from_secs(10);
    let holder_name = Some("escrow-holder".to_owned());
    while lease_holders(&pool, &stream).await != [holder_name.clone(), holder_name.clone()] {
        assert!(
            Instant::now() < deadline,
            "the first process took both leases"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut standby = Server {
        child: None,
        db: format!("{db}?application_name=escrow-standby"),
        stream: stream.clone(),
        prefix: holder.prefix.clone(),
        port: free_port(),
        log: log.clone(),
        args: vec![],
        env: vec![],
    };
    standby.start().await;
    let base = format!("http://127.0.0.1:{}/api/v1", standby.port);
    let http = reqwest::Client::new();
    let ((payer, token), payee) = two_users(&http, &base, &id).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (load, progress) = start_load(&http, &base, &token, &payer, &payee, &stop);
    progress.until_acked(30, "before the kill").await;
    // The process about to be killed is the one relaying and projecting.
    assert_eq!(
        lease_holders(&pool, &stream).await,
        [holder_name.clone(), holder_name.clone()],
        "the holder still holds both leases while the standby serves"
    );
    let acked_at_kill = progress.acked();
    holder.kill9().await;
    let killed = Instant::now();
    let dep = call(
        &http,
        &format!("{base}/wallets/deposit"),
        Some(&token),
        Some("after-kill"),
        &json!({"userId": payer, "amount": "12.34"}),
    )
    .await
    .unwrap();
    assert_eq!(dep.0, 201, "commands never depended on the lease holder");
    let position = dep.1["position"].as_i64().unwrap();
    let took_over = loop {
        if projections::Freshness::default()
            .wait_for_position(&pool, position, Duration::from_millis(100))
            .await
            .unwrap()
        {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < TAKEOVER_BOUND,
            "the standby did not relay and project within {TAKEOVER_BOUND:?}"
        );
    };
    let standby_name = Some("escrow-standby".to_owned());
    assert_eq!(
        lease_holders(&pool, &stream).await,
        [standby_name.clone(), standby_name],
        "the standby holds both leases"
    );
    progress
        .until_acked(progress.acked() + 30, "after the takeover")
        .await;
    stop.store(true, Ordering::Relaxed);
    let Load {
        mut acked, sent, ..
    } = load.await.expect("load finished");
    assert!(
        acked.len() > acked_at_kill,
        "the load went on across the kill"
    );
    acked.push((
        "after-kill".into(),
        "/wallets/deposit".into(),
        json!({"userId": payer, "amount": "12.34"}),
        dep.1,
    ));
    let (lost, duplicated, converged) =
        check_exactly_once(&pool, &http, &base, &token, &acked).await;
    assert_published_once(&standby.stream, &pool, &std::env::var("NATS_URL").unwrap()).await;
    println!(
        "lease holder killed: the standby relayed and projected within {took_over:?}; sent {sent}, acknowledged {} ({} after the kill), \
         lost {lost}, duplicated {duplicated}, client retries {}, converged {converged:?} after the load",
        acked.len(),
        acked.len() - acked_at_kill,
        progress.retries(),
    );
    assert_eq!((lost, duplicated), (0, 0));
    standby.kill9().await;
    std::fs::remove_file(&log).ok();
}

/// PostgreSQL restarted mid-load, first with a fast shutdown, then an immediate one (a
/// crash: no checkpoint, WAL recovery on start).
///
/// Fails without a failed batch statement being answered as transient
/// (`command-handlers/src/committer/batch.rs`: the committer answering a lost connection's batch as
/// written): acknowledged commands are then missing from the store (`lost` > 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarts_mid_load_lose_nothing() {
    let pg = escrow_tests::OwnPostgres::start();
    let db = pg.database("escrow").await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut server = Server::new(db.clone(), "pgfault");
    let (port, log) = (server.port, server.log.clone());
    server.start().await;
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let http = reqwest::Client::new();
    let ((payer, payer_token), payee) = two_users(&http, &base, &id).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (load, progress) = start_load(&http, &base, &payer_token, &payer, &payee, &stop);
    let mut outages = Vec::new();
    let mut acked_after = Vec::new();
    for mode in ["fast", "immediate"] {
        progress
            .until_acked(progress.acked() + 40, "before the restart")
            .await;
        let retries_before = progress.retries();
        let t = Instant::now();
        let pg_ref = &pg;
        tokio::task::block_in_place(|| pg_ref.stop(mode));
        // Down until a client has met the outage.
        progress.until_retried(retries_before, mode).await;
        tokio::task::block_in_place(|| pg_ref.start_again());
        outages.push((mode, t.elapsed()));
        let acked_at_restart = progress.acked();
        progress
            .until_acked(acked_at_restart + 40, "after the restart")
            .await;
        acked_after.push((mode, progress.acked() - acked_at_restart));
    }
    stop.store(true, Ordering::Relaxed);
    let Load { acked, sent, .. } = load.await.expect("load finished");
    assert_crossed(&progress, &acked_after);
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let (lost, duplicated, converged) =
        check_exactly_once(&pool, &http, &base, &payer_token, &acked).await;
    println!(
        "postgres restarts {outages:?}: sent {sent}, acknowledged {} ({acked_after:?} after each), lost {lost}, duplicated {duplicated}, \
         client retries {}, commands across the outages {}, read models converged {converged:?} after the load",
        acked.len(),
        progress.retries(),
        progress.retried_commands.load(Ordering::SeqCst),
    );
    assert_eq!((lost, duplicated), (0, 0));
    server.kill9().await;
    std::fs::remove_file(&log).ok();
}
