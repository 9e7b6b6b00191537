//! The deadline scheduler: releases held funds to the seller once a delivered contract's
//! inspection window has expired and the buyer neither released nor disputed, and expires
//! a draft nobody funded by its `fundBy` deadline.

use std::sync::Arc;
use std::time::Duration;

use command_handlers::{Actor, Command, CommandContext, CommandError, Ledger};
use domain::{ContractId, DomainError, TransactionId};
use sqlx::PgPool;
use tokio::sync::{watch, Notify};

use crate::clock::Clock;

/// Contracts looked at per scan: bounds one round's work; the next scan takes the rest.
const DUE_CONTRACTS_PER_SCAN_MAX: i64 = 100;

/// Finds due contracts in the read model and releases or expires them as the `system`
/// actor.
///
/// Every `escrow serve` may run one: the read model only nominates candidates, the domain
/// re-checks the deadline against the contract's own stream, and the append is guarded by
/// the stream version, so a contract is released (or expired) exactly once however many
/// run.
pub struct Deadlines {
    ledger: Arc<Ledger>,
    pool: PgPool,
    clock: Arc<dyn Clock>,
    relay_wake: Arc<Notify>,
    poll: Duration,
}

impl Deadlines {
    /// A scheduler scanning every `poll_ms` milliseconds.
    pub fn new(
        ledger: Arc<Ledger>,
        pool: PgPool,
        clock: Arc<dyn Clock>,
        relay_wake: Arc<Notify>,
        poll_ms: u64,
    ) -> Self {
        Self {
            ledger,
            pool,
            clock,
            relay_wake,
            poll: Duration::from_millis(poll_ms.max(10)),
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            if let Err(e) = self.scan().await {
                tracing::warn!(error = %e, "deadline scan failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Releases every contract whose window ended and expires every draft whose deadline
    /// passed. Returns how many contracts this process changed.
    pub async fn scan(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let release =
            projections::read::due_for_release(&self.pool, now, DUE_CONTRACTS_PER_SCAN_MAX).await?;
        let expire =
            projections::read::due_for_expiry(&self.pool, now, DUE_CONTRACTS_PER_SCAN_MAX).await?;
        let mut changed = 0;
        for (id, expiry) in release
            .into_iter()
            .map(|id| (id, false))
            .chain(expire.into_iter().map(|id| (id, true)))
        {
            let contract_id = ContractId(id);
            let now = self.clock.timestamp();
            let cmd = if expiry {
                Command::ExpireContract { contract_id, now }
            } else {
                Command::ReleaseContract {
                    contract_id,
                    actor: domain::Actor::System,
                    milestone: None,
                    amount: None,
                    now,
                    transaction_id: TransactionId::new_v7(),
                }
            };
            let ctx = CommandContext::internal(Actor::System);
            match self.ledger.execute(&ctx, cmd).await {
                Ok(_) => {
                    changed += 1;
                    self.relay_wake.notify_one();
                    if expiry {
                        tracing::info!(contract = %id, "funding deadline passed: draft expired");
                    } else {
                        tracing::info!(contract = %id, "inspection window expired: funds released to the seller");
                    }
                }
                // Another server got there first, or a party acted, or a dispute froze it.
                Err(CommandError::Domain(DomainError::InvalidTransition { .. })) => {}
                Err(e) => tracing::warn!(contract = %id, error = %e, "scheduled change failed"),
            }
        }
        Ok(changed)
    }
}
