//! Contract and dispute rows of a batch, folded in memory and written with one statement
//! per table.
//!
//! Applying these events one statement each made the projection a chain of round trips:
//! an escrow flow is five of them, and under a sustained escrow load the lag grew through
//! the run instead of staying flat. Instead, the rows the batch touches are read with
//! one query, every event changes its row in memory in stream order, and the changed rows
//! are written back with one upsert per table. Escrow holds released from a contract are
//! handed to the wallet movements as sums, like every other balance change.

use std::collections::{HashMap, HashSet};

use crate::apply::Incoming;
use chrono::{DateTime, Utc};
use domain::contract::{MilestoneStatus, Milestones};
use domain::{ContractStatus, DisputeStatus, Event};
use rust_decimal::Decimal;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

type Time = DateTime<Utc>;

/// One row of `rm_contracts`.
#[derive(Debug, Clone, sqlx::FromRow)]
struct ContractRow {
    id: Uuid,
    buyer_id: Uuid,
    seller_id: Uuid,
    title: String,
    description: Option<String>,
    amount: Decimal,
    currency: String,
    held_amount: Decimal,
    status: String,
    inspection_period_hours: Option<i32>,
    delivered_at: Option<Time>,
    auto_release_at: Option<Time>,
    dispute_id: Option<Uuid>,
    created_at: Time,
    updated_at: Time,
    position: i64,
    fund_by: Option<Time>,
    fee_percent_bps: Option<i32>,
    fee_minimum: Option<Decimal>,
    fee_maximum: Option<Decimal>,
    fee_payer: Option<String>,
    fee_charged: Decimal,
    fee_held: Decimal,
    milestones: Json<Milestones>,
}

/// One row of `rm_disputes`.
#[derive(Debug, Clone, sqlx::FromRow)]
struct DisputeRow {
    id: Uuid,
    contract_id: Uuid,
    buyer_id: Uuid,
    seller_id: Uuid,
    raised_by: Uuid,
    description: String,
    status: String,
    outcome: Option<String>,
    seller_amount: Option<Decimal>,
    buyer_amount: Option<Decimal>,
    currency: String,
    resolution: Option<String>,
    resolved_by: Option<Uuid>,
    resolved_at: Option<Time>,
    created_at: Time,
    updated_at: Time,
    position: i64,
}

/// Escrow money leaving a contract: no longer held for its buyer `(user, currency, amount)`,
/// in event order.
pub(crate) type Unholds = Vec<(Uuid, String, Decimal)>;

/// The contract and dispute rows of one batch.
#[derive(Default)]
pub(crate) struct EscrowRows {
    contracts: HashMap<Uuid, ContractRow>,
    disputes: HashMap<Uuid, DisputeRow>,
    changed_contracts: HashSet<Uuid>,
    changed_disputes: HashSet<Uuid>,
}

fn stream_uuid(stream_id: &str, prefix: &str) -> Option<Uuid> {
    stream_id
        .strip_prefix(prefix)
        .and_then(|id| Uuid::parse_str(id).ok())
}

fn value(a: &Option<domain::Amount>) -> Decimal {
    a.map_or(Decimal::ZERO, |a| a.value())
}

