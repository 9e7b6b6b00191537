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
}

impl Role {
    /// The lower-case name used in JSON and tokens.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Arbiter => "arbiter",
            Role::Admin => "admin",
        }
    }

    /// Parses `user`, `arbiter` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "arbiter" => Some(Role::Arbiter),
            "admin" => Some(Role::Admin),
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
