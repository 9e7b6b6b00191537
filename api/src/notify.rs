//! Live notifications: while an `escrow serve` has WebSocket connections open, it
//! subscribes to the event subjects on NATS (and to the custom-notification subjects) and
//! pushes each message to the connections of the users it concerns, whichever process
//! handled the command. A process nobody listens to holds no subscription, so NATS sends
//! it nothing (decoding every event for no one would cost every server CPU under load).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use escrow_nats::Envelope;
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// Messages queued per connection before the client counts as too slow and is
/// disconnected (rather than buffered without bound).
pub const QUEUED_MESSAGES_MAX: usize = 256;
/// Streams whose parties are remembered; parties never change, so the cache only bounds memory.
const CACHED_PARTIES_MAX: usize = 100_000;
/// The subscriptions are dropped once no connection has been open for this long.
const UNSUBSCRIBE_AFTER_IDLE: Duration = Duration::from_secs(30);
/// How long a new connection waits for the subscriptions before it is greeted anyway.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);
/// The token of the custom-notification subject the fan-out sends itself to know that NATS
/// has its subscriptions (not a user id, so no connection receives it).
const READY_TOKEN: &str = "subscribed";

/// The subject custom notifications for `user` are published on.
pub fn notification_subject(event_prefix: &str, user: Option<Uuid>) -> String {
    let root = match event_prefix.rsplit_once('.') {
        Some((head, _)) => format!("{head}.notifications"),
        None => format!("{event_prefix}_notifications"),
    };
    match user {
        Some(u) => format!("{root}.{u}"),
        None => format!("{root}.*"),
    }
}

/// One open connection: its id, the queue its socket task drains, and whether its user is
/// staff (arbiter or admin), who also hear of every dispute.
type Connection = (u64, mpsc::Sender<String>, bool);

/// The open WebSocket connections of this process, by user.
#[derive(Debug)]
pub struct Hub {
    connections: Mutex<HashMap<Uuid, Vec<Connection>>>,
    next_id: AtomicU64,
    /// How many connections are open (what the fan-out waits on).
    open: watch::Sender<usize>,
    /// Whether the fan-out's subscriptions are in place.
    subscribed: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            connections: Mutex::default(),
            next_id: AtomicU64::new(0),
            open: watch::Sender::new(0),
            subscribed: watch::Sender::new(false),
        }
    }
}

impl Hub {
    /// Registers a connection; the receiver yields the messages to push. `staff`
    /// connections also receive the events of every dispute (the arbiters' queue).
    pub fn register(&self, user: Uuid, staff: bool) -> (u64, mpsc::Receiver<String>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUED_MESSAGES_MAX);
        self.change(|m| {
            m.entry(user).or_default().push((id, tx, staff));
            1
        });
        (id, rx)
    }

    /// [`Hub::register`], unless `user` has `max` connections open on this process already
    /// (`None`).
    pub fn try_register(
        &self,
        user: Uuid,
        staff: bool,
        max: usize,
    ) -> Option<(u64, mpsc::Receiver<String>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUED_MESSAGES_MAX);
        let mut admitted = false;
        self.change(|m| {
            let open = m.entry(user).or_default();
            if open.len() >= max {
                return 0;
            }
            open.push((id, tx, staff));
            admitted = true;
            1
        });
        admitted.then_some((id, rx))
    }

    /// Forgets a connection.
    pub fn unregister(&self, user: Uuid, id: u64) {
        self.change(|m| {
            let Some(v) = m.get_mut(&user) else { return 0 };
            let before = v.len();
            v.retain(|(i, _, _)| *i != id);
            let removed = before - v.len();
            if v.is_empty() {
                m.remove(&user);
            }
            -(removed as isize)
        });
    }

    /// Queues a message for every connection of `user`. A connection whose queue is full
    /// is dropped: its socket task sees the channel close and says goodbye.
    pub fn send(&self, user: Uuid, message: &str) {
        self.change(|m| {
            let Some(v) = m.get_mut(&user) else { return 0 };
            let before = v.len();
            v.retain(|(_, tx, _)| tx.try_send(message.to_owned()).is_ok());
            let removed = before - v.len();
            if v.is_empty() {
                m.remove(&user);
            }
            -(removed as isize)
        });
    }

    /// Queues a message for every staff connection whose user is not in `already`.
    pub fn send_to_staff(&self, message: &str, already: &[Uuid]) {
        self.change(|m| {
            let mut removed = 0;
            for (user, v) in m.iter_mut() {
                if !already.contains(user) {
                    let before = v.len();
                    v.retain(|(_, tx, staff)| !*staff || tx.try_send(message.to_owned()).is_ok());
                    removed += before - v.len();
                }
            }
            m.retain(|_, v| !v.is_empty());
            -(removed as isize)
        });
    }

    /// Open connections in this process.
    pub fn connections(&self) -> usize {
        *self.open.borrow()
    }

    /// Waits (at most [`SUBSCRIBE_WAIT`]) until the fan-out hears every event, so that a
    /// client greeted after this misses nothing that happens next.
    pub async fn wait_subscribed(&self) {
        let mut rx = self.subscribed.subscribe();
        let _ = tokio::time::timeout(SUBSCRIBE_WAIT, rx.wait_for(|s| *s)).await;
    }

    /// Applies `f` (which returns how many connections it added, negative if removed) and
    /// keeps the count the fan-out waits on.
    fn change(&self, f: impl FnOnce(&mut HashMap<Uuid, Vec<Connection>>) -> isize) {
        if let Ok(mut m) = self.connections.lock() {
            let delta = f(&mut m);
            if delta != 0 {
                self.open
                    .send_modify(|n| *n = n.saturating_add_signed(delta));
            }
        }
    }
}

