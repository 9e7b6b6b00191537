//! How a decision reads the streams it decides from: one trait, [`Load`], and its two
//! ways. [`Cached`] is a command deciding by itself: the process's cached state of a
//! stream, or that state brought up to date from the store. [`Overlaid`] is the committer
//! deciding a command again inside a batch: the states decided earlier in the same batch
//! first, then the cache. Neither calls back into the ledger or the committer.

use std::collections::HashMap;

use domain::codec::decode;
use domain::stream::Aggregate;
use domain::{
    Contract, Dispute, Event, FeeSchedule, Payin, Payout, Revenue, StreamId, User, Versioned,
    Wallet, WebhookEndpoint,
};
use event_store::EventStore;

use crate::cache::StateCache;
use crate::command::CommandError;

/// Loaded or resulting state of one stream, by aggregate type.
#[derive(Debug, Clone)]
pub(crate) enum State {
    User(Versioned<User>),
    Wallet(Versioned<Wallet>),
    Contract(Versioned<Contract>),
    Dispute(Versioned<Dispute>),
    FeeSchedule(Versioned<FeeSchedule>),
    Revenue(Versioned<Revenue>),
    Payin(Versioned<Payin>),
    Payout(Versioned<Payout>),
    Webhook(Versioned<WebhookEndpoint>),
}

impl State {
    pub(crate) fn empty_for(stream: &StreamId) -> State {
        match stream.category() {
            "user" => State::User(Versioned::default()),
            "contract" => State::Contract(Versioned::default()),
            "dispute" => State::Dispute(Versioned::default()),
            "feeschedule" => State::FeeSchedule(Versioned::default()),
            "revenue" => State::Revenue(Versioned::default()),
            "payin" => State::Payin(Versioned::default()),
            "payout" => State::Payout(Versioned::default()),
            "webhook" => State::Webhook(Versioned::default()),
            _ => State::Wallet(Versioned::default()),
        }
    }

    pub(crate) fn apply(&mut self, e: &Event) {
        match self {
            State::User(v) => v.apply(e),
            State::Wallet(v) => v.apply(e),
            State::Contract(v) => v.apply(e),
            State::Dispute(v) => v.apply(e),
            State::FeeSchedule(v) => v.apply(e),
            State::Revenue(v) => v.apply(e),
            State::Payin(v) => v.apply(e),
            State::Payout(v) => v.apply(e),
            State::Webhook(v) => v.apply(e),
        }
    }

    pub(crate) fn version(&self) -> u64 {
        match self {
            State::User(v) => v.version,
            State::Wallet(v) => v.version,
            State::Contract(v) => v.version,
            State::Dispute(v) => v.version,
            State::FeeSchedule(v) => v.version,
            State::Revenue(v) => v.version,
            State::Payin(v) => v.version,
            State::Payout(v) => v.version,
            State::Webhook(v) => v.version,
        }
    }
}

/// States decided earlier in the same group commit, by stream: later commands of the batch
/// are decided on top of them.
pub(crate) type Overlay = HashMap<String, State>;

/// An aggregate the ledger decides from: where its cached states are kept, and how to pick
/// it out of a [`State`].
pub(crate) trait Aggregated: Aggregate + Clone + Send + Sync + 'static {
    fn cache(states: &States) -> &StateCache<Self>;
    fn from_state(s: &State) -> Option<Versioned<Self>>;
}

macro_rules! aggregated {
    ($ty:ty, $variant:ident, $cache:ident) => {
        impl Aggregated for $ty {
            fn cache(states: &States) -> &StateCache<Self> {
                &states.$cache
            }

            fn from_state(s: &State) -> Option<Versioned<Self>> {
                match s {
                    State::$variant(v) => Some(v.clone()),
                    _ => None,
                }
            }
        }
    };
}
aggregated!(User, User, users);
aggregated!(Wallet, Wallet, wallets);
aggregated!(Contract, Contract, contracts);
aggregated!(Dispute, Dispute, disputes);
aggregated!(FeeSchedule, FeeSchedule, fee_schedules);
aggregated!(Revenue, Revenue, revenues);
aggregated!(Payin, Payin, payins);
aggregated!(Payout, Payout, payouts);
aggregated!(WebhookEndpoint, Webhook, webhooks);

