//! Webhook endpoints: where an admin asks the ledger to deliver events over HTTP. Each
//! change to an endpoint is an event of its stream (`webhook-<id>`), so the audit trail
//! shows who pointed the ledger's events where and when. The endpoint's signing secret is
//! never in an event: it lives beside credentials, outside the stream.
//!
//! Which events an endpoint receives is its filter: a list of event types
//! (`ContractFunded`), categories (`contract.*`, the part of a stream's name before its
//! id) or `*`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::actor::Actor;
use crate::error::DomainError;
use crate::event::{Event, EVENT_TYPES};
use crate::ids::{Timestamp, UserId, WebhookId};
use crate::payin::text;
use crate::stream::{Aggregate, StreamId, StreamWrite, Versioned};
use crate::user::Role;

/// Longest URL, in characters.
pub const URL_CHARS_MAX: usize = 2_000;
/// Longest description, in characters.
pub const DESCRIPTION_CHARS_MAX: usize = 500;
/// Most entries in an event filter.
pub const FILTER_ENTRIES_MAX: usize = 100;
/// The stream categories a filter may name as `<category>.*`.
pub const CATEGORIES: &[&str] = &[
    "user",
    "wallet",
    "contract",
    "dispute",
    "feeschedule",
    "revenue",
    "payin",
    "payout",
    "webhook",
];

const ADMINS_ONLY: &str = "only an admin may manage webhook endpoints";

/// Whether an endpoint receives deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WebhookStatus {
    /// Deliveries are sent.
    #[default]
    Active,
    /// An admin paused it: deliveries queue up and are sent once it is active again.
    Paused,
    /// Its oldest delivery failed for longer than the maximum age: nothing is sent until
    /// an admin makes it active again, which resumes from that delivery.
    Disabled,
}

impl WebhookStatus {
    /// The JSON name.
    pub fn as_str(&self) -> &'static str {
        match self {
            WebhookStatus::Active => "ACTIVE",
            WebhookStatus::Paused => "PAUSED",
            WebhookStatus::Disabled => "DISABLED",
        }
    }

    /// Parses a JSON name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            WebhookStatus::Active,
            WebhookStatus::Paused,
            WebhookStatus::Disabled,
        ]
        .into_iter()
        .find(|w| w.as_str() == s)
    }
}

/// One endpoint, folded from its stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// Set once created.
    pub id: Option<WebhookId>,
    /// Where deliveries go.
    pub url: String,
    /// Which events it receives.
    pub events: Vec<String>,
    /// What it is for.
    pub description: Option<String>,
    /// Whether deliveries are sent.
    pub status: WebhookStatus,
    /// Deleted endpoints receive nothing and answer 404.
    pub deleted: bool,
    /// When it was created.
    pub created_at: Option<Timestamp>,
}

impl Aggregate for WebhookEndpoint {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::WebhookEndpointCreated {
                webhook_id,
                url,
                events,
                description,
                created_at,
                ..
            } => {
                self.id = Some(*webhook_id);
                self.created_at = Some(*created_at);
                self.url = url.clone();
                self.events = events.clone();
                self.description = description.clone();
                self.status = WebhookStatus::Active;
            }
            Event::WebhookEndpointUpdated {
                url,
                events,
                description,
                status,
                ..
            } => {
                if let Some(u) = url {
                    self.url = u.clone();
                }
                if let Some(e) = events {
                    self.events = e.clone();
                }
                if let Some(d) = description {
                    self.description = (!d.is_empty()).then(|| d.clone());
                }
                if let Some(s) = status {
                    self.status = *s;
                }
            }
            Event::WebhookEndpointDisabled { .. } => self.status = WebhookStatus::Disabled,
            Event::WebhookEndpointDeleted { .. } => self.deleted = true,
            _ => {}
        }
    }
}

/// Whether an event of `event_type` in the stream `stream_id` passes `filter`.
pub fn filter_matches(filter: &[String], stream_id: &str, event_type: &str) -> bool {
    let category = stream_id.split_once('-').map_or(stream_id, |(c, _)| c);
    filter.iter().any(|f| {
        f == "*"
            || f == event_type
            || f.strip_suffix(".*")
                .is_some_and(|c| c.eq_ignore_ascii_case(category))
    })
}

