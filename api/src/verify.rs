//! `escrow verify`: re-derives everything from the raw events and compares.
//!
//! Checks, in one pass over the store (in position order, each stream's events folded as
//! they come):
//! * every stream's hash chain (an edited, inserted or deleted event breaks it);
//! * every event decodes (schema and upcasters);
//! * double-entry conservation: wallets + escrow accounts + platform revenue + world sum to
//!   zero per currency;
//! * no wallet and no revenue account below zero; each contract's escrow account equals
//!   its held amount plus the buyer's prepaid fee, and its milestones hold what it holds;
//!   the fees each contract says it charged equal the fee postings into revenue that name
//!   it;
//! * each wallet's payouts in flight equal its pending payouts;
//! * every read-model row equals the state folded from its stream (streams the projection
//!   has not reached yet are reported as lagging, not as mismatches);
//! * each wallet's history adds up to its balance, its last row's balance after says the
//!   same, and its last recorded state (what `asOf` reads) equals its folded numbers;
//! * no stream's read models are ahead of the store (the hash chain cannot see a deleted
//!   last event; the projection's record of what it applied can).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use domain::codec::decode;
use domain::ledger::{postings, Account};
use domain::{Contract, Currency, Dispute, DisputeStatus, Event, Revenue, User, Versioned, Wallet};
use event_store::{ChainCheck, RecordedEvent};
use futures::TryStreamExt;
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Events read.
    pub events: u64,
    /// Streams read.
    pub streams: u64,
    /// Every problem found, one line each, naming the stream, version and position.
    pub problems: Vec<String>,
    /// Streams whose read models have not caught up yet (not a failure).
    pub lagging: Vec<String>,
    /// Sum over every account, per currency (must be zero).
    pub totals: BTreeMap<String, Decimal>,
}

impl VerifyReport {
    /// Whether everything holds.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

enum Folded {
    User(Versioned<User>),
    Wallet(Versioned<Wallet>),
    Contract(Versioned<Contract>),
    Dispute(Versioned<Dispute>),
    Revenue(Versioned<Revenue>),
    Payin(Versioned<domain::Payin>),
    Payout(Versioned<domain::Payout>),
    Webhook(Versioned<domain::WebhookEndpoint>),
    Other,
}

/// Money sums folded from every stream: per account, and the fees collected into revenue
/// per contract (from `FeeCollected`, to compare with what each contract says it charged).
#[derive(Default)]
struct Sums {
    accounts: HashMap<(Account, Currency), Decimal>,
    fees_by_contract: HashMap<Uuid, (Decimal, String)>,
    /// What each wallet's pending payouts add up to, folded from the payouts.
    pending_by_wallet: HashMap<Uuid, Decimal>,
}

/// Runs every check against the database at `pool`.
pub async fn verify(pool: &PgPool) -> anyhow::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut sums = Sums::default();
    // The store is read once, front to back in position order (sequential reads of the
    // table, which position order is also each stream's version order), each event
    // checked and folded onto its stream as it comes.
    let mut streams: HashMap<String, StreamCheck> = HashMap::new();
    let store = event_store::EventStore::new(pool.clone());
    let mut rows = store.scan();
    while let Some(e) = rows.try_next().await? {
        let check = match streams.get_mut(&e.stream_id) {
            Some(c) => c,
            None => streams
                .entry(e.stream_id.clone())
                .or_insert_with(|| StreamCheck::new(&e.stream_id)),
        };
        check_event(&e, check, &mut report, &mut sums);
    }
    drop(rows);
    let mut folded: Vec<(String, i64, Folded)> = streams
        .into_iter()
        .map(|(name, c)| (name, c.version, c.state))
        .collect();
    folded.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    report.streams = folded.len() as u64;

