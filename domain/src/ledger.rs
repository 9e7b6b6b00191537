//! Double-entry view of the events: every money movement is a set of postings that sum to
//! zero per currency, between user wallets, contracts' escrow accounts, the platform's
//! revenue account and the external world account.

use rust_decimal::Decimal;

use crate::event::Event;
use crate::ids::{ContractId, WalletId};
use crate::money::Currency;

/// An account of the double-entry ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// Outside the ledger: deposits come from it, withdrawals go to it.
    World,
    /// A user's wallet.
    Wallet(WalletId),
    /// A contract's escrow account: what the buyer funded (price and prepaid fee) and is
    /// not yet paid out.
    Escrow(ContractId),
    /// The platform's revenue in a currency: fees in, an admin's withdrawals out.
    Revenue(Currency),
    /// A wallet's payouts in flight: asked for, not yet paid by the provider.
    PayoutsInFlight(WalletId),
}

/// One signed line of a movement: positive credits the account, negative debits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    /// The account.
    pub account: Account,
    /// The signed amount.
    pub delta: Decimal,
}

/// The postings an event contributes, given the wallet whose stream it was recorded on
/// (`None` for any other stream: only revenue events post there).
///
/// Escrow movements are posted by their wallet-side events (held, paid out, refunded),
/// each against the contract's escrow account; the contract stream's own events mirror
/// them for the contract's state and post nothing.
/// A deposit posts to the wallet and the world in one event; a transfer posts one leg per
/// event (the debit on the payer's stream, the credit on the payee's), and the two events
/// are always appended in one transaction, so the sum over all recorded events is zero.
/// A fee is the same: the seller's share leaves the seller's wallet by
/// [`Event::FeeCharged`], and [`Event::FeeCollected`] credits the revenue account with the
/// whole fee and debits the escrow account with the buyer's prepaid share.
pub fn postings(stream_wallet: Option<WalletId>, event: &Event) -> Vec<Posting> {
    let line = |account, delta| Posting { account, delta };
    match event {
        Event::FeeCollected {
            currency,
            amount,
            from_escrow,
            contract_id,
            ..
        } => {
            let mut lines = vec![line(Account::Revenue(*currency), amount.value())];
            if let Some(b) = from_escrow {
                lines.push(line(Account::Escrow(*contract_id), -b.value()));
            }
            return lines;
        }
        Event::PayoutCompleted {
            wallet_id, amount, ..
        } => {
            return vec![
                line(Account::PayoutsInFlight(*wallet_id), -amount.value()),
                line(Account::World, amount.value()),
            ]
        }
        Event::RevenueWithdrawn {
            currency, amount, ..
        } => {
            return vec![
                line(Account::Revenue(*currency), -amount.value()),
                line(Account::World, amount.value()),
            ]
        }
        _ => {}
    }
    let Some(wallet) = stream_wallet else {
        return Vec::new();
    };
    let w = Account::Wallet(wallet);
    match event {
        Event::FeeHeld {
            amount,
            contract_id,
            ..
        } => vec![
            line(w, -amount.value()),
            line(Account::Escrow(*contract_id), amount.value()),
        ],
        Event::FeeReturned {
            amount,
            contract_id,
            ..
        } => vec![
            line(w, amount.value()),
            line(Account::Escrow(*contract_id), -amount.value()),
        ],
        Event::FeeCharged { amount, .. } => vec![line(w, -amount.value())],
        Event::PayoutFundsReserved { amount, .. } => vec![
            line(w, -amount.value()),
            line(Account::PayoutsInFlight(wallet), amount.value()),
        ],
        Event::PayoutFundsReturned { amount, .. } => vec![
            line(w, amount.value()),
            line(Account::PayoutsInFlight(wallet), -amount.value()),
        ],
        Event::FundsDeposited { amount, .. } => vec![
            Posting {
                account: w,
                delta: amount.value(),
            },
            Posting {
                account: Account::World,
                delta: -amount.value(),
            },
        ],
        Event::FundsWithdrawn { amount, .. } => vec![
            Posting {
                account: w,
                delta: -amount.value(),
            },
            Posting {
                account: Account::World,
                delta: amount.value(),
            },
        ],
        Event::TransferSent { amount, .. } => vec![Posting {
            account: w,
            delta: -amount.value(),
        }],
        Event::TransferReceived { amount, .. } => vec![Posting {
            account: w,
            delta: amount.value(),
        }],
        Event::EscrowHeld {
            amount,
            contract_id,
            ..
        } => vec![
            Posting {
                account: w,
                delta: -amount.value(),
            },
            Posting {
                account: Account::Escrow(*contract_id),
                delta: amount.value(),
            },
        ],
        Event::EscrowPaymentReceived {
            amount,
            contract_id,
            ..
        }
        | Event::EscrowRefundReceived {
            amount,
            contract_id,
            ..
        } => vec![
            Posting {
                account: w,
                delta: amount.value(),
            },
            Posting {
                account: Account::Escrow(*contract_id),
                delta: -amount.value(),
            },
        ],
        _ => Vec::new(),
    }
}
