//! The user aggregate: identity and role. Credentials live outside the event stream.

use serde::{Deserialize, Serialize};

use crate::email::Email;
use crate::error::DomainError;
use crate::event::Event;
use crate::ids::{UserId, WalletId};
use crate::money::Currency;
use crate::stream::{Aggregate, StreamId, StreamWrite, Versioned};
use crate::text::Description;

/// What a user may see and do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Acts on its own wallets, contracts and disputes.
    #[default]
    User,
    /// Sees everything and settles disputes it is not a party to.
    Arbiter,
    /// Everything an arbiter can, plus acting on any wallet.
    Admin,
    /// The marketplace's backend or its payment provider's integration: credits any user's
    /// wallet (deposits, and confirming pay-ins), sees only what it is a party to.
    Service,
}

impl Role {
    /// The lower-case name used in JSON and tokens.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Arbiter => "arbiter",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }

    /// Parses `user`, `arbiter`, `admin` or `service`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "arbiter" => Some(Role::Arbiter),
            "admin" => Some(Role::Admin),
            "service" => Some(Role::Service),
            _ => None,
        }
    }

    /// Arbiters and admins see every wallet, contract and dispute.
    pub fn sees_everything(&self) -> bool {
        matches!(self, Role::Arbiter | Role::Admin)
    }
}

/// State of one user, folded from its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct User {
    /// Set once `UserRegistered` has been folded.
    pub id: Option<UserId>,
    /// The normalised address.
    pub email: Option<Email>,
    /// Current role.
    pub role: Role,
    /// Why the account is suspended, while it is.
    pub suspended: Option<Description>,
}

impl User {
    /// Whether the user has been registered.
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }
}

impl Aggregate for User {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::UserRegistered {
                user_id,
                email,
                role,
            } => {
                self.id = Some(*user_id);
                self.email = Some(email.clone());
                self.role = *role;
            }
            Event::RoleGranted { role, .. } => self.role = *role,
            Event::UserSuspended { reason, .. } => self.suspended = Some(reason.clone()),
            Event::UserReactivated { .. } => self.suspended = None,
            _ => {}
        }
    }
}

/// Create a user account and its USD wallet.
#[derive(Debug, Clone)]
pub struct RegisterUser {
    /// The id minted for the new user.
    pub user_id: UserId,
    /// The normalised address (uniqueness is enforced by the credentials table, which is
    /// written in the same transaction).
    pub email: Email,
}

/// Decides a registration: the user stream and the user's default-currency wallet stream
/// must both be new.
pub fn register(
    user: &Versioned<User>,
    cmd: &RegisterUser,
) -> Result<Vec<StreamWrite>, DomainError> {
    if user.version > 0 {
        return Err(DomainError::UserAlreadyExists);
    }
    let wallet_id = WalletId::of(cmd.user_id, Currency::USD);
    Ok(vec![
        StreamWrite {
            stream: StreamId::user(cmd.user_id),
            expected_version: 0,
            events: vec![Event::UserRegistered {
                user_id: cmd.user_id,
                email: cmd.email.clone(),
                role: Role::User,
            }],
        },
        StreamWrite {
            stream: StreamId::wallet(wallet_id),
            expected_version: 0,
            events: vec![Event::WalletOpened {
                wallet_id,
                user_id: cmd.user_id,
                currency: Currency::USD,
            }],
        },
    ])
}

/// Decides a role change, made by an operator.
pub fn grant_role(user: &Versioned<User>, role: Role) -> Result<Vec<StreamWrite>, DomainError> {
    let id = user.state.id.ok_or(DomainError::UnknownUser)?;
    if user.state.role == role {
        return Err(DomainError::RoleAlreadyHeld(role.as_str()));
    }
    Ok(vec![StreamWrite {
        stream: StreamId::user(id),
        expected_version: user.version,
        events: vec![Event::RoleGranted { user_id: id, role }],
    }])
}

