//! Who issues a command and on behalf of which request: the audit metadata of its events.

use domain::UserId;
use event_store::IdempotencyRecord;
use serde_json::{json, Value};
use uuid::Uuid;

/// Who is acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// An authenticated user (from the JWT).
    User(UserId),
    /// The ledger itself (scheduled jobs).
    System,
    /// An operator at the `escrow` command line.
    Operator,
}

impl Actor {
    /// The actor as stored in event metadata.
    pub fn as_string(&self) -> String {
        match self {
            Actor::User(u) => u.to_string(),
            Actor::System => "system".into(),
            Actor::Operator => "operator".into(),
        }
    }
}

/// The circumstances of one command.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// Who.
    pub actor: Actor,
    /// Groups every event caused by one user action, across services.
    pub correlation_id: Uuid,
    /// The event or request that caused this command, if known.
    pub causation_id: Option<Uuid>,
    /// The HTTP request id.
    pub request_id: String,
    /// The idempotency key to record with the effect, if the client sent one.
    pub idempotency: Option<IdempotencyRecord>,
}

impl CommandContext {
    /// A context for a command with no HTTP request behind it.
    pub fn internal(actor: Actor) -> Self {
        let id = Uuid::now_v7();
        Self {
            actor,
            correlation_id: id,
            causation_id: None,
            request_id: id.to_string(),
            idempotency: None,
        }
    }

    /// The metadata stored with every event the command appends.
    pub(crate) fn metadata(&self, command: &str) -> Value {
        let mut m = json!({
            "actor": self.actor.as_string(),
            "command": command,
            "correlationId": self.correlation_id,
            "requestId": self.request_id,
        });
        if let Some(c) = self.causation_id {
            m["causationId"] = json!(c);
        }
        if let Some(k) = &self.idempotency {
            m["idempotencyKey"] = json!(k.key);
        }
        m
    }
}