fn millis(ms: i64) -> Time {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl EscrowRows {
    /// Reads the rows the batch's contract and dispute events will change (and the
    /// contracts its disputes are raised on), in one query per table.
    /// `decoded` holds, by index, the batch's events that were decoded already (their
    /// envelopes' `data` may be null).
    pub(crate) async fn load(
        conn: &mut PgConnection,
        batch: &[Incoming],
        decoded: &[Option<&Event>],
    ) -> anyhow::Result<Self> {
        let mut contract_ids = Vec::new();
        let mut dispute_ids = Vec::new();
        for (i, env) in batch.iter().enumerate() {
            if let Some(id) = stream_uuid(&env.stream_id, "contract-") {
                contract_ids.push(id);
            } else if let Some(id) = stream_uuid(&env.stream_id, "dispute-") {
                dispute_ids.push(id);
                // A dispute row copies its contract's parties and currency.
                let contract = match decoded.get(i).copied().flatten() {
                    Some(Event::DisputeRaised { contract_id, .. }) => Some(contract_id.0),
                    Some(_) => None,
                    None => env
                        .data
                        .get("contractId")
                        .and_then(|v| v.as_str())
                        .and_then(|s| Uuid::parse_str(s).ok()),
                };
                if let Some(c) = contract {
                    contract_ids.push(c);
                }
            }
        }
        let mut rows = Self::default();
        if !contract_ids.is_empty() {
            contract_ids.sort();
            contract_ids.dedup();
            let found: Vec<ContractRow> = sqlx::query_as(
                "SELECT id, buyer_id, seller_id, title, description, amount, currency, held_amount, status, \
                        inspection_period_hours, delivered_at, auto_release_at, dispute_id, created_at, updated_at, position, \
                        fund_by, fee_percent_bps, fee_minimum, fee_maximum, fee_payer, fee_charged, fee_held, milestones \
                 FROM rm_contracts WHERE id = ANY($1)",
            )
            .bind(&contract_ids)
            .fetch_all(&mut *conn)
            .await?;
            rows.contracts = found.into_iter().map(|r| (r.id, r)).collect();
        }
        if !dispute_ids.is_empty() {
            dispute_ids.sort();
            dispute_ids.dedup();
            let found: Vec<DisputeRow> = sqlx::query_as(
                "SELECT id, contract_id, buyer_id, seller_id, raised_by, description, status, outcome, seller_amount, \
                        buyer_amount, currency, resolution, resolved_by, resolved_at, created_at, updated_at, position \
                 FROM rm_disputes WHERE id = ANY($1)",
            )
            .bind(&dispute_ids)
            .fetch_all(&mut *conn)
            .await?;
            rows.disputes = found.into_iter().map(|r| (r.id, r)).collect();
        }
        Ok(rows)
    }

    fn contract(&mut self, id: Uuid) -> anyhow::Result<&mut ContractRow> {
        self.changed_contracts.insert(id);
        self.contracts
            .get_mut(&id)
            .ok_or_else(|| anyhow::anyhow!("contract {id} is not in the read models"))
    }

    /// Money leaving escrow for `milestone` (or the contract as a whole): the contract's
    /// held amount drops, the buyer's hold with it; an emptied milestone closes as
    /// `closed`, and the contract closes once nothing is held.
    fn pay_out(
        &mut self,
        id: Uuid,
        milestone: Option<u16>,
        amount: Decimal,
        closed: MilestoneStatus,
        at: Time,
        unholds: &mut Unholds,
    ) -> anyhow::Result<()> {
        let c = self.contract(id)?;
        c.held_amount -= amount;
        c.milestones.paid(milestone, amount, closed);
        c.auto_release_at = c.milestones.next_auto_release().map(|t| millis(t.0));
        if c.held_amount.is_zero() {
            c.status = c.milestones.closing_status().as_str().to_owned();
            c.auto_release_at = None;
        }
        c.updated_at = at;
        unholds.push((c.buyer_id, c.currency.clone(), amount));
        Ok(())
    }

    /// A payment's or refund's fees: `charged` collected, `released` of the buyer's prepaid
    /// fee no longer held (collected or returned).
    fn fees(
        &mut self,
        id: Uuid,
        charged: Decimal,
        released: Decimal,
        unholds: &mut Unholds,
    ) -> anyhow::Result<()> {
        let c = self.contract(id)?;
        c.fee_charged += charged;
        c.fee_held -= released;
        if !released.is_zero() {
            unholds.push((c.buyer_id, c.currency.clone(), released));
        }
        Ok(())
    }

    /// Takes a contract or dispute event; returns false for any other event.
    pub(crate) fn take(
        &mut self,
        env: &Incoming,
        event: &Event,
        unholds: &mut Unholds,
    ) -> anyhow::Result<bool> {
        let at = env.recorded_at;
        let contract_id = || {
            stream_uuid(&env.stream_id, "contract-")
                .ok_or_else(|| anyhow::anyhow!("{} is not a contract stream", env.stream_id))
        };
        match event {
            Event::ContractCreated {
                contract_id: id,
                buyer_id,
                seller_id,
                title,
                description,
                amount,
                currency,
                inspection_period_hours,
                fund_by,
                fee,
                milestones,
                created_at,
                ..
            } => {
                let milestones = Milestones::created(
                    milestones.as_deref(),
                    title,
                    amount.value(),
                    *inspection_period_hours,
                );
                let row = ContractRow {
                    id: id.0,
                    buyer_id: buyer_id.0,
                    seller_id: seller_id.0,
                    title: title.clone(),
                    description: description.as_ref().map(|d| d.as_str().to_owned()),
                    amount: amount.value(),
                    currency: currency.code().to_owned(),
                    held_amount: Decimal::ZERO,
                    status: ContractStatus::Draft.as_str().into(),
                    inspection_period_hours: inspection_period_hours
                        .and_then(|h| i32::try_from(h).ok()),
                    delivered_at: None,
                    auto_release_at: None,
                    dispute_id: None,
                    created_at: millis(created_at.0),
                    updated_at: at,
                    position: env.position,
                    fund_by: fund_by.map(|t| millis(t.0)),
                    fee_percent_bps: fee.map(|f| i32::from(f.percent_bps)),
                    fee_minimum: fee.and_then(|f| f.minimum).map(|a| a.value()),
                    fee_maximum: fee.and_then(|f| f.maximum).map(|a| a.value()),
                    fee_payer: fee.map(|f| f.payer.as_str().to_owned()),
                    fee_charged: Decimal::ZERO,
                    fee_held: Decimal::ZERO,
                    milestones: Json(milestones),
                };
                self.contracts.insert(id.0, row);
                self.contract(id.0)?;
            }
            Event::ContractFunded {
                amount, fee_held, ..
            } => {
                let c = self.contract(contract_id()?)?;
                c.held_amount += amount.value();
                c.fee_held += value(fee_held);
                c.milestones.funded();
                c.status = ContractStatus::Active.as_str().into();
                c.updated_at = at;
            }
            Event::ContractDelivered {
                delivered_at,
                auto_release_at,
                milestone,
            } => {
                let c = self.contract(contract_id()?)?;
                c.delivered_at = Some(millis(delivered_at.0));
                c.milestones
                    .delivered(*milestone, *delivered_at, *auto_release_at);
                c.auto_release_at = c.milestones.next_auto_release().map(|t| millis(t.0));
                c.updated_at = at;
            }
            Event::ContractReleased {
                amount,
                seller_fee,
                buyer_fee,
                milestone,
                ..
            } => {
                let id = contract_id()?;
                let closed = MilestoneStatus::Released;
                self.pay_out(id, *milestone, amount.value(), closed, at, unholds)?;
                self.fees(
                    id,
                    value(seller_fee) + value(buyer_fee),
                    value(buyer_fee),
                    unholds,
                )?;
            }
            Event::ContractRefunded {
                amount,
                fee_returned,
                milestone,
                ..
            } => {
                let id = contract_id()?;
                let closed = MilestoneStatus::Refunded;
                self.pay_out(id, *milestone, amount.value(), closed, at, unholds)?;
                self.fees(id, Decimal::ZERO, value(fee_returned), unholds)?;
            }
            Event::ContractCancelled { .. } => {
                let c = self.contract(contract_id()?)?;
                c.status = ContractStatus::Cancelled.as_str().into();
                c.updated_at = at;
            }
            Event::ContractExpired { .. } => {
                let c = self.contract(contract_id()?)?;
                c.status = ContractStatus::Expired.as_str().into();
                c.updated_at = at;
            }
            Event::ContractDisputed { dispute_id } => {
                let c = self.contract(contract_id()?)?;
                c.status = ContractStatus::Disputed.as_str().into();
                c.dispute_id = Some(dispute_id.0);
                c.updated_at = at;
            }
            Event::ContractSettled {
                outcome,
                seller_amount,
                buyer_amount,
                seller_fee,
                buyer_fee,
                fee_returned,
                ..
            } => {
                let id = contract_id()?;
                self.fees(
                    id,
                    value(seller_fee) + value(buyer_fee),
                    value(buyer_fee) + value(fee_returned),
                    unholds,
                )?;
                let c = self.contract(id)?;
                c.milestones.settled(*outcome);
                c.status = c.milestones.closing_status().as_str().into();
                c.held_amount = Decimal::ZERO;
                c.auto_release_at = None;
                c.updated_at = at;
                unholds.push((
                    c.buyer_id,
                    c.currency.clone(),
                    *seller_amount + *buyer_amount,
                ));
            }
            Event::DisputeRaised {
                dispute_id,
                contract_id,
                raised_by,
                description,
                raised_at,
            } => {
                let c = self.contracts.get(&contract_id.0).ok_or_else(|| {
                    anyhow::anyhow!("contract {} is not in the read models", contract_id.0)
                })?;
                let row = DisputeRow {
                    id: dispute_id.0,
                    contract_id: c.id,
                    buyer_id: c.buyer_id,
                    seller_id: c.seller_id,
                    raised_by: raised_by.0,
                    description: description.clone(),
                    status: DisputeStatus::Open.as_str().into(),
                    outcome: None,
                    seller_amount: None,
                    buyer_amount: None,
                    currency: c.currency.clone(),
                    resolution: None,
                    resolved_by: None,
                    resolved_at: None,
                    created_at: millis(raised_at.0),
                    updated_at: at,
                    position: env.position,
                };
                self.disputes.insert(dispute_id.0, row);
                self.changed_disputes.insert(dispute_id.0);
            }
            Event::DisputeResolved {
                dispute_id,
                resolved_by,
                resolution,
                outcome,
                seller_amount,
                buyer_amount,
                resolved_at,
            } => {
                let d = self.disputes.get_mut(&dispute_id.0).ok_or_else(|| {
                    anyhow::anyhow!("dispute {} is not in the read models", dispute_id.0)
                })?;
                d.status = DisputeStatus::Resolved.as_str().into();
                d.outcome = Some(outcome.as_str().to_owned());
                d.seller_amount = Some(*seller_amount);
                d.buyer_amount = Some(*buyer_amount);
                d.resolution = Some(resolution.clone());
                d.resolved_by = Some(resolved_by.0);
                d.resolved_at = Some(millis(resolved_at.0));
                d.updated_at = at;
                self.changed_disputes.insert(dispute_id.0);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Writes the changed rows, in the caller's transaction: contracts first, then the
    /// disputes on them.
    pub(crate) async fn flush(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        let contracts: Vec<&ContractRow> = self
            .changed_contracts
            .iter()
            .filter_map(|id| self.contracts.get(id))
            .collect();
        if !contracts.is_empty() {
            sqlx::query(
                "INSERT INTO rm_contracts (id, buyer_id, seller_id, title, description, amount, currency, held_amount, status, \
                     inspection_period_hours, delivered_at, auto_release_at, dispute_id, created_at, updated_at, position, fund_by, \
                     fee_percent_bps, fee_minimum, fee_maximum, fee_payer, fee_charged, fee_held, milestones) \
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::numeric[], $7::text[], \
                     $8::numeric[], $9::text[], $10::int[], $11::timestamptz[], $12::timestamptz[], $13::uuid[], \
                     $14::timestamptz[], $15::timestamptz[], $16::bigint[], $17::timestamptz[], $18::int[], $19::numeric[], \
                     $20::numeric[], $21::text[], $22::numeric[], $23::numeric[], $24::jsonb[]) \
                 ON CONFLICT (id) DO UPDATE SET held_amount = EXCLUDED.held_amount, status = EXCLUDED.status, \
                     delivered_at = EXCLUDED.delivered_at, auto_release_at = EXCLUDED.auto_release_at, \
                     dispute_id = EXCLUDED.dispute_id, updated_at = EXCLUDED.updated_at, \
                     fee_charged = EXCLUDED.fee_charged, fee_held = EXCLUDED.fee_held, \
                     milestones = EXCLUDED.milestones",
            )
            .bind(contracts.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.buyer_id).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.seller_id).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.title.as_str()).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.description.as_deref()).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.amount).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.held_amount).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.inspection_period_hours).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.delivered_at).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.auto_release_at).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.dispute_id).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.created_at).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.position).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.fund_by).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.fee_percent_bps).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.fee_minimum).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.fee_maximum).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.fee_payer.as_deref()).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.fee_charged).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| r.fee_held).collect::<Vec<_>>())
            .bind(contracts.iter().map(|r| &r.milestones).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        let disputes: Vec<&DisputeRow> = self
            .changed_disputes
            .iter()
            .filter_map(|id| self.disputes.get(id))
            .collect();
        if !disputes.is_empty() {
            sqlx::query(
                "INSERT INTO rm_disputes (id, contract_id, buyer_id, seller_id, raised_by, description, status, outcome, \
                     seller_amount, buyer_amount, currency, resolution, resolved_by, resolved_at, created_at, updated_at, position) \
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::text[], \
                     $8::text[], $9::numeric[], $10::numeric[], $11::text[], $12::text[], $13::uuid[], $14::timestamptz[], \
                     $15::timestamptz[], $16::timestamptz[], $17::bigint[]) \
                 ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, outcome = EXCLUDED.outcome, \
                     seller_amount = EXCLUDED.seller_amount, buyer_amount = EXCLUDED.buyer_amount, \
                     resolution = EXCLUDED.resolution, resolved_by = EXCLUDED.resolved_by, \
                     resolved_at = EXCLUDED.resolved_at, updated_at = EXCLUDED.updated_at",
            )
            .bind(disputes.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.contract_id).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.buyer_id).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.seller_id).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.raised_by).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.description.as_str()).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.outcome.as_deref()).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.seller_amount).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.buyer_amount).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.resolution.as_deref()).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.resolved_by).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.resolved_at).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.created_at).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .bind(disputes.iter().map(|r| r.position).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        self.changed_contracts.clear();
        self.changed_disputes.clear();
        Ok(())
    }
}
