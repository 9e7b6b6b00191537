//! Every fact the ledger records. Names are past tense; each has a schema version.
//!
//! Stored form: the event-store row keeps [`Event::event_type`] and
//! [`Event::schema_version`] in their own columns and the variant's fields as JSON `data`.
//! Serde's adjacent tagging (`{"type": …, "data": …}`) is how the write side and the
//! readers convert between the two.

use serde::{Deserialize, Serialize};

use crate::email::Email;
use crate::ids::{TransactionId, UserId, WalletId};
use crate::money::{Amount, Currency};
use crate::text::Description;
use crate::user::Role;

/// A recorded fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    /// A user account was created (stream `user-<id>`). The password never appears in events.
    UserRegistered {
        /// The new user.
        #[serde(rename = "userId")]
        user_id: UserId,
        /// The normalised e-mail address.
        email: Email,
        /// The role it starts with.
        role: Role,
    },
    /// A user was given a more powerful role (stream `user-<id>`).
    RoleGranted {
        /// The user.
        #[serde(rename = "userId")]
        user_id: UserId,
        /// The new role.
        role: Role,
    },
    /// A wallet came into existence with a zero balance (stream `wallet-<id>`).
    WalletOpened {
        /// The wallet.
        #[serde(rename = "walletId")]
        wallet_id: WalletId,
        /// Its owner.
        #[serde(rename = "userId")]
        user_id: UserId,
        /// Its currency, fixed for life.
        currency: Currency,
    },
    /// Money came in from outside the ledger (the world account) to this wallet.
    FundsDeposited {
        /// The movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// How much.
        amount: Amount,
        /// What the depositor said about it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
    },
    /// Money left the ledger from this wallet to the world account.
    FundsWithdrawn {
        /// The movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// How much.
        amount: Amount,
        /// What the owner said about it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
    },
    /// The debit leg of a transfer, on the payer's wallet.
    TransferSent {
        /// The movement, shared with the matching [`Event::TransferReceived`].
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The payee's wallet.
        #[serde(rename = "toWalletId")]
        to_wallet_id: WalletId,
        /// The payee.
        #[serde(rename = "toUserId")]
        to_user_id: UserId,
        /// How much.
        amount: Amount,
        /// What the payer said about it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
    },
    /// The credit leg of a transfer, on the payee's wallet.
    TransferReceived {
        /// The movement, shared with the matching [`Event::TransferSent`].
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The payer's wallet.
        #[serde(rename = "fromWalletId")]
        from_wallet_id: WalletId,
        /// The payer.
        #[serde(rename = "fromUserId")]
        from_user_id: UserId,
        /// How much.
        amount: Amount,
        /// What the payer said about it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
    },
}

impl Event {
    /// The type name stored beside the data; equal to the serde tag.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::UserRegistered { .. } => "UserRegistered",
            Event::RoleGranted { .. } => "RoleGranted",
            Event::WalletOpened { .. } => "WalletOpened",
            Event::FundsDeposited { .. } => "FundsDeposited",
            Event::FundsWithdrawn { .. } => "FundsWithdrawn",
            Event::TransferSent { .. } => "TransferSent",
            Event::TransferReceived { .. } => "TransferReceived",
        }
    }

    /// The current schema version of this event type's data. Readers upcast older
    /// versions to this one before deserialising.
    pub fn schema_version(&self) -> u32 {
        1
    }
}
