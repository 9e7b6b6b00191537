//! An in-process cache of aggregate state, validated against the store on every use.

use std::collections::HashMap;
use std::sync::Mutex;

use domain::stream::Aggregate;
use domain::Versioned;

/// Entries kept before the cache is emptied. Wallet state is a few dozen bytes, so this
/// bounds memory at a few megabytes while keeping every active account warm.
const CACHED_STREAMS_MAX: usize = 50_000;

/// Remembers the state of recently used streams with their version. A load starts from
/// the cached version and reads only the events after it, so the cache can never serve
/// stale state: another process's appends are simply the tail that gets read.
#[derive(Debug)]
pub(crate) struct StateCache<T> {
    entries: Mutex<HashMap<String, Versioned<T>>>,
}

impl<T: Aggregate + Clone> StateCache<T> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached state, or the empty state at version 0.
    pub(crate) fn get(&self, stream: &str) -> Versioned<T> {
        match self.entries.lock() {
            Ok(m) => m.get(stream).cloned().unwrap_or_default(),
            Err(_) => Versioned::default(),
        }
    }

    /// Keeps `state` if it is newer than what is cached.
    pub(crate) fn put(&self, stream: &str, state: &Versioned<T>) {
        if let Ok(mut m) = self.entries.lock() {
            if m.len() >= CACHED_STREAMS_MAX {
                m.clear();
            }
            match m.get(stream) {
                Some(old) if old.version >= state.version => {}
                _ => {
                    m.insert(stream.to_owned(), state.clone());
                }
            }
        }
    }
}