/// The states of the streams this process has decided from or committed: one cache per
/// aggregate type, over the store. A cached state is never wrong, only possibly old: a
/// load reads the events after its version.
#[derive(Debug)]
pub(crate) struct States {
    store: EventStore,
    users: StateCache<User>,
    wallets: StateCache<Wallet>,
    contracts: StateCache<Contract>,
    disputes: StateCache<Dispute>,
    fee_schedules: StateCache<FeeSchedule>,
    revenues: StateCache<Revenue>,
    payins: StateCache<Payin>,
    payouts: StateCache<Payout>,
    webhooks: StateCache<WebhookEndpoint>,
}

impl States {
    pub(crate) fn new(store: EventStore) -> Self {
        States {
            store,
            users: StateCache::new(),
            wallets: StateCache::new(),
            contracts: StateCache::new(),
            disputes: StateCache::new(),
            fee_schedules: StateCache::new(),
            revenues: StateCache::new(),
            payins: StateCache::new(),
            payouts: StateCache::new(),
            webhooks: StateCache::new(),
        }
    }

    pub(crate) fn store(&self) -> &EventStore {
        &self.store
    }

    /// A stream's current state: the cached state brought up to date from the store.
    pub(crate) async fn current<T: Aggregated>(
        &self,
        stream: &StreamId,
    ) -> Result<Versioned<T>, CommandError> {
        let cache = T::cache(self);
        let mut state = cache.get(stream.as_str());
        let tail = self
            .store
            .read_stream(stream.as_str(), state.version as i64)
            .await?;
        for e in &tail {
            debug_assert_eq!(
                e.version as u64,
                state.version + 1,
                "stream versions must be contiguous"
            );
            state.apply(&decode(&e.event_type, e.schema_version, &e.data)?);
        }
        if !tail.is_empty() {
            cache.put(stream.as_str(), &state);
        }
        Ok(state)
    }

    /// Keeps committed states in the caches.
    pub(crate) fn remember(&self, after: &[(StreamId, State)]) {
        for (stream, state) in after {
            let k = stream.as_str();
            match state {
                State::User(v) => self.users.put(k, v),
                State::Wallet(v) => self.wallets.put(k, v),
                State::Contract(v) => self.contracts.put(k, v),
                State::Dispute(v) => self.disputes.put(k, v),
                State::FeeSchedule(v) => self.fee_schedules.put(k, v),
                State::Revenue(v) => self.revenues.put(k, v),
                State::Payin(v) => self.payins.put(k, v),
                State::Payout(v) => self.payouts.put(k, v),
                State::Webhook(v) => self.webhooks.put(k, v),
            }
        }
    }
}

/// Where a decision reads a stream's state from.
pub(crate) trait Load {
    /// The state of `stream` to decide from.
    fn load<T: Aggregated>(
        &self,
        stream: &StreamId,
    ) -> impl std::future::Future<Output = Result<Versioned<T>, CommandError>> + Send;
}

/// A command deciding by itself: the cached state as it is (the committer checks every
/// version read against the streams' heads before anything is written), or, when `fresh`
/// (a retry after a conflict) or not cached, the state brought up to date from the store.
#[derive(Clone, Copy)]
pub(crate) struct Cached<'a> {
    pub(crate) states: &'a States,
    pub(crate) fresh: bool,
}

impl Load for Cached<'_> {
    async fn load<T: Aggregated>(&self, stream: &StreamId) -> Result<Versioned<T>, CommandError> {
        if !self.fresh {
            let cached = T::cache(self.states).get(stream.as_str());
            if cached.version > 0 {
                return Ok(cached);
            }
        }
        self.states.current(stream).await
    }
}

/// The committer deciding a command again: this batch's state of a stream first, else as
/// [`Cached`] (the cache holds every state this process committed).
#[derive(Clone, Copy)]
pub(crate) struct Overlaid<'a> {
    pub(crate) overlay: &'a Overlay,
    pub(crate) states: &'a States,
}

impl Load for Overlaid<'_> {
    async fn load<T: Aggregated>(&self, stream: &StreamId) -> Result<Versioned<T>, CommandError> {
        if let Some(state) = self.overlay.get(stream.as_str()).and_then(T::from_state) {
            return Ok(state);
        }
        Cached {
            states: self.states,
            fresh: false,
        }
        .load(stream)
        .await
    }
}