    for ((account, currency), v) in &sums.accounts {
        match account {
            Account::Wallet(w) if *v < Decimal::ZERO => report
                .problems
                .push(format!("wallet {w} ({currency}) is negative: {v}")),
            Account::Revenue(_) if *v < Decimal::ZERO => report
                .problems
                .push(format!("platform revenue ({currency}) is negative: {v}")),
            Account::PayoutsInFlight(w) if *v < Decimal::ZERO => report.problems.push(format!(
                "payouts in flight of wallet {w} ({currency}) are negative: {v}"
            )),
            _ => {}
        }
        *report.totals.entry(currency.code().to_owned()).or_default() += *v;
    }
    for (currency, total) in &report.totals {
        if !total.is_zero() {
            report.problems.push(format!(
                "conservation broken in {currency}: all accounts sum to {total}, not 0"
            ));
        }
    }
    for (stream, _, f) in &folded {
        match f {
            Folded::Contract(c) => {
                let (Some(id), Some(cur)) = (c.state.id, c.state.currency) else {
                    continue;
                };
                let account = sums
                    .accounts
                    .get(&(Account::Escrow(id), cur))
                    .copied()
                    .unwrap_or_default();
                let in_milestones: Decimal =
                    c.state.milestones.0.iter().map(|m| m.held_amount).sum();
                if in_milestones != c.state.held {
                    report.problems.push(format!(
                        "{stream}: its milestones hold {in_milestones} but the contract holds {}",
                        c.state.held
                    ));
                }
                let says = c.state.held + c.state.fee_held;
                if account != says {
                    report.problems.push(format!(
                        "{stream}: escrow account holds {account} but the contract says {says} ({} held, {} prepaid fee)",
                        c.state.held, c.state.fee_held
                    ));
                }
                let (collected, revenue_stream) = sums
                    .fees_by_contract
                    .get(&id.0)
                    .cloned()
                    .unwrap_or_default();
                if collected != c.state.fee_charged {
                    report.problems.push(format!(
                        "{stream}: the fee postings into revenue ({revenue_stream}) that name it total {collected}, but the contract says it charged {}",
                        c.state.fee_charged
                    ));
                }
            }
            Folded::Payout(p) => {
                let (Some(w), Some(cur)) = (p.state.wallet_id, p.state.currency) else {
                    continue;
                };
                if p.state.status == domain::PayoutStatus::Pending {
                    *sums.pending_by_wallet.entry(w.0).or_default() += p.state.amount;
                }
                sums.accounts
                    .entry((Account::PayoutsInFlight(w), cur))
                    .or_default();
            }
            Folded::Revenue(r) => {
                let Some(cur) = r.state.currency else {
                    continue;
                };
                let account = sums
                    .accounts
                    .get(&(Account::Revenue(cur), cur))
                    .copied()
                    .unwrap_or_default();
                if account != r.state.balance {
                    report.problems.push(format!(
                        "{stream}: revenue postings sum to {account} but the account says {}",
                        r.state.balance
                    ));
                }
            }
            _ => {}
        }
    }
    for ((account, _), v) in &sums.accounts {
        if let Account::PayoutsInFlight(w) = account {
            let pending = sums
                .pending_by_wallet
                .get(&w.0)
                .copied()
                .unwrap_or_default();
            if *v != pending {
                report.problems.push(format!(
                    "wallet {w}: its payouts in flight hold {v} but its pending payouts add up to {pending}"
                ));
            }
        }
    }
    compare_read_models(pool, &folded, &sums.pending_by_wallet, &mut report).await?;
    Ok(report)
}

/// One stream as the scan has met it so far.
struct StreamCheck {
    chain: ChainCheck,
    state: Folded,
    /// The newest version met.
    version: i64,
}

impl StreamCheck {
    fn new(name: &str) -> Self {
        let state = match name.split_once('-').map(|(c, _)| c) {
            Some("user") => Folded::User(Versioned::default()),
            Some("wallet") => Folded::Wallet(Versioned::default()),
            Some("contract") => Folded::Contract(Versioned::default()),
            Some("dispute") => Folded::Dispute(Versioned::default()),
            Some("revenue") => Folded::Revenue(Versioned::default()),
            Some("payin") => Folded::Payin(Versioned::default()),
            Some("payout") => Folded::Payout(Versioned::default()),
            Some("webhook") => Folded::Webhook(Versioned::default()),
            _ => Folded::Other,
        };
        Self {
            chain: ChainCheck::default(),
            state,
            version: 0,
        }
    }
}

