//! Fixed-window request counters kept in memory and reconciled with the database
//! (docs/api.md#rate-limits, docs/decisions.md#api-line-rate), so counting a request writes
//! nothing on the request path.
//!
//! Each node counts its own requests per bucket and window. A background task calls
//! [`RateLimiter::sync`] every `rate_limit_sync_ms`: for every bucket used since the last sync it
//! adds the node's unflushed count to the shared row with one upsert (`GuardRepo::rate_limit_add`)
//! and keeps the total that comes back, which includes the other nodes' flushed requests. A request
//! is refused when the last known shared total plus what this node has not yet flushed reaches the
//! limit. The first request of a window in a bucket this node has not seen, or has left idle
//! through a sync, reads the shared total (a read, not a write), so no admission relies on a total
//! older than one sync.
//!
//! Tolerance: on one node the count is exact. Across nodes an account can exceed its limit by what
//! the other nodes admit before this node's next sync reads their flushed counts back: at most one
//! sync interval plus one flush of their traffic, and never more than the limit once per node.
//!
//! Why not `governor`: it keeps a GCRA per key on one node and has no notion of a total shared
//! with other processes, nor of the fixed windows whose `X-RateLimit-Reset` the API promises.
//! The state here is a map under one mutex held for a few instructions per request, never across
//! an await.

use std::collections::HashMap;
use std::sync::Mutex;

use nixflex_store::{GuardRepo, StoreError};

/// One bucket's counts in its current window on this node.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    window_start: i64,
    /// When the row may be purged (unix seconds).
    expires_at: i64,
    /// The total across nodes as of the last read, this node's flushed requests included.
    shared: i64,
    /// Requests admitted here and not yet handed to a flush.
    pending: i64,
    /// Requests handed to a flush that has not answered yet.
    flushing: i64,
    /// Used since the last sync (so its shared total is worth reading back).
    touched: bool,
    /// Whether `shared` was read back at the last sync or since. A bucket left idle for a sync
    /// is not read back (that would be a read per bucket per interval); its next request reads
    /// the total again instead, so no admission relies on a total older than one sync.
    known: bool,
}

impl Bucket {
    fn count(&self) -> i64 {
        self.shared + self.pending + self.flushing
    }
}

/// What counting one request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Requests counted in the window, this one included when admitted.
    pub count: i64,
    /// Whether the request is within the limit.
    pub admitted: bool,
}

