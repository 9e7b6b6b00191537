//! The deliverer: in one process at a time (the `webhooks` lease), one task per endpoint
//! stages the events its filter matches from the endpoint's own JetStream consumer and
//! sends them, oldest sequence first, one at a time. A failed delivery holds back the
//! endpoint's later ones (order per endpoint) and no other endpoint's; nothing here is on
//! a command's path.
//!
//! A delivery is marked `SUCCEEDED` before the next is sent, so a crash repeats at most
//! the one in flight, with its id and sequence. Those marks are written with
//! `synchronous_commit = off`: they survive this process dying, and a PostgreSQL crash
//! can at worst lose the last few, which are then sent again (at least once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use command_handlers::{Actor, Command, CommandContext, Ledger};
use domain::webhook::{filter_matches, ChangeWebhook, WebhookChange};
use domain::{Timestamp, WebhookId};
use escrow_nats::{JetStreamSettings, Nats, OrderedFeed};
use event_store::Lease;
use projections::read::WebhookRow;
use rand::Rng;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use crate::address::GuardedResolver;
use crate::pressure::CpuPressure;
use crate::secrets::{signature_header, signing, SecretBox};
use crate::stats;
use crate::store::{self, EnvelopeHead, Pending, Staged};

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// A delivery not answered 2xx within this fails its attempt.
    pub timeout: Duration,
    /// A delivery still failing this long after it was staged fails for good and
    /// disables its endpoint.
    pub max_age: Duration,
    /// The first retry's delay; each next one doubles it, up to `retry_max`.
    pub retry_base: Duration,
    /// The longest delay between two attempts.
    pub retry_max: Duration,
    /// Whether endpoints may be on loopback, private, link-local or multicast addresses.
    pub allow_private_networks: bool,
    /// Most deliveries a second to one endpoint (0: no limit). Receivers are spared
    /// bursts, and a backlog is sent at a pace that leaves the ledger its CPU.
    pub max_rate_per_endpoint: u32,
    /// Most deliveries a second to one endpoint while the CPU is contended (0: the same
    /// as when it is not): deliveries yield to commands under load.
    pub busy_rate_per_endpoint: u32,
    /// Where the CPU's pressure is read (`/proc/pressure/cpu`; none: never contended).
    pub cpu_pressure_file: Option<std::path::PathBuf>,
    /// Seals secrets at rest.
    pub secrets: SecretBox,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(72 * 3600),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(3600),
            allow_private_networks: false,
            max_rate_per_endpoint: 250,
            busy_rate_per_endpoint: 25,
            cpu_pressure_file: Some("/proc/pressure/cpu".into()),
            secrets: SecretBox::new(None).unwrap_or_else(|_| unreachable!("no key parses")),
        }
    }
}

/// At most this much of an answer's body is kept in the log.
pub const KEPT_BODY_BYTES: usize = 1024;
/// Messages staged per transaction.
const STAGE_BATCH: usize = 256;
/// Pending deliveries read per round.
const SEND_BATCH: i64 = 128;

/// The name of the deliverer's lease for the events stream `stream_name`.
pub fn lease_name(stream_name: &str) -> String {
    format!("webhooks:{stream_name}")
}

/// The durable consumer of endpoint `id`.
pub fn consumer_name(id: Uuid) -> String {
    format!("webhook-{}", id.simple())
}