/// Decides a suspension, made by an admin: the account cannot log in and its tokens stop
/// working until it is reactivated.
pub fn suspend(
    user: &Versioned<User>,
    reason: &Description,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = user.state.id.ok_or(DomainError::UnknownUser)?;
    if user.state.suspended.is_some() {
        return Err(DomainError::InvalidTransition {
            code: "USER_ALREADY_SUSPENDED",
            detail: "the account is suspended already".into(),
        });
    }
    Ok(vec![StreamWrite {
        stream: StreamId::user(id),
        expected_version: user.version,
        events: vec![Event::UserSuspended {
            user_id: id,
            reason: reason.clone(),
        }],
    }])
}

/// Decides lifting a suspension, made by an admin.
pub fn reactivate(user: &Versioned<User>) -> Result<Vec<StreamWrite>, DomainError> {
    let id = user.state.id.ok_or(DomainError::UnknownUser)?;
    if user.state.suspended.is_none() {
        return Err(DomainError::InvalidTransition {
            code: "USER_NOT_SUSPENDED",
            detail: "the account is not suspended".into(),
        });
    }
    Ok(vec![StreamWrite {
        stream: StreamId::user(id),
        expected_version: user.version,
        events: vec![Event::UserReactivated { user_id: id }],
    }])
}

/// Longest action, resource or resource id of an application audit entry, in characters.
pub const ACTIVITY_NAME_CHARS_MAX: usize = 100;
/// Largest `details` of an application audit entry, as JSON text, in bytes.
pub const ACTIVITY_DETAILS_BYTES_MAX: usize = 4_096;

/// An application's own audit entry about a user (the seed's `POST /logs`): what the
/// application did or saw, recorded in the user's stream so that it is hash-chained and
/// listed in the user's audit trail with everything else.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordActivity {
    /// What happened (`login`, `contract.viewed`, …).
    pub action: String,
    /// The kind of thing it concerns.
    pub resource: Option<String>,
    /// Which one.
    pub resource_id: Option<String>,
    /// Anything else, as JSON.
    pub details: Option<serde_json::Value>,
    /// When it is recorded.
    pub now: crate::ids::Timestamp,
}

/// A name as given: at most `max` characters and no control character (counted and
/// checked before trimming, as the API document states them), not blank; kept trimmed.
fn activity_name(text: &str, max: usize, what: &'static str) -> Result<String, DomainError> {
    let t = text.trim();
    if t.is_empty() || text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(DomainError::InvalidText(what));
    }
    Ok(t.to_owned())
}

/// Whether any key or string in `v` holds U+0000.
fn holds_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// Decides an application audit entry about `user`: by the user itself, or by an admin
/// about anyone.
pub fn record_activity(
    user: &Versioned<User>,
    actor: crate::actor::Actor,
    entry: &RecordActivity,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = user.state.id.ok_or(DomainError::UnknownUser)?;
    match actor {
        crate::actor::Actor::User { id: by, .. } if by == id => {}
        crate::actor::Actor::User {
            role: Role::Admin, ..
        } => {}
        _ => {
            return Err(DomainError::Forbidden(
                "a user records only its own activity (admins anyone's)",
            ))
        }
    }
    let action = activity_name(
        &entry.action,
        ACTIVITY_NAME_CHARS_MAX,
        "action must be 1 to 100 characters without control characters",
    )?;
    let optional = |v: &Option<String>, what| {
        v.as_deref()
            .map(|t| activity_name(t, ACTIVITY_NAME_CHARS_MAX, what))
            .transpose()
    };
    let resource = optional(
        &entry.resource,
        "resource must be 1 to 100 characters without control characters",
    )?;
    let resource_id = optional(
        &entry.resource_id,
        "resourceId must be 1 to 100 characters without control characters",
    )?;
    if entry.details.as_ref().is_some_and(holds_nul) {
        return Err(DomainError::InvalidDetails(
            "details must not contain a NUL character",
        ));
    }
    if entry
        .details
        .as_ref()
        .is_some_and(|d| d.to_string().len() > ACTIVITY_DETAILS_BYTES_MAX)
    {
        return Err(DomainError::InvalidDetails(
            "details must be at most 4096 bytes of JSON",
        ));
    }
    Ok(vec![StreamWrite {
        stream: StreamId::user(id),
        expected_version: user.version,
        events: vec![Event::ActivityRecorded {
            user_id: id,
            action,
            resource,
            resource_id,
            details: entry.details.clone(),
            recorded_at: entry.now,
        }],
    }])
}