/// Checks `e`'s link in its stream's chain, decodes it and folds it onto the stream.
fn check_event(e: &RecordedEvent, s: &mut StreamCheck, report: &mut VerifyReport, sums: &mut Sums) {
    report.events += 1;
    s.version = e.version;
    if let Err(b) = s.chain.next(e) {
        report.problems.push(format!(
            "hash chain broken in {} at version {} (position {}): {}",
            b.stream_id, b.version, b.position, b.reason
        ));
    }
    let event = match decode(&e.event_type, e.schema_version, &e.data) {
        Ok(ev) => ev,
        Err(err) => {
            report.problems.push(format!(
                "{} version {} (position {}): {err}",
                e.stream_id, e.version, e.position
            ));
            return;
        }
    };
    match &mut s.state {
        Folded::User(v) => v.apply(&event),
        Folded::Wallet(v) => {
            v.apply(&event);
            if let (Some(id), Some(cur)) = (v.state.id, v.state.currency) {
                for p in postings(Some(id), &event) {
                    *sums.accounts.entry((p.account, cur)).or_default() += p.delta;
                }
            }
        }
        Folded::Contract(v) => v.apply(&event),
        Folded::Dispute(v) => v.apply(&event),
        Folded::Payin(v) => v.apply(&event),
        Folded::Webhook(v) => v.apply(&event),
        Folded::Payout(v) => {
            v.apply(&event);
            if let Event::PayoutCompleted { currency, .. } = &event {
                for p in postings(None, &event) {
                    *sums.accounts.entry((p.account, *currency)).or_default() += p.delta;
                }
            }
        }
        Folded::Revenue(v) => {
            v.apply(&event);
            if let Event::FeeCollected {
                currency,
                contract_id,
                amount,
                ..
            } = &event
            {
                let entry = sums.fees_by_contract.entry(contract_id.0).or_default();
                entry.0 += amount.value();
                entry.1 = format!("{} version {}", e.stream_id, e.version);
                for p in postings(None, &event) {
                    *sums.accounts.entry((p.account, *currency)).or_default() += p.delta;
                }
            } else if let Event::RevenueWithdrawn { currency, .. } = &event {
                for p in postings(None, &event) {
                    *sums.accounts.entry((p.account, *currency)).or_default() += p.delta;
                }
            }
        }
        Folded::Other => {}
    }
}