/// `raw` as a filter: 1 to 100 entries, each `*`, a known category followed by `.*`, or a
/// known event type; duplicates removed, order kept.
pub fn parse_filter(raw: &[String]) -> Result<Vec<String>, DomainError> {
    if raw.is_empty() || raw.len() > FILTER_ENTRIES_MAX {
        return Err(DomainError::InvalidWebhook(
            "events must list 1 to 100 event types, categories such as contract.* or *",
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for entry in raw {
        let e = entry.trim();
        let known = e == "*"
            || EVENT_TYPES.contains(&e)
            || e.strip_suffix(".*")
                .is_some_and(|c| CATEGORIES.contains(&c));
        if !known {
            return Err(DomainError::UnknownEventFilter(
                e.chars().take(100).collect(),
            ));
        }
        if !out.iter().any(|o| o == e) {
            out.push(e.to_owned());
        }
    }
    Ok(out)
}

/// What an admin (or, to disable, the ledger itself) changes about an endpoint.
#[derive(Debug, Clone)]
pub enum WebhookChange {
    /// Registers it. The URL is already checked by the caller (scheme, address).
    Create {
        /// Where deliveries go.
        url: String,
        /// Its filter, unparsed.
        events: Vec<String>,
        /// What it is for.
        description: Option<String>,
    },
    /// Changes what is given.
    Update {
        /// A new URL, already checked.
        url: Option<String>,
        /// A new filter, unparsed.
        events: Option<Vec<String>>,
        /// A new description (empty: none).
        description: Option<String>,
        /// `ACTIVE` or `PAUSED`.
        status: Option<WebhookStatus>,
    },
    /// Removes it.
    Delete,
    /// Records that its secret was replaced; the old one signs until `previous_until`.
    RotateSecret {
        /// When the old secret stops signing.
        previous_until: Timestamp,
    },
    /// Stops deliveries because `delivery_id` failed for too long (the ledger only).
    Disable {
        /// The delivery that failed.
        delivery_id: Uuid,
        /// Why.
        reason: String,
    },
}

/// A change to one endpoint.
#[derive(Debug, Clone)]
pub struct ChangeWebhook {
    /// An admin; the ledger itself for `Disable`.
    pub actor: Actor,
    /// Which endpoint.
    pub webhook_id: WebhookId,
    /// What changes.
    pub change: WebhookChange,
    /// Now.
    pub now: Timestamp,
}

fn admin(actor: Actor) -> Result<UserId, DomainError> {
    match actor {
        Actor::User {
            id,
            role: Role::Admin,
        } => Ok(id),
        _ => Err(DomainError::Forbidden(ADMINS_ONLY)),
    }
}

fn url(raw: &str) -> Result<String, DomainError> {
    text(
        raw,
        URL_CHARS_MAX,
        "url must be 1 to 2000 characters without control characters",
    )
}

fn description(raw: &str, allow_empty: bool) -> Result<String, DomainError> {
    if allow_empty && raw.trim().is_empty() {
        return Ok(String::new());
    }
    text(
        raw,
        DESCRIPTION_CHARS_MAX,
        "description must be 1 to 500 characters without control characters",
    )
}

/// Decides a change to an endpoint.
pub fn decide(
    endpoint: &Versioned<WebhookEndpoint>,
    cmd: &ChangeWebhook,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = cmd.webhook_id;
    let exists = endpoint.version > 0 && !endpoint.state.deleted;
    let event = match &cmd.change {
        WebhookChange::Create {
            url: u,
            events,
            description: d,
        } => {
            let by = admin(cmd.actor)?;
            if endpoint.version > 0 {
                return Err(DomainError::InvalidTransition {
                    code: "WEBHOOK_EXISTS",
                    detail: format!("webhook endpoint {id} exists already"),
                });
            }
            Event::WebhookEndpointCreated {
                webhook_id: id,
                url: url(u)?,
                events: parse_filter(events)?,
                description: d.as_deref().map(|d| description(d, false)).transpose()?,
                created_by: by,
                created_at: cmd.now,
            }
        }
        WebhookChange::Update {
            url: u,
            events,
            description: d,
            status,
        } => {
            let by = admin(cmd.actor)?;
            if !exists {
                return Err(DomainError::WebhookNotFound);
            }
            if status.is_some_and(|s| s == WebhookStatus::Disabled) {
                return Err(DomainError::InvalidWebhook(
                    "status must be ACTIVE or PAUSED",
                ));
            }
            Event::WebhookEndpointUpdated {
                webhook_id: id,
                url: u.as_deref().map(url).transpose()?,
                events: events.as_deref().map(parse_filter).transpose()?,
                description: d.as_deref().map(|d| description(d, true)).transpose()?,
                status: *status,
                updated_by: by,
                updated_at: cmd.now,
            }
        }
        WebhookChange::Delete => {
            let by = admin(cmd.actor)?;
            if !exists {
                return Err(DomainError::WebhookNotFound);
            }
            Event::WebhookEndpointDeleted {
                webhook_id: id,
                deleted_by: by,
                deleted_at: cmd.now,
            }
        }
        WebhookChange::RotateSecret { previous_until } => {
            let by = admin(cmd.actor)?;
            if !exists {
                return Err(DomainError::WebhookNotFound);
            }
            Event::WebhookSecretRotated {
                webhook_id: id,
                rotated_by: by,
                rotated_at: cmd.now,
                previous_valid_until: *previous_until,
            }
        }
        WebhookChange::Disable {
            delivery_id,
            reason,
        } => {
            if cmd.actor != Actor::System {
                return Err(DomainError::Forbidden(
                    "only the ledger disables a webhook endpoint",
                ));
            }
            if !exists {
                return Err(DomainError::WebhookNotFound);
            }
            if endpoint.state.status == WebhookStatus::Disabled {
                return Err(DomainError::InvalidTransition {
                    code: "WEBHOOK_DISABLED",
                    detail: format!("webhook endpoint {id} is disabled already"),
                });
            }
            Event::WebhookEndpointDisabled {
                webhook_id: id,
                delivery_id: *delivery_id,
                reason: reason.chars().take(DESCRIPTION_CHARS_MAX).collect(),
                disabled_at: cmd.now,
            }
        }
    };
    Ok(vec![StreamWrite {
        stream: StreamId::webhook(id),
        expected_version: endpoint.version,
        events: vec![event],
    }])
}
