//! Webhooks: the ledger's events delivered over HTTP to the endpoints admins register,
//! signed, in feed order per endpoint with gapless sequence numbers, retried until they
//! succeed or grow too old. docs/integrations.md is the receiver's side.
//!
//! `address` says where an endpoint may point; `secrets` mints, seals and signs;
//! `deliverer` stages each endpoint's events from its own JetStream consumer and sends
//! them, more slowly while the CPU is contended (`pressure`); `store` holds the
//! deliverer's tables; `replay` queues past events again.

mod address;
mod deliverer;
mod pressure;
mod replay;
mod secrets;
mod stats;
mod store;

pub use address::{check_url, is_public, UrlRefusal};
pub use deliverer::{
    backoff, consumer_name, lease_name, Deliverer, WebhookSettings, KEPT_BODY_BYTES,
};
pub use pressure::CpuPressure;
pub use replay::replay;
pub use secrets::{
    mint, rotate as rotate_secret, signature_header, signing as signing_secrets,
    store as store_secret, SecretBox, ROTATION_OVERLAP_HOURS,
};
pub use stats::{stats, EndpointStats};
pub use store::{deliveries, delivery, forget, resume, retry, Delivery, RetryOutcome};