/// Finds who an event concerns, from the authoritative first events of its streams.
struct Parties {
    pool: PgPool,
    cache: HashMap<String, Vec<Uuid>>,
}

impl Parties {
    async fn first_event_data(&self, stream: &str) -> Option<Value> {
        event_store::EventStore::new(self.pool.clone())
            .first_event(stream)
            .await
            .ok()
            .flatten()
            .map(|e| e.data)
    }

    async fn of(&mut self, stream: &str) -> Vec<Uuid> {
        if let Some(p) = self.cache.get(stream) {
            return p.clone();
        }
        let uuid = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
        };
        let parties: Vec<Uuid> = match stream.split_once('-') {
            Some(("user", id)) => Uuid::parse_str(id).ok().into_iter().collect(),
            // Each of these names its owner in its first event.
            Some(("wallet" | "payin" | "payout", _)) => self
                .first_event_data(stream)
                .await
                .and_then(|d| uuid(d.get("userId")))
                .into_iter()
                .collect(),
            Some(("contract", _)) => match self.first_event_data(stream).await {
                Some(d) => [uuid(d.get("buyerId")), uuid(d.get("sellerId"))]
                    .into_iter()
                    .flatten()
                    .collect(),
                None => Vec::new(),
            },
            Some(("dispute", _)) => match self
                .first_event_data(stream)
                .await
                .and_then(|d| uuid(d.get("contractId")))
            {
                Some(contract) => Box::pin(self.of(&format!("contract-{contract}"))).await,
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        if !parties.is_empty() {
            if self.cache.len() >= CACHED_PARTIES_MAX {
                self.cache.clear();
            }
            self.cache.insert(stream.to_owned(), parties.clone());
        }
        parties
    }
}

/// While connections are open, subscribes to events and custom notifications and pushes
/// them to the hub; until shutdown.
pub async fn fan_out(
    client: escrow_nats::Nats,
    pool: PgPool,
    hub: std::sync::Arc<Hub>,
    event_prefix: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut parties = Parties {
        pool,
        cache: HashMap::new(),
    };
    let mut open = hub.open.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            r = open.wait_for(|n| *n > 0) => if r.is_err() { return },
        }
        let custom_subject = notification_subject(&event_prefix, None);
        let events = client.subscribe(format!("{event_prefix}.>")).await;
        let custom = client.subscribe(custom_subject.clone()).await;
        let (Ok(mut events), Ok(mut custom)) = (events, custom) else {
            tracing::warn!("cannot subscribe for live notifications; retrying");
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        };
        // NATS handles a connection's operations in order: once this comes back, both
        // subscriptions are in place.
        let ready = custom_subject.replace('*', READY_TOKEN);
        if client.publish(ready.clone(), b"{}".to_vec()).await.is_err() {
            hub.subscribed.send_replace(true);
        }
        let mut idle_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(UNSUBSCRIBE_AFTER_IDLE / 6);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                m = events.next() => {
                    let Some(m) = m else { break };
                    let Ok(env) = serde_json::from_slice::<Envelope>(&m.payload) else { continue };
                    let message = json!({
                        "type": "event",
                        "event": env.event_type,
                        "streamId": env.stream_id,
                        "position": env.position,
                        "data": env.data,
                        "recordedAt": crate::rfc3339(env.recorded_at),
                    })
                    .to_string();
                    let concerned = parties.of(&env.stream_id).await;
                    for user in &concerned {
                        hub.send(*user, &message);
                    }
                    if env.stream_id.starts_with("dispute-") {
                        hub.send_to_staff(&message, &concerned);
                    }
                }
                m = custom.next() => {
                    let Some(m) = m else { break };
                    if m.subject.as_str() == ready {
                        hub.subscribed.send_replace(true);
                        continue;
                    }
                    let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else { continue };
                    if let Some(user) = v.get("userId").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok()) {
                        hub.send(user, &v.to_string());
                    }
                }
                _ = tick.tick() => {
                    if hub.connections() > 0 {
                        idle_since = None;
                    } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= UNSUBSCRIBE_AFTER_IDLE {
                        break;
                    }
                }
            }
        }
        // Dropping the subscribers unsubscribes.
        hub.subscribed.send_replace(false);
    }
}
