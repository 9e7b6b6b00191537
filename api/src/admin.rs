//! Operator commands run from the `escrow` command line.

use anyhow::Context;
use command_handlers::{Actor, Command, CommandContext, Ledger};
use domain::{Email, Role};
use event_store::{EventStore, PoolSettings};
use serde_json::json;

/// Grants `role` to the user with `email`, as a `RoleGranted` event whose actor is
/// `operator`. Safe on a running ledger: the running relay publishes it and the
/// projections apply it like any other event; the user's next login carries the role.
pub async fn grant_role(database_url: &str, email: &str, role: &str) -> anyhow::Result<()> {
    let role = Role::parse(role)
        .with_context(|| format!("unknown role {role:?}: use user, arbiter or admin"))?;
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("{e}"))?;
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
    let login = ledger
        .find_login(&email)
        .await?
        .with_context(|| format!("no user with email {email}"))?;
    let ctx = CommandContext::internal(Actor::Operator);
    ledger
        .execute(
            &ctx,
            Command::GrantRole {
                user_id: login.user_id,
                role,
            },
            |_, _| (200, json!({})),
        )
        .await?;
    println!("{email} ({}) is now {}", login.user_id, role.as_str());
    // The ledger's committer holds a connection until it stops: stop it first.
    drop(ledger);
    pool.close().await;
    Ok(())
}
