//! Registration, roles and suspension: the user stream.

use chrono::Utc;
use domain::user::{self, RegisterUser};
use domain::{
    Description, DomainError, Email, Role, StreamId, StreamWrite, User, UserId, Versioned,
};

use super::{after_states, state_after, Plan, Reader};
use crate::command::{ActivityChange, CommandError, Outcome, Registered, UserStatusChange};
use crate::load::{Load, State};

pub(super) async fn register<L: Load>(
    r: &mut Reader<'_, L>,
    user_id: UserId,
    email: &Email,
    password_hash: &str,
) -> Result<Plan, CommandError> {
    let current = r.get::<User>(StreamId::user(user_id)).await?;
    let writes = user::register(
        &current,
        &RegisterUser {
            user_id,
            email: email.clone(),
        },
    )?;
    let mut plan = plan(writes, user_id, current, |_| {
        Ok(Outcome::Registered(Registered {
            user_id,
            email: email.clone(),
            role: Role::User,
            recorded_at: Utc::now(),
        }))
    })?;
    plan.credentials = Some((user_id, email.clone(), password_hash.to_owned()));
    Ok(plan)
}

pub(super) async fn grant_role<L: Load>(
    r: &mut Reader<'_, L>,
    user_id: UserId,
    role: Role,
) -> Result<Plan, CommandError> {
    let current = r.get::<User>(StreamId::user(user_id)).await?;
    let writes = user::grant_role(&current, role)?;
    plan(writes, user_id, current, |after| {
        Ok(Outcome::RoleGranted(Registered {
            user_id,
            email: after.email.clone().ok_or(DomainError::UnknownUser)?,
            role,
            recorded_at: Utc::now(),
        }))
    })
}

/// Suspends the account (with a reason) or lifts its suspension (without).
pub(super) async fn change_status<L: Load>(
    r: &mut Reader<'_, L>,
    user_id: UserId,
    suspend: Option<&Description>,
) -> Result<Plan, CommandError> {
    let current = r.get::<User>(StreamId::user(user_id)).await?;
    let writes = match suspend {
        Some(reason) => user::suspend(&current, reason)?,
        None => user::reactivate(&current)?,
    };
    plan(writes, user_id, current, |after| {
        Ok(Outcome::UserStatus(UserStatusChange {
            user_id,
            email: after.email.clone().ok_or(DomainError::UnknownUser)?,
            role: after.role,
            suspended: after.suspended.clone(),
            recorded_at: Utc::now(),
        }))
    })
}

pub(super) async fn record_activity<L: Load>(
    r: &mut Reader<'_, L>,
    actor: domain::Actor,
    user_id: UserId,
    entry: &user::RecordActivity,
) -> Result<Plan, CommandError> {
    let current = r.get::<User>(StreamId::user(user_id)).await?;
    let writes = user::record_activity(&current, actor, entry)?;
    let recorded = writes.first().and_then(|w| w.events.first()).cloned();
    let recorded_by = match actor {
        domain::Actor::User { id, .. } => id,
        domain::Actor::System => user_id,
    };
    plan(writes, user_id, current, |_| match recorded {
        Some(domain::Event::ActivityRecorded {
            action,
            resource,
            resource_id,
            details,
            ..
        }) => Ok(Outcome::Activity(ActivityChange {
            user_id,
            recorded_by,
            action,
            resource,
            resource_id,
            details,
            recorded_at: Utc::now(),
        })),
        _ => Err(DomainError::UnknownUser),
    })
}

/// A plan writing one user's stream; `outcome` sees the user as it is after the writes.
fn plan(
    writes: Vec<StreamWrite>,
    user_id: UserId,
    current: Versioned<User>,
    outcome: impl FnOnce(&User) -> Result<Outcome, DomainError>,
) -> Result<Plan, CommandError> {
    let stream = StreamId::user(user_id);
    let after = after_states(&writes, vec![(stream.clone(), State::User(current))]);
    let user = state_after::<User>(&after, &stream).unwrap_or_default();
    Ok(Plan {
        outcome: outcome(&user)?,
        after,
        writes,
        credentials: None,
    })
}
