//! The per-node memory of active phone numbers (docs/operations.md#number-cache), so the
//! carrier's webhooks and a call's follow-ups do not each read the number from the database: a
//! call reads it some seven times, one of the largest shares of its database work.
//!
//! Coherence rides on the database's authentication epoch (`auth_epoch`), which triggers move in
//! the same transaction as every insert, update and delete of a phone number (migration 0022) —
//! cascades from a deleted agent or account included. The cache trusts what it holds only for
//! [`TRUST_FOR`] after it last read that epoch unchanged; a lookup past that reads the epoch
//! first (one indexed read, at most one per [`TRUST_FOR`] under load) and forgets everything if
//! it moved. So a number changed on one node is seen by every other node within [`TRUST_FOR`],
//! and by the node that changed it at once (its writes forget the cache after they commit).
//!
//! Both answers are kept: a number and "no active number". A lookup that read the database
//! while the cache was being forgotten is not kept (a generation counter), so a change racing a
//! lookup cannot leave the old number behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nixflex_core::number::PhoneNumber;

/// How long the cache trusts its entries after reading the epoch unchanged.
pub(crate) const TRUST_FOR: Duration = Duration::from_millis(250);

/// Numbers remembered at most; past it the cache starts over (a bound on memory: a flood of
/// webhooks naming unknown numbers cannot grow it without limit).
const MAX_ENTRIES: usize = 20_000;

#[derive(Debug, Default)]
struct State {
    /// E.164 → the active number, or `None`: no active number.
    entries: HashMap<String, Option<Arc<PhoneNumber>>>,
    /// The epoch the entries belong to and when a read of it started (`None` before the first).
    epoch: Option<(i64, Instant)>,
    /// Moves with every forgetting.
    generation: u64,
}

/// What a lookup found in memory.
#[derive(Debug)]
pub(crate) enum Cached {
    /// Trusted: this is what the database holds, or held within [`TRUST_FOR`].
    Hit(Option<Arc<PhoneNumber>>),
    /// Not trusted or not known: read the epoch first when `check_epoch`, then the number,
    /// and offer it back with [`NumberCache::keep`] under `generation`.
    Miss { check_epoch: bool, generation: u64 },
}

/// Active phone numbers of this node, shared by every clone of the store.
#[derive(Debug, Default)]
pub(crate) struct NumberCache {
    state: Mutex<State>,
}

impl NumberCache {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-written in a way that
        // matters: at worst an entry is missing.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The number's entry if it is trusted now.
    pub(crate) fn lookup(&self, phone_number: &str) -> Cached {
        let state = self.state();
        let fresh = state.epoch.is_some_and(|(_, read_at)| read_at.elapsed() < TRUST_FOR);
        if fresh && let Some(entry) = state.entries.get(phone_number) {
            return Cached::Hit(entry.clone());
        }
        Cached::Miss { check_epoch: !fresh, generation: state.generation }
    }

    /// Records the epoch a read started at `read_at` found: the entries are kept if it did not
    /// move, forgotten otherwise. Returns the generation a lookup now offers its answer under.
    pub(crate) fn observe_epoch(&self, epoch: i64, read_at: Instant) -> u64 {
        let mut state = self.state();
        match state.epoch {
            Some((known, _)) if known == epoch => {}
            _ => {
                state.entries.clear();
                state.generation += 1;
            }
        }
        // An older read finishing late must not extend the trust.
        let newest = state.epoch.map_or(read_at, |(_, at)| at.max(read_at));
        state.epoch = Some((epoch, newest));
        state.generation
    }

    /// Keeps what the database said about `phone_number`, unless the cache was forgotten since
    /// the lookup began (`generation`).
    pub(crate) fn keep(&self, generation: u64, phone_number: &str, found: Option<&PhoneNumber>) {
        let mut state = self.state();
        if state.generation != generation || state.epoch.is_none() {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.clear();
        }
        state.entries.insert(phone_number.to_owned(), found.map(|number| Arc::new(number.clone())));
    }

    /// Forgets everything (this node changed a number, an agent or an account).
    pub(crate) fn forget(&self) {
        let mut state = self.state();
        state.entries.clear();
        state.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(e164: &str) -> PhoneNumber {
        crate::testing::phone_number(&"acct_test".into(), None, e164)
    }

    #[test]
    fn nothing_is_trusted_before_the_epoch_was_read() {
        let cache = NumberCache::default();
        let Cached::Miss { check_epoch: true, generation } = cache.lookup("+15550001111") else {
            panic!("trusted before any epoch");
        };
        cache.keep(generation, "+15550001111", Some(&number("+15550001111")));
        assert!(matches!(cache.lookup("+15550001111"), Cached::Miss { check_epoch: true, .. }));
    }

    #[test]
    fn an_entry_is_trusted_under_an_unchanged_epoch_and_forgotten_when_it_moves() {
        let cache = NumberCache::default();
        let generation = cache.observe_epoch(7, Instant::now());
        cache.keep(generation, "+15550001111", Some(&number("+15550001111")));
        cache.keep(generation, "+15550002222", None);
        assert!(matches!(cache.lookup("+15550001111"), Cached::Hit(Some(_))));
        assert!(matches!(cache.lookup("+15550002222"), Cached::Hit(None)));
        // The same epoch read again keeps them.
        cache.observe_epoch(7, Instant::now());
        assert!(matches!(cache.lookup("+15550001111"), Cached::Hit(Some(_))));
        // A moved epoch forgets them.
        cache.observe_epoch(8, Instant::now());
        assert!(matches!(cache.lookup("+15550001111"), Cached::Miss { check_epoch: false, .. }));
    }

    #[test]
    fn trust_ends_after_its_window_and_a_late_older_read_does_not_extend_it() {
        let cache = NumberCache::default();
        let long_ago = Instant::now().checked_sub(TRUST_FOR * 4).expect("an instant in the past");
        let generation = cache.observe_epoch(1, long_ago);
        cache.keep(generation, "+15550001111", Some(&number("+15550001111")));
        assert!(matches!(cache.lookup("+15550001111"), Cached::Miss { check_epoch: true, .. }));
        cache.observe_epoch(1, Instant::now());
        assert!(matches!(cache.lookup("+15550001111"), Cached::Hit(Some(_))));
        // A read that started long ago and finished now leaves the newer trust in place.
        cache.observe_epoch(1, long_ago);
        assert!(matches!(cache.lookup("+15550001111"), Cached::Hit(Some(_))));
    }

    #[test]
    fn an_answer_read_before_a_forgetting_is_not_kept() {
        let cache = NumberCache::default();
        let generation = cache.observe_epoch(1, Instant::now());
        // A write on this node commits and forgets while the lookup reads the database.
        cache.forget();
        cache.keep(generation, "+15550001111", Some(&number("+15550001111")));
        assert!(matches!(cache.lookup("+15550001111"), Cached::Miss { .. }));
        // The same for an epoch that moved meanwhile.
        let generation = cache.observe_epoch(1, Instant::now());
        cache.observe_epoch(2, Instant::now());
        cache.keep(generation, "+15550001111", None);
        assert!(matches!(cache.lookup("+15550001111"), Cached::Miss { .. }));
    }
}
