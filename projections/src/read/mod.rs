//! The read side's queries: the rows of the `rm_*` tables as typed structs, and every
//! query the API, the scheduler and `verify` run on them. The projections write these tables, so the
//! queries live beside the code that defines what the rows mean; the API turns rows into
//! views and never writes SQL of its own.

mod contracts;
mod disputes;
mod payins;
mod payouts;
mod platform;
mod snapshot;
mod users;
mod wallets;
mod webhooks;

pub use contracts::{contract, contracts_of, due_for_expiry, due_for_release, ContractRow};
pub use disputes::{dispute, disputes, DisputeRow};
pub use payins::{payin, payins, PayinRow};
pub use payouts::{payout, payouts, PayoutRow};
pub use platform::{
    fee_schedules, revenue, revenue_history, FeeScheduleRow, RevenueRow, RevenueTransactionRow,
};
pub use snapshot::{snapshot, Snapshot};
pub use users::{own_streams, user, UserRow};
pub use wallets::{
    balance_before, history, statement_page, wallet, wallet_as_of, TransactionRow, WalletRow,
    WalletStateRow,
};
pub use webhooks::{webhook, webhooks, WebhookRow};