/// The node's counters. Shared behind the application state's `Arc`.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bucket>> {
        match self.buckets.lock() {
            Ok(buckets) => buckets,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Counts a request in `bucket`'s window starting at `window_start`, or `None` when this node
    /// does not know the window's shared total yet, or the bucket sat idle through a sync: read
    /// the total and call [`seed`](Self::seed) first.
    /// A refused request is not counted.
    pub fn hit(&self, bucket: &str, window_start: i64, limit: i64) -> Option<Decision> {
        let mut buckets = self.buckets();
        let state = buckets
            .get_mut(bucket)
            .filter(|state| state.window_start == window_start && state.known)?;
        state.touched = true;
        let current = state.count();
        if current >= limit {
            return Some(Decision { count: current, admitted: false });
        }
        state.pending += 1;
        Some(Decision { count: current + 1, admitted: true })
    }

    /// Starts `bucket`'s window at the shared total read from the database (a newer window
    /// replaces an older one; a concurrent seed of the same window keeps the larger total).
    pub fn seed(&self, bucket: &str, window_start: i64, expires_at: i64, shared: i64) {
        let mut buckets = self.buckets();
        match buckets.get_mut(bucket) {
            Some(state) if state.window_start == window_start => {
                state.shared = state.shared.max(shared);
                state.known = true;
            }
            Some(state) if state.window_start > window_start => {}
            _ => {
                buckets.insert(
                    bucket.to_owned(),
                    Bucket {
                        window_start,
                        expires_at,
                        shared,
                        pending: 0,
                        flushing: 0,
                        touched: false,
                        known: true,
                    },
                );
            }
        }
    }

    /// Flushes every used bucket's unflushed count (one upsert each) and reads the shared totals
    /// back; forgets windows that ended before `now` (unix seconds). A failed flush is retried at
    /// the next sync, its requests still counted here meanwhile.
    ///
    /// # Errors
    /// The first database error (the other buckets are still synced).
    pub async fn sync(&self, store: &dyn GuardRepo, now: i64) -> Result<(), StoreError> {
        let work: Vec<(String, i64, i64, i64)> = {
            let mut buckets = self.buckets();
            // `expires_at` is a window past the window's end; the window itself ended one
            // window earlier, but keeping it until expiry costs only memory.
            buckets.retain(|_, state| state.expires_at >= now);
            for state in buckets.values_mut() {
                if !(state.touched || state.pending > 0) {
                    state.known = false;
                }
            }
            buckets
                .iter_mut()
                .filter(|(_, state)| state.touched || state.pending > 0)
                .map(|(name, state)| {
                    let n = state.pending;
                    state.pending = 0;
                    state.flushing += n;
                    state.touched = false;
                    (name.clone(), state.window_start, state.expires_at, n)
                })
                .collect()
        };
        let mut first_error = None;
        for (name, window_start, expires_at, n) in work {
            let result = store.rate_limit_add(&name, window_start, expires_at, n).await;
            let mut buckets = self.buckets();
            let Some(state) =
                buckets.get_mut(&name).filter(|state| state.window_start == window_start)
            else {
                continue;
            };
            state.flushing -= n;
            match result {
                Ok(total) => state.shared = state.shared.max(total),
                Err(error) => {
                    state.pending += n;
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unseen_window_asks_for_the_shared_total_first() {
        let limiter = RateLimiter::new();
        assert_eq!(limiter.hit("a:r", 60, 3), None);
        limiter.seed("a:r", 60, 180, 1);
        assert_eq!(limiter.hit("a:r", 60, 3), Some(Decision { count: 2, admitted: true }));
        assert_eq!(limiter.hit("a:r", 60, 3), Some(Decision { count: 3, admitted: true }));
        assert_eq!(limiter.hit("a:r", 60, 3), Some(Decision { count: 3, admitted: false }));
        // The next window starts over once seeded.
        assert_eq!(limiter.hit("a:r", 120, 3), None);
        limiter.seed("a:r", 120, 240, 0);
        assert_eq!(limiter.hit("a:r", 120, 3), Some(Decision { count: 1, admitted: true }));
    }

    /// Admits requests on `limiter` until it refuses one; how many it admitted.
    fn admit_all(limiter: &RateLimiter, limit: i64) -> i64 {
        let mut admitted = 0;
        while limiter.hit("a:r", 60, limit).is_some_and(|d| d.admitted) {
            admitted += 1;
        }
        admitted
    }

    #[tokio::test]
    async fn two_nodes_reconcile_through_the_database_within_the_tolerance() {
        let (store, _guard) = nixflex_store::testing::fresh_store("sqlite").await.unwrap();
        let (node_a, node_b) = (RateLimiter::new(), RateLimiter::new());
        node_a.seed("a:r", 60, 180, 0);
        node_b.seed("a:r", 60, 180, 0);
        // Between two syncs each node admits up to the limit on its own: the most two nodes can
        // admit together is the limit once per node.
        assert_eq!(admit_all(&node_a, 10), 10);
        assert_eq!(admit_all(&node_b, 10), 10);
        node_a.sync(&*store, 100).await.unwrap();
        node_b.sync(&*store, 100).await.unwrap();
        assert_eq!(store.rate_limit_add("a:r", 60, 180, 0).await.unwrap(), 20, "all flushed");
        // Node B read the total back with its flush.
        assert_eq!(node_b.hit("a:r", 60, 30), Some(Decision { count: 21, admitted: true }));
        // Node A sat idle through a sync: it reads the total again before counting.
        node_a.sync(&*store, 100).await.unwrap();
        assert_eq!(node_a.hit("a:r", 60, 30), None);
        let shared = store.rate_limit_add("a:r", 60, 180, 0).await.unwrap();
        node_a.seed("a:r", 60, 180, shared);
        // B's request is not flushed yet: A does not know it (the tolerance).
        assert_eq!(node_a.hit("a:r", 60, 30), Some(Decision { count: 21, admitted: true }));
        node_a.sync(&*store, 100).await.unwrap();
        node_b.sync(&*store, 100).await.unwrap();
        assert_eq!(node_b.hit("a:r", 60, 30), Some(Decision { count: 23, admitted: true }));
        // An ended window is forgotten at the first sync after its expiry.
        node_b.sync(&*store, 181).await.unwrap();
        assert_eq!(node_b.hit("a:r", 60, 30), None);
    }

    #[test]
    fn an_older_seed_does_not_rewind_a_newer_window() {
        let limiter = RateLimiter::new();
        limiter.seed("a:r", 120, 240, 5);
        limiter.seed("a:r", 60, 180, 0);
        assert_eq!(limiter.hit("a:r", 120, 10), Some(Decision { count: 6, admitted: true }));
    }
}