async fn compare_read_models(
    pool: &PgPool,
    folded: &[(String, i64, Folded)],
    pending_by_wallet: &HashMap<Uuid, Decimal>,
    report: &mut VerifyReport,
) -> anyhow::Result<()> {
    let projections::read::Snapshot {
        applied,
        users,
        wallets,
        histories,
        last_states,
        payouts,
        contracts,
        revenue,
        disputes,
        payins,
        webhooks,
    } = projections::read::snapshot(pool).await?;
    // What each buyer has held in escrow, per currency, folded from the contracts.
    let mut held_by_buyer: HashMap<(Uuid, Currency), Decimal> = HashMap::new();
    for (_, _, f) in folded {
        if let Folded::Contract(c) = f {
            if let (Some(b), Some(cur)) = (c.state.buyer, c.state.currency) {
                *held_by_buyer.entry((b.0, cur)).or_default() += c.state.held + c.state.fee_held;
            }
        }
    }
    // Applied further than the store goes: the stream's last events (or all of them) were
    // deleted after they were projected.
    let stored: HashMap<&str, i64> = folded.iter().map(|(s, v, _)| (s.as_str(), *v)).collect();
    let mut ahead: Vec<(&String, i64, i64)> = applied
        .iter()
        .map(|(s, v)| (s, *v, stored.get(s.as_str()).copied().unwrap_or(0)))
        .filter(|(_, v, at)| at < v)
        .collect();
    ahead.sort();
    for (stream, v, at) in ahead {
        report.problems.push(format!(
            "{stream}: the read models applied version {v} but the store ends at version {at}: events are missing from the store"
        ));
    }
    let mut lagging_wallet_owners = std::collections::HashSet::new();
    for (stream, version, _) in folded {
        if applied.get(stream).copied().unwrap_or(0) < *version {
            report.lagging.push(stream.clone());
        }
    }
    let any_contract_lagging = report.lagging.iter().any(|s| s.starts_with("contract-"));
    for (stream, version, f) in folded {
        if applied.get(stream).copied().unwrap_or(0) < *version {
            if let Folded::Wallet(w) = f {
                if let Some(o) = w.state.owner {
                    lagging_wallet_owners.insert(o.0);
                }
            }
            continue;
        }
        let mismatch =
            |what: String| format!("read model differs from events for {stream}: {what}");
        match f {
            Folded::User(u) => {
                let Some(id) = u.state.id else { continue };
                let want = (
                    u.state
                        .email
                        .as_ref()
                        .map(|e| e.to_string())
                        .unwrap_or_default(),
                    u.state.role.as_str().to_owned(),
                );
                match users.get(&id.0) {
                    Some(got) if *got == want => {}
                    got => report.problems.push(mismatch(format!(
                        "rm_users has {got:?}, events say {want:?}"
                    ))),
                }
            }
            Folded::Wallet(w) => {
                let (Some(id), Some(cur), Some(owner)) =
                    (w.state.id, w.state.currency, w.state.owner)
                else {
                    continue;
                };
                let held = held_by_buyer
                    .get(&(owner.0, cur))
                    .copied()
                    .unwrap_or_default();
                let pending = pending_by_wallet.get(&id.0).copied().unwrap_or_default();
                let balance = w.state.balance;
                let held_ok = |h: &Decimal| *h == held || any_contract_lagging;
                match wallets.get(&id.0) {
                    Some((b, h, p)) if *b == balance && held_ok(h) && *p == pending => {}
                    got => report.problems.push(mismatch(format!(
                        "rm_wallets has (balance, heldInEscrow, pendingPayouts) {got:?}, events say ({balance}, {held}, {pending})"
                    ))),
                }
                // A statement's running balance: the history's movements add up to the
                // balance, and the last row says so too.
                match histories.get(&id.0) {
                    None if balance.is_zero() => {}
                    Some((sum, last)) if *sum == balance && *last == Some(balance) => {}
                    got => report.problems.push(mismatch(format!(
                        "rm_transactions has (sum of movements, balance after the last) {got:?}, events say {balance}"
                    ))),
                }
                match last_states.get(&id.0) {
                    None if balance.is_zero() && held.is_zero() && pending.is_zero() => {}
                    Some((b, h, p))
                        if *b == balance && h.as_ref().is_none_or(held_ok) && *p == pending => {}
                    got => report.problems.push(mismatch(format!(
                        "rm_wallet_states ends with {got:?}, events say ({balance}, {held}, {pending})"
                    ))),
                }
            }
            Folded::Contract(c) => {
                let Some(id) = c.state.id else { continue };
                let want = (
                    c.state.status.as_str().to_owned(),
                    c.state.held,
                    c.state.fee_charged,
                    c.state.milestones.clone(),
                );
                match contracts.get(&id.0) {
                    Some(got) if *got == want => {}
                    got => report.problems.push(mismatch(format!(
                        "rm_contracts has {got:?}, events say {want:?}"
                    ))),
                }
            }
            Folded::Dispute(d) => {
                let Some(id) = d.state.id else { continue };
                let want = if d.state.status == DisputeStatus::Resolved {
                    "RESOLVED"
                } else {
                    "OPEN"
                };
                match disputes.get(&id.0) {
                    Some(got) if got == want => {}
                    got => report.problems.push(mismatch(format!(
                        "rm_disputes has {got:?}, events say {want}"
                    ))),
                }
            }
            Folded::Payin(p) => {
                let Some(id) = p.state.id else { continue };
                let want = p.state.status.as_str();
                match payins.get(&id.0) {
                    Some(got) if got == want => {}
                    got => report.problems.push(mismatch(format!(
                        "rm_payins has {got:?}, events say {want}"
                    ))),
                }
            }
            Folded::Payout(p) => {
                let Some(id) = p.state.id else { continue };
                let want = p.state.status.as_str();
                match payouts.get(&id.0) {
                    Some(got) if got == want => {}
                    got => report.problems.push(mismatch(format!(
                        "rm_payouts has {got:?}, events say {want}"
                    ))),
                }
            }
            Folded::Webhook(w) => {
                let Some(id) = w.state.id else { continue };
                let status = if w.state.deleted {
                    "DELETED"
                } else {
                    w.state.status.as_str()
                };
                let want = (status.to_owned(), w.state.url.clone());
                match webhooks.get(&id.0) {
                    Some(got) if *got == want => {}
                    got => report.problems.push(mismatch(format!(
                        "rm_webhooks has {got:?}, events say {want:?}"
                    ))),
                }
            }
            Folded::Revenue(r) => {
                let Some(cur) = r.state.currency else {
                    continue;
                };
                match revenue.get(cur.code()) {
                    Some(got) if *got == r.state.balance => {}
                    got => report.problems.push(mismatch(format!(
                        "rm_revenue has {got:?}, events say {}",
                        r.state.balance
                    ))),
                }
            }
            Folded::Other => {}
        }
    }
    Ok(())
}

/// Prints a report for people; returns whether everything holds.
pub fn print(report: &VerifyReport, started: DateTime<Utc>) -> bool {
    let secs = (Utc::now() - started).num_milliseconds() as f64 / 1000.0;
    println!(
        "escrow verify: {} events in {} streams checked in {secs:.2}s",
        report.events, report.streams
    );
    for (currency, total) in &report.totals {
        println!("  {currency}: wallets + escrow + revenue + world = {total}");
    }
    if !report.lagging.is_empty() {
        println!(
            "  {} streams not yet projected (skipped for read-model comparison)",
            report.lagging.len()
        );
    }
    if report.ok() {
        println!("OK: hash chains intact, money conserved, no negative wallet or revenue, escrow and fees match contracts, read models match events");
        true
    } else {
        println!("FAILED: {} problem(s)", report.problems.len());
        for p in &report.problems {
            println!("  - {p}");
        }
        false
    }
}