/// The delay before attempt `attempts + 1`: `base` doubled per failed attempt, capped at
/// `max`, with ±20 % jitter so that endpoints failing together do not retry together.
pub fn backoff(attempts: i32, base: Duration, max: Duration) -> Duration {
    let doublings = attempts.clamp(1, 32) as u32 - 1;
    let d = base.saturating_mul(1u32 << doublings.min(31)).min(max);
    d.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

/// Delivers webhooks while it holds the lease.
pub struct Deliverer {
    ctx: Arc<Ctx>,
}

struct Ctx {
    pool: PgPool,
    nats: Nats,
    js: JetStreamSettings,
    ledger: Arc<Ledger>,
    settings: WebhookSettings,
    http: reqwest::Client,
    pressure: CpuPressure,
}

impl Deliverer {
    /// A deliverer reading endpoints from `pool`'s read model and disabling them through
    /// `ledger`.
    pub fn new(
        pool: PgPool,
        nats: Nats,
        js: JetStreamSettings,
        ledger: Arc<Ledger>,
        settings: WebhookSettings,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: settings.allow_private_networks,
            }))
            .user_agent(concat!(
                "escrow-ledger-webhooks/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self {
            ctx: Arc::new(Ctx {
                pool,
                nats,
                js,
                ledger,
                pressure: CpuPressure::new(settings.cpu_pressure_file.clone()),
                settings,
                http,
            }),
        })
    }

    /// Runs until `shutdown`: takes the lease when free, then keeps one task per live
    /// endpoint.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let name = lease_name(&self.ctx.js.stream_name);
        while !*shutdown.borrow() {
            match Lease::try_acquire(&self.ctx.pool, &name).await {
                Ok(Some(lease)) => {
                    tracing::info!("webhook deliverer holding its lease");
                    if let Err(e) = self.hold(lease, &mut shutdown).await {
                        tracing::warn!(error = %e, "webhook deliverer stopped; retrying");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "webhook deliverer cannot reach Postgres"),
            }
            sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await;
        }
    }

    async fn hold(
        &self,
        mut lease: Lease,
        shutdown: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let mut tasks: HashMap<Uuid, (watch::Sender<WebhookRow>, tokio::task::JoinHandle<()>)> =
            HashMap::new();
        let result = async {
            let mut rounds = 0u64;
            while !*shutdown.borrow() {
                rounds += 1;
                if rounds % 8 == 0 && !lease.still_held().await {
                    anyhow::bail!("webhook lease lost");
                }
                let rows = projections::read::webhooks(&self.ctx.pool).await?;
                let live: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
                tasks.retain(|id, (_, task)| {
                    let keep = live.contains(id) && !task.is_finished();
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for row in rows {
                    match tasks.get(&row.id) {
                        Some((tx, _)) => {
                            tx.send_if_modified(|old| {
                                let changed = *old != row;
                                if changed {
                                    *old = row.clone();
                                }
                                changed
                            });
                        }
                        None => {
                            let (tx, rx) = watch::channel(row.clone());
                            let task = tokio::spawn(endpoint(self.ctx.clone(), row.id, rx));
                            tasks.insert(row.id, (tx, task));
                        }
                    }
                }
                sleep_or_shutdown(Duration::from_millis(250), shutdown).await;
            }
            Ok(())
        }
        .await;
        for (_, (_, task)) in tasks.drain() {
            task.abort();
        }
        lease.release().await;
        result
    }
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

/// One endpoint's task: runs until aborted (the endpoint was deleted or the lease lost).
async fn endpoint(ctx: Arc<Ctx>, id: Uuid, cfg: watch::Receiver<WebhookRow>) {
    loop {
        match Endpoint::start(&ctx, id, cfg.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(webhook = %id, error = %e, "webhook endpoint worker failed; restarting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

struct Endpoint<'a> {
    ctx: &'a Ctx,
    id: Uuid,
    cfg: watch::Receiver<WebhookRow>,
    conn: PgConnection,
    staged: i64,
    secrets: Vec<String>,
    /// When the next attempt may start (the endpoint's rate limit).
    next_send: tokio::time::Instant,
}

impl<'a> Endpoint<'a> {
    /// Delivers until the endpoint is deleted (`Ok`) or something fails (`Err`: the
    /// caller starts again from the cursor).
    async fn start(ctx: &'a Ctx, id: Uuid, cfg: watch::Receiver<WebhookRow>) -> anyhow::Result<()> {
        let staged = loop {
            match store::cursor(&ctx.pool, id).await? {
                Some((_, true)) => return Ok(()),
                Some((s, false)) => break s,
                None => {}
            }
            // The consumer starts after the message of the endpoint's creation: the relay
            // publishes in feed order, so everything after it in the stream happened after.
            let subject = escrow_nats::subject_for(
                &ctx.js.subject_prefix,
                &format!("webhook-{id}"),
                "WebhookEndpointCreated",
            );
            match ctx.nats.last_sequence_on(&ctx.js, &subject).await? {
                Some(seq) => store::start_cursor(&ctx.pool, id, seq as i64).await?,
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let mut conn = ctx.pool.acquire().await?.detach();
        sqlx::query("SET synchronous_commit TO off")
            .execute(&mut conn)
            .await?;
        let feed = OrderedFeed::open(&ctx.nats, &ctx.js, &consumer_name(id), staged as u64).await?;
        let mut me = Endpoint {
            ctx,
            id,
            cfg,
            conn,
            staged,
            secrets: Vec::new(),
            next_send: tokio::time::Instant::now(),
        };
        let result = me.run(&feed).await;
        let _ = me.conn.close().await;
        result
    }

    async fn run(&mut self, feed: &OrderedFeed) -> anyhow::Result<()> {
        loop {
            let cfg = self.cfg.borrow_and_update().clone();
            let mut wait = Duration::from_secs(1);
            self.slowed_for_load();
            if cfg.status == "ACTIVE" {
                let pending = store::pending(&mut self.conn, self.id, SEND_BATCH).await?;
                stats::pending(self.id, pending.len());
                if !pending.is_empty() {
                    // Read once per round, after the round's deliveries were staged: a
                    // rotation that finished before an event was recorded signs it.
                    self.secrets =
                        signing(&self.ctx.pool, &self.ctx.settings.secrets, self.id).await?;
                }
                for p in &pending {
                    let now = Utc::now();
                    // Age counts only once it has been tried: a paused endpoint's queue is
                    // sent when it resumes, not failed.
                    if p.attempts > 0
                        && now - p.age_from
                            >= chrono::Duration::from_std(self.ctx.settings.max_age)?
                    {
                        self.disable(p).await?;
                        break;
                    }
                    if p.next_attempt_at > now {
                        wait = wait.min((p.next_attempt_at - now).to_std().unwrap_or_default());
                        break;
                    }
                    if !self.attempt(&cfg, p).await? {
                        // Failed: later deliveries wait for it.
                        wait = Duration::ZERO;
                        break;
                    }
                    // A change of the endpoint (paused, new URL) applies from the next one.
                    if self.cfg.has_changed().unwrap_or(true) {
                        wait = Duration::ZERO;
                        break;
                    }
                }
                if pending.len() as i64 == SEND_BATCH {
                    // A full batch is staged: JetStream keeps the rest until it is sent,
                    // so a slow or failing endpoint costs PostgreSQL nothing more.
                    if wait < Duration::from_secs(1) {
                        tokio::time::sleep(wait).await;
                    }
                    continue;
                }
            }
            let items = feed
                .next_batch(STAGE_BATCH, wait.max(Duration::from_millis(10)))
                .await?;
            if let Some(last) = items.last() {
                let deleted = self.stage(&cfg.events, &items).await?;
                feed.ack_through(last).await;
                if deleted {
                    tracing::info!(webhook = %self.id, "webhook endpoint deleted; its deliverer stops");
                    return Ok(());
                }
            }
        }
    }

    /// Stages `items`; `Ok(true)` when one of them was the endpoint's own deletion (what
    /// follows it is not staged).
    async fn stage(
        &mut self,
        filter: &[String],
        items: &[escrow_nats::FeedItem],
    ) -> anyhow::Result<bool> {
        let mut deliveries = Vec::new();
        let mut to = self.staged;
        let own = format!("webhook-{}", self.id);
        let mut deleted = false;
        for item in items {
            let seq = item.stream_sequence as i64;
            if seq <= to {
                continue;
            }
            to = seq;
            let head: EnvelopeHead = match serde_json::from_slice(&item.payload) {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(webhook = %self.id, error = %e, "undecodable message, skipping");
                    continue;
                }
            };
            if head.stream_id == own && head.event_type == "WebhookEndpointDeleted" {
                deleted = true;
                break;
            }
            if filter_matches(filter, &head.stream_id, &head.event_type) {
                deliveries.push(Staged {
                    head,
                    body: String::from_utf8_lossy(&item.payload).into_owned(),
                });
            }
        }
        if to > self.staged {
            store::stage(&mut self.conn, self.id, self.staged, to, &deliveries).await?;
            self.staged = to;
        }
        if deleted {
            store::mark_deleted(&mut self.conn, self.id).await?;
        }
        Ok(deleted)
    }

    /// Sends `p` once. `Ok(true)` when a 2xx answered.
    async fn attempt(&mut self, cfg: &WebhookRow, p: &Pending) -> anyhow::Result<bool> {
        if let Some(gap) = Duration::from_secs(1).checked_div(self.rate()) {
            tokio::time::sleep_until(self.next_send).await;
            self.next_send = tokio::time::Instant::now().max(self.next_send) + gap;
        }
        let t = Utc::now().timestamp();
        let answer = if !self.ctx.settings.allow_private_networks && literal_private(&cfg.url) {
            Err("refused: the URL's address is not public".to_owned())
        } else {
            self.send(cfg, p, &self.secrets, t).await
        };
        let attempts = p.attempts.saturating_add(1);
        match answer {
            Ok((status, _)) if (200..300).contains(&status) => {
                store::succeeded(&mut self.conn, p.id, status).await?;
                stats::delivered(self.id, Utc::now() - p.recorded_at);
                Ok(true)
            }
            failure => {
                let (status, error) = match failure {
                    Ok((status, body)) => (Some(status), format!("HTTP {status}: {body}")),
                    Err(e) => (None, e),
                };
                let delay = backoff(
                    attempts,
                    self.ctx.settings.retry_base,
                    self.ctx.settings.retry_max,
                );
                let next = Utc::now() + chrono::Duration::from_std(delay)?;
                store::attempt_failed(&mut self.conn, p.id, status, &error, next).await?;
                stats::attempt_failed(self.id);
                tracing::info!(webhook = %self.id, delivery = %p.id, attempts, error = %error, "webhook delivery failed; will retry");
                Ok(false)
            }
        }
    }

    /// Whether deliveries yield to load now (the CPU is contended and a busy rate is set);
    /// the endpoint's gauge says so.
    fn slowed_for_load(&self) -> bool {
        let slowed = self.ctx.settings.busy_rate_per_endpoint > 0 && self.ctx.pressure.busy();
        stats::slowed(self.id, slowed);
        slowed
    }

    /// Deliveries a second this endpoint may get now (0: no limit).
    fn rate(&self) -> u32 {
        let (max, busy_rate) = (
            self.ctx.settings.max_rate_per_endpoint,
            self.ctx.settings.busy_rate_per_endpoint,
        );
        match (self.slowed_for_load(), max) {
            (false, _) => max,
            (true, 0) => busy_rate,
            (true, _) => busy_rate.min(max),
        }
    }

    async fn send(
        &self,
        cfg: &WebhookRow,
        p: &Pending,
        secrets: &[String],
        t: i64,
    ) -> Result<(u16, String), String> {
        let res = self
            .ctx
            .http
            .post(&cfg.url)
            .header("content-type", "application/json")
            .header("escrow-webhook-id", self.id.to_string())
            .header("escrow-delivery-id", p.id.to_string())
            .header("escrow-event-id", p.event_id.to_string())
            .header("escrow-sequence", p.sequence.to_string())
            .header(
                "escrow-signature",
                signature_header(secrets, t, p.body.as_bytes()),
            )
            .body(p.body.clone())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = res.status().as_u16();
        Ok((status, kept_body(res).await))
    }

    /// `p` failed for longer than the maximum age: it fails for good, the endpoint stops,
    /// and an event says so.
    async fn disable(&mut self, p: &Pending) -> anyhow::Result<()> {
        store::fail_and_halt(&mut self.conn, self.id, p.id).await?;
        stats::failed(self.id);
        let reason = p.last_error.clone().unwrap_or_else(|| "no answer".into());
        let cmd = Command::ChangeWebhook(ChangeWebhook {
            actor: domain::Actor::System,
            webhook_id: WebhookId(self.id),
            change: WebhookChange::Disable {
                delivery_id: p.id,
                reason: format!(
                    "delivery {} failed for longer than the maximum age: {reason}",
                    p.sequence
                ),
            },
            now: Timestamp(Utc::now().timestamp_millis()),
        });
        let ctx = CommandContext::internal(Actor::System);
        match self.ctx.ledger.execute(&ctx, cmd).await {
            Ok(_) => {
                tracing::warn!(webhook = %self.id, delivery = %p.id, "webhook endpoint disabled")
            }
            // Disabled already (a retry of this step) or deleted: the halt holds either way.
            Err(e) => {
                tracing::info!(webhook = %self.id, error = %e, "disabling the webhook endpoint")
            }
        }
        Ok(())
    }
}

/// Whether `url`'s host is a literal address that is not public (names are checked by
/// the resolver at connection time).
fn literal_private(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()))
        .and_then(|h| h.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| !crate::address::is_public(ip))
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // The error's own text names the URL and the cause, never a secret.
    let mut text = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text.chars().take(KEPT_BODY_BYTES).collect()
}

/// At most [`KEPT_BODY_BYTES`] of the answer's body.
async fn kept_body(mut res: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < KEPT_BODY_BYTES {
        match res.chunk().await {
            Ok(Some(c)) => kept.extend_from_slice(&c[..c.len().min(KEPT_BODY_BYTES - kept.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}
