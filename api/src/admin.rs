//! Operator commands run from the `escrow` command line.

use anyhow::Context;
use command_handlers::{Actor, Command, CommandContext, Ledger};
use domain::{Email, Role, UserId};
use event_store::{EventStore, PoolSettings};
use serde_json::json;

/// Grants `role` to the user with `email`, as a `RoleGranted` event whose actor is
/// `operator`. Safe on a running ledger: the running relay publishes it and the
/// projections apply it like any other event; the user's next login carries the role.
pub async fn grant_role(database_url: &str, email: &str, role: &str) -> anyhow::Result<()> {
    grant_role_to(database_url, &UserRef::Email(email.to_owned()), role).await
}

/// How an operator names a user: by e-mail or by id.
#[derive(Debug, Clone)]
pub enum UserRef {
    /// The e-mail the user registered with.
    Email(String),
    /// The user's id (a UUID).
    Id(String),
}

/// [`grant_role`] for a user named by e-mail or by id.
pub async fn grant_role_to(database_url: &str, who: &UserRef, role: &str) -> anyhow::Result<()> {
    let role = Role::parse(role)
        .with_context(|| format!("unknown role {role:?}: use user, arbiter or admin"))?;
    let pool = event_store::connect(
        database_url,
        &PoolSettings {
            max_connections: 2,
            ..Default::default()
        },
    )
    .await
    .context("connecting to Postgres")?;
    let ledger = Ledger::new(EventStore::new(pool.clone()));
    let user_id = match who {
        UserRef::Email(email) => {
            let email = Email::parse(email).map_err(|e| anyhow::anyhow!("{e}"))?;
            ledger
                .find_login(&email)
                .await?
                .with_context(|| format!("no user with email {email}"))?
                .user_id
        }
        UserRef::Id(id) => {
            let id = UserId(
                uuid::Uuid::parse_str(id.trim())
                    .with_context(|| format!("{id:?} is not a user id (a UUID)"))?,
            );
            anyhow::ensure!(
                ledger.user(id).await?.state.exists(),
                "no user with id {id}"
            );
            id
        }
    };
    let ctx = CommandContext::internal(Actor::Operator);
    ledger
        .execute(&ctx, Command::GrantRole { user_id, role }, |_, _| {
            (200, json!({}))
        })
        .await?;
    println!("user {user_id} is now {}", role.as_str());
    // The ledger's committer holds a connection until it stops: stop it first.
    drop(ledger);
    pool.close().await;
    Ok(())
}
