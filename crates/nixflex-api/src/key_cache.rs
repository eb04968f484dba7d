//! The per-node cache of verified API keys (docs/security.md#key-cache), so an authenticated
//! read costs no database round trip.
//!
//! Entries are keyed by the SHA-256 of the secret, the same value the database stores; the
//! plaintext secret is never kept. Only successful verifications are cached: an unknown, wrong or
//! revoked key always goes to the database, so a key made a moment ago works at once.
//!
//! Coherence across nodes rides on the database's authentication epoch
//! (`AccountRepo::auth_epoch`), which moves in the same transaction as every key or account change
//! that can make an entry wrong. A background task calls [`KeyCache::poll`] every [`POLL_EVERY`];
//! when the epoch moved, the cache is emptied. When polling has not succeeded for [`MAX_STALENESS`],
//! the cache answers nothing and every request is verified in the database again. So a revoked or
//! rotated key stops working on every node within `POLL_EVERY` plus one query, and never later than
//! `MAX_STALENESS`. The node that made the change empties its own cache at once
//! ([`KeyCache::invalidate`]).
//!
//! This module must not decide whether a key is valid: it only remembers what the database said.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use nixflex_core::ids::KeyId;
use nixflex_store::{Account, AccountRepo};

/// How often the authentication epoch is read (docs/security.md#key-cache).
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// How long after the last successful poll cached entries are still trusted. Past it, every
/// request is verified in the database until polling succeeds again.
pub const MAX_STALENESS: Duration = Duration::from_millis(750);

/// Most keys remembered; past it the cache starts over (a bound on memory, not an eviction
/// policy: a node serving this many distinct keys re-verifies each once).
const MAX_ENTRIES: usize = 100_000;

/// What a verification found, as remembered.
#[derive(Debug, Clone)]
struct Entry {
    key_id: KeyId,
    account: Account,
}

/// Verified keys of this node. Cheap to share behind the application state's `Arc`.
#[derive(Debug)]
pub struct KeyCache {
    /// SHA-256 hex of the secret → the key and its account.
    entries: RwLock<HashMap<String, Entry>>,
    /// Bumped by every emptying; a verification started under an older generation is not
    /// remembered (it may have read the database before the change that emptied the cache).
    generation: AtomicU64,
    /// The epoch seen by the last successful poll (`None` before the first).
    epoch: Mutex<Option<i64>>,
    /// When the last poll succeeded, as nanoseconds after `started` (0: never).
    last_poll_ok: AtomicU64,
    /// The base of `last_poll_ok`.
    started: Instant,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyCache {
    /// An empty cache that trusts nothing until its first successful [`poll`](Self::poll).
    pub fn new() -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            epoch: Mutex::new(None),
            last_poll_ok: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn nanos_since_start(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether polling succeeded recently enough for entries to be trusted.
    fn is_fresh(&self) -> bool {
        let last = self.last_poll_ok.load(Ordering::Acquire);
        if last == 0 {
            return false;
        }
        let age = self.nanos_since_start().saturating_sub(last);
        u128::from(age) <= MAX_STALENESS.as_nanos()
    }

    /// The account of `key_id` if its secret's hash was verified and nothing changed since.
    pub fn lookup(&self, key_id: &str, secret_hash: &str) -> Option<Account> {
        if !self.is_fresh() {
            return None;
        }
        let entries = self.entries.read().ok()?;
        let entry = entries.get(secret_hash)?;
        (entry.key_id.as_str() == key_id).then(|| entry.account.clone())
    }

    /// The generation to pass to [`remember`](Self::remember); read it before asking the
    /// database.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Remembers a successful verification made by a database read that started in
    /// `generation`; ignored when the cache was emptied since, or is not trusted now.
    pub fn remember(&self, generation: u64, secret_hash: &str, key_id: KeyId, account: Account) {
        if !self.is_fresh() {
            return;
        }
        let Ok(mut entries) = self.entries.write() else { return };
        // Checked under the lock that `invalidate` also takes, so an emptying cannot slip in
        // between the check and the insert.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(secret_hash.to_owned(), Entry { key_id, account });
    }

    /// Forgets everything (this node changed a key or an account, or the epoch moved).
    pub fn invalidate(&self) {
        let mut entries = match self.entries.write() {
            Ok(entries) => entries,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Reads the authentication epoch once: empties the cache when it moved, and marks the
    /// cache trusted for [`MAX_STALENESS`]. A failed read leaves the cache to go stale.
    ///
    /// # Errors
    /// When the database cannot be read.
    pub async fn poll(&self, store: &dyn AccountRepo) -> Result<(), nixflex_store::StoreError> {
        let epoch = store.auth_epoch().await?;
        let moved = {
            let mut seen = match self.epoch.lock() {
                Ok(seen) => seen,
                Err(poisoned) => poisoned.into_inner(),
            };
            let moved = seen.is_some_and(|seen| seen != epoch);
            *seen = Some(epoch);
            moved
        };
        if moved {
            self.invalidate();
        }
        self.last_poll_ok.store(self.nanos_since_start(), Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            account_id: "acct_0000000000000001".into(),
            name: None,
            email: None,
            created_at: chrono::Utc::now(),
            max_concurrent_calls: None,
            rate_limit_reads: None,
            rate_limit_writes: None,
        }
    }

    fn fresh_cache() -> KeyCache {
        let cache = KeyCache::new();
        cache.last_poll_ok.store(cache.nanos_since_start(), Ordering::Release);
        cache
    }

    #[test]
    fn nothing_is_trusted_before_the_first_poll() {
        let cache = KeyCache::new();
        cache.remember(cache.generation(), "h1", "nxf_1".into(), account());
        assert!(cache.lookup("nxf_1", "h1").is_none());
    }

    #[test]
    fn a_remembered_key_is_found_by_its_hash_and_id_only() {
        let cache = fresh_cache();
        cache.remember(cache.generation(), "h1", "nxf_1".into(), account());
        assert!(cache.lookup("nxf_1", "h1").is_some());
        assert!(cache.lookup("nxf_2", "h1").is_none(), "another key id with the same secret");
        assert!(cache.lookup("nxf_1", "h2").is_none(), "another secret");
    }

    #[test]
    fn a_verification_older_than_an_invalidation_is_not_remembered() {
        let cache = fresh_cache();
        let generation = cache.generation();
        cache.invalidate();
        cache.remember(generation, "h1", "nxf_1".into(), account());
        assert!(cache.lookup("nxf_1", "h1").is_none());
    }

    #[test]
    fn a_stale_cache_answers_nothing() {
        let mut cache = KeyCache::new();
        // The last successful poll was two seconds ago.
        cache.started = Instant::now().checked_sub(Duration::from_secs(2)).unwrap();
        cache.last_poll_ok.store(1, Ordering::Release);
        cache.remember(cache.generation(), "h1", "nxf_1".into(), account());
        assert!(cache.lookup("nxf_1", "h1").is_none());
        cache.last_poll_ok.store(cache.nanos_since_start(), Ordering::Release);
        cache.remember(cache.generation(), "h1", "nxf_1".into(), account());
        assert!(cache.lookup("nxf_1", "h1").is_some());
    }
}
