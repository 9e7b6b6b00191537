//! Operator commands run from the `escrow` command line.

use anyhow::Context;
use command_handlers::{Actor, Command, CommandContext, Ledger};
use domain::{Description, Email, Role, UserId};
use event_store::{EventStore, PoolSettings};

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
        .with_context(|| format!("unknown role {role:?}: use user, arbiter, admin or service"))?;
    let user_id = on_user(database_url, who, |user_id| Command::GrantRole {
        user_id,
        role,
    })
    .await?;
    println!("user {user_id} is now {}", role.as_str());
    Ok(())
}

/// Suspends the account named by `who`, as a `UserSuspended` event whose actor is
/// `operator`: it can no longer log in, and its tokens stop working within the sessions'
/// cache lifetime on every server.
pub async fn suspend(database_url: &str, who: &UserRef, reason: &str) -> anyhow::Result<()> {
    let reason = Description::parse(reason)
        .map_err(|e| anyhow::anyhow!("reason: {}", domain::DomainError::from(e)))?
        .context("a reason is required: 1 to 500 characters")?;
    let user_id = on_user(database_url, who, |user_id| Command::SuspendUser {
        user_id,
        reason,
    })
    .await?;
    println!("user {user_id} is suspended");
    Ok(())
}

/// Lifts the suspension of the account named by `who` (a `UserReactivated` event).
pub async fn reactivate(database_url: &str, who: &UserRef) -> anyhow::Result<()> {
    let user_id = on_user(database_url, who, |user_id| Command::ReactivateUser {
        user_id,
    })
    .await?;
    println!("user {user_id} is active");
    Ok(())
}

/// Finds the user named by `who` and executes the command `build` makes for it, as the
/// operator. Safe on a running ledger: its relay publishes the event and its projections
/// apply it like any other.
async fn on_user(
    database_url: &str,
    who: &UserRef,
    build: impl FnOnce(UserId) -> Command,
) -> anyhow::Result<UserId> {
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
    let done = async {
        let user_id = find(&ledger, who).await?;
        let ctx = CommandContext::internal(Actor::Operator);
        ledger.execute(&ctx, build(user_id)).await?;
        anyhow::Ok(user_id)
    }
    .await;
    // The ledger's committer holds a connection of its own until it stops: stop it first.
    ledger.shutdown().await;
    pool.close().await;
    done
}

async fn find(ledger: &Ledger, who: &UserRef) -> anyhow::Result<UserId> {
    match who {
        UserRef::Email(email) => {
            let email = Email::parse(email).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(ledger
                .find_login(&email)
                .await?
                .with_context(|| format!("no user with email {email}"))?
                .user_id)
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
            Ok(id)
        }
    }
}

/// What `escrow restore` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Events given the lowest transaction id (0 when the store was not ahead of the
    /// cluster).
    pub renumbered: u64,
    /// Events the read models were rebuilt from.
    pub replayed: u64,
}

/// Prepares a store restored from a logical dump (into a new cluster, with a fresh
/// JetStream stream) to be served: renumbers the feed's transaction ids if they are ahead
/// of this cluster's, forgets every feed checkpoint (so the relay publishes every event,
/// once, in feed order), and rebuilds the read models. Run it with no server running.
pub async fn restore(database_url: &str) -> anyhow::Result<Restored> {
    crate::server::migrate(database_url).await?;
    let pool = event_store::connect(
        database_url,
        &PoolSettings {
            max_connections: 4,
            ..Default::default()
        },
    )
    .await?;
    let store = EventStore::new(pool.clone());
    let renumbered = match store.restored_ahead().await? {
        Some(_) => store.renumber_restored().await?,
        None => {
            store.forget_checkpoints().await?;
            0
        }
    };
    let stats = projections::replay::replay(
        &pool,
        &projections::replay::ReplayOptions::default(),
        |_| {},
    )
    .await?;
    pool.close().await;
    Ok(Restored {
        renumbered,
        replayed: stats.events,
    })
}
