//! The inspection-window scheduler: releases held funds to the seller once a delivered
//! contract's window has expired and the buyer neither released nor disputed.

use std::sync::Arc;
use std::time::Duration;

use command_handlers::{Actor, Command, CommandContext, CommandError, Ledger};
use domain::{ContractId, DomainError, TransactionId};
use sqlx::PgPool;
use tokio::sync::{watch, Notify};

use crate::clock::Clock;

/// Contracts looked at per scan: bounds one round's work; the next scan takes the rest.
const DUE_CONTRACTS_PER_SCAN_MAX: i64 = 100;

/// Finds due contracts in the read model and releases them as the `system` actor.
///
/// Every `escrow serve` may run one: the read model only nominates candidates, the domain
/// re-checks the window against the contract's own stream, and the append is guarded by
/// the stream version, so a contract is released exactly once however many run.
pub struct AutoRelease {
    ledger: Arc<Ledger>,
    pool: PgPool,
    clock: Arc<dyn Clock>,
    relay_wake: Arc<Notify>,
    poll: Duration,
}

impl AutoRelease {
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
                tracing::warn!(error = %e, "auto-release scan failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Releases every contract due now. Returns how many this process released.
    pub async fn scan(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let due =
            projections::read::due_for_release(&self.pool, now, DUE_CONTRACTS_PER_SCAN_MAX).await?;
        let mut released = 0;
        for id in due {
            let ctx = CommandContext::internal(Actor::System);
            let cmd = Command::ReleaseContract {
                contract_id: ContractId(id),
                actor: domain::Actor::System,
                amount: None,
                now: self.clock.timestamp(),
                transaction_id: TransactionId::new_v7(),
            };
            match self.ledger.execute(&ctx, cmd).await {
                Ok(_) => {
                    released += 1;
                    self.relay_wake.notify_one();
                    tracing::info!(contract = %id, "inspection window expired: funds released to the seller");
                }
                // Someone else released it, or the buyer acted, or a dispute froze it.
                Err(CommandError::Domain(DomainError::InvalidTransition { .. })) => {}
                Err(e) => tracing::warn!(contract = %id, error = %e, "auto-release failed"),
            }
        }
        Ok(released)
    }
}
