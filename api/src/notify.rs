//! Live notifications: every `escrow serve` subscribes to the event subjects on NATS (and
//! to the custom-notification subjects) and pushes each message to the WebSocket
//! connections of the users it concerns, whichever process handled the command.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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
#[derive(Debug, Default)]
pub struct Hub {
    connections: Mutex<HashMap<Uuid, Vec<Connection>>>,
    next_id: AtomicU64,
}

impl Hub {
    /// Registers a connection; the receiver yields the messages to push. `staff`
    /// connections also receive the events of every dispute (the arbiters' queue).
    pub fn register(&self, user: Uuid, staff: bool) -> (u64, mpsc::Receiver<String>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUED_MESSAGES_MAX);
        if let Ok(mut m) = self.connections.lock() {
            m.entry(user).or_default().push((id, tx, staff));
        }
        (id, rx)
    }

    /// Forgets a connection.
    pub fn unregister(&self, user: Uuid, id: u64) {
        if let Ok(mut m) = self.connections.lock() {
            if let Some(v) = m.get_mut(&user) {
                v.retain(|(i, _, _)| *i != id);
                if v.is_empty() {
                    m.remove(&user);
                }
            }
        }
    }

    /// Queues a message for every connection of `user`. A connection whose queue is full
    /// is dropped: its socket task sees the channel close and says goodbye.
    pub fn send(&self, user: Uuid, message: &str) {
        if let Ok(mut m) = self.connections.lock() {
            if let Some(v) = m.get_mut(&user) {
                v.retain(|(_, tx, _)| tx.try_send(message.to_owned()).is_ok());
                if v.is_empty() {
                    m.remove(&user);
                }
            }
        }
    }

    /// Queues a message for every staff connection whose user is not in `already`.
    pub fn send_to_staff(&self, message: &str, already: &[Uuid]) {
        if let Ok(mut m) = self.connections.lock() {
            for (user, v) in m.iter_mut() {
                if !already.contains(user) {
                    v.retain(|(_, tx, staff)| !*staff || tx.try_send(message.to_owned()).is_ok());
                }
            }
            m.retain(|_, v| !v.is_empty());
        }
    }

    /// Open connections in this process.
    pub fn connections(&self) -> usize {
        self.connections
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

/// Finds who an event concerns, from the authoritative first events of its streams.
struct Parties {
    pool: PgPool,
    cache: HashMap<String, Vec<Uuid>>,
}

impl Parties {
    async fn first_event_data(&self, stream: &str) -> Option<Value> {
        sqlx::query_as::<_, (Value,)>(
            "SELECT data FROM events WHERE stream_id = $1 AND version = 1",
        )
        .bind(stream)
        .fetch_optional(&self.pool)
        .await
        .ok()
        .flatten()
        .map(|(d,)| d)
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
            Some(("wallet", _)) => self
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

/// Subscribes to events and custom notifications and pushes them to the hub until shutdown.
pub async fn fan_out(
    client: async_nats::Client,
    pool: PgPool,
    hub: std::sync::Arc<Hub>,
    event_prefix: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut parties = Parties {
        pool,
        cache: HashMap::new(),
    };
    let events = client.subscribe(format!("{event_prefix}.>")).await;
    let custom = client
        .subscribe(notification_subject(&event_prefix, None))
        .await;
    let (Ok(mut events), Ok(mut custom)) = (events, custom) else {
        tracing::error!("cannot subscribe for live notifications");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            Some(m) = events.next() => {
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
            Some(m) = custom.next() => {
                let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else { continue };
                if let Some(user) = v.get("userId").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok()) {
                    hub.send(user, &v.to_string());
                }
            }
            else => return,
        }
    }
}
