//! Typed identifiers. All are UUIDs; the server mints v7 (time-ordered) ids.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Currency;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Mints a fresh, time-ordered (v7) id.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// Identifies a user (and its `user-<id>` stream).
    UserId
);
id_type!(
    /// Identifies a wallet (and its `wallet-<id>` stream).
    WalletId
);
id_type!(
    /// Identifies one money movement; both legs of a transfer share it.
    TransactionId
);

/// Namespace for deriving wallet ids, so that "the EUR wallet of user U" has exactly one
/// id and one stream, and opening it twice is a stream-version conflict, not a duplicate.
const WALLET_NAMESPACE: Uuid = Uuid::from_u128(0x6a1d_7a52_3c0e_4b8e_9a3f_0d5e_11c4_2b77);

impl WalletId {
    /// The one wallet id of `user` in `currency`.
    pub fn of(user: UserId, currency: Currency) -> Self {
        let name = format!("{}:{}", user.0, currency.code());
        WalletId(Uuid::new_v5(&WALLET_NAMESPACE, name.as_bytes()))
    }
}
id_type!(
    /// Identifies an escrow contract (and its `contract-<id>` stream, which also holds
    /// the contract's escrow account).
    ContractId
);
id_type!(
    /// Identifies a dispute (and its `dispute-<id>` stream).
    DisputeId
);

/// A point in time as milliseconds since the Unix epoch (UTC). The domain never reads a
/// clock: commands carry the time they are decided at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// This time plus whole hours.
    pub fn plus_hours(self, hours: u32) -> Timestamp {
        Timestamp(self.0.saturating_add(i64::from(hours) * 3_600_000))
    }

    /// This time plus whole days.
    pub fn plus_days(self, days: u32) -> Timestamp {
        self.plus_hours(days.saturating_mul(24))
    }
}
id_type!(
    /// Identifies a currency's fee schedule (and its `feeschedule-<id>` stream).
    FeeScheduleId
);
id_type!(
    /// Identifies the platform's revenue account in a currency (and its `revenue-<id>`
    /// stream).
    RevenueId
);

id_type!(
    /// Identifies a pay-in (and its `payin-<id>` stream): derived from who created it and
    /// its reference, so a reference names one pay-in per service.
    PayinId
);

id_type!(
    /// Identifies a payout (and its `payout-<id>` stream).
    PayoutId
);

id_type!(
    /// Identifies a webhook endpoint (and its `webhook-<id>` stream).
    WebhookId
);

/// Namespace for the ids derived from a currency or from another id.
const PLATFORM_NAMESPACE: Uuid = Uuid::from_u128(0x2f6b_0c1e_8d47_4a3b_b5e2_7c91_40aa_93d1);

impl FeeScheduleId {
    /// The one fee schedule of `currency`.
    pub fn of(currency: Currency) -> Self {
        let name = format!("fee-schedule:{}", currency.code());
        FeeScheduleId(Uuid::new_v5(&PLATFORM_NAMESPACE, name.as_bytes()))
    }
}

impl RevenueId {
    /// The one revenue account of `currency`.
    pub fn of(currency: Currency) -> Self {
        let name = format!("revenue:{}", currency.code());
        RevenueId(Uuid::new_v5(&PLATFORM_NAMESPACE, name.as_bytes()))
    }
}

impl PayinId {
    /// The pay-in `creator` (a service or an admin) names `reference`.
    pub fn of(creator: UserId, reference: &str) -> Self {
        let name = format!("payin:{}:{reference}", creator.0);
        PayinId(Uuid::new_v5(&PLATFORM_NAMESPACE, name.as_bytes()))
    }
}

impl TransactionId {
    /// The id of the fee movement that goes with the money movement `self`: derived, so a
    /// retried decision names the same movement, and distinct, so each has its own row in
    /// a wallet's history.
    pub fn fee(self) -> TransactionId {
        TransactionId(Uuid::new_v5(&PLATFORM_NAMESPACE, self.0.as_bytes()))
    }
}
