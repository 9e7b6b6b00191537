//! Who a decision is made for.

use crate::ids::UserId;
use crate::user::Role;

/// The author of a command, as the domain's rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// An authenticated user with its role.
    User {
        /// Who.
        id: UserId,
        /// With which role.
        role: Role,
    },
    /// The ledger itself (the inspection-window auto-release).
    System,
}

impl Actor {
    /// The user id, unless the system acts.
    pub fn user(&self) -> Option<UserId> {
        match self {
            Actor::User { id, .. } => Some(*id),
            Actor::System => None,
        }
    }
}
