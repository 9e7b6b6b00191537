//! Double-entry view of the events: every money movement is a set of postings that sum to
//! zero per currency, between user wallets and the external world account.

use rust_decimal::Decimal;

use crate::event::Event;
use crate::ids::{ContractId, WalletId};

/// An account of the double-entry ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// Outside the ledger: deposits come from it, withdrawals go to it.
    World,
    /// A user's wallet.
    Wallet(WalletId),
    /// A contract's escrow account: what the buyer funded and is not yet paid out.
    Escrow(ContractId),
}

/// One signed line of a movement: positive credits the account, negative debits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    /// The account.
    pub account: Account,
    /// The signed amount.
    pub delta: Decimal,
}

/// The postings an event contributes, given the wallet whose stream it was recorded on.
///
/// Escrow movements are posted by their wallet-side events (held, paid out, refunded),
/// each against the contract's escrow account; the contract stream's own events mirror
/// them for the contract's state and post nothing.
/// A deposit posts to the wallet and the world in one event; a transfer posts one leg per
/// event (the debit on the payer's stream, the credit on the payee's), and the two events
/// are always appended in one transaction, so the sum over all recorded events is zero.
pub fn postings(stream_wallet: Option<WalletId>, event: &Event) -> Vec<Posting> {
    let Some(wallet) = stream_wallet else {
        return Vec::new();
    };
    let w = Account::Wallet(wallet);
    match event {
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
