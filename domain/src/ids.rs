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
