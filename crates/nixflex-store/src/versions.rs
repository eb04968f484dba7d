//! Agents' versions known in memory, for the SQLite store (docs/decisions.md#api-line-rate).
//!
//! An authenticated `GET /v1/agents/{id}` asks the store only for the agent's version (the
//! encoded agent is cached per version by the API); on SQLite that question was half the
//! request's cost — a hand-over to a database thread and back. SQLite is one node: every write
//! of agents goes through this process's store, so the store can know each agent's version
//! without asking. (PostgreSQL nodes cannot: another node may have written; they always ask.)
//!
//! The one rule that makes it safe: a version is remembered only when no write of an agent
//! overlapped the read that found it.
//! - A write of an agent ([`KnownVersions::write_started`]) forgets that agent, counts itself in
//!   flight and moves the generation on; when it has committed
//!   ([`KnownVersions::write_done`]) it remembers the new version only if no other write
//!   overlapped it (none in flight when it started, none started since), else the agent stays
//!   forgotten.
//! - A read that missed ([`KnownVersions::snapshot`], then the database, then
//!   [`KnownVersions::remember`]) remembers what it read only if no write was in flight when it
//!   looked and none started before it remembers.
//!
//! So a remembered version is never older than the database's: while a write is in flight the
//! agent it writes is forgotten (readers ask the database), and a read that might have seen the
//! version before a write is never remembered. Deleted agents are simply forgotten.

use std::collections::HashMap;
use std::sync::Mutex;

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct KnownVersions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// agent id → (its account, its version).
    known: HashMap<String, (String, i64)>,
    /// Moves on at every write's start.
    generation: u64,
    /// Writes started and not done.
    in_flight: u64,
}

/// What a read that missed saw before asking the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    generation: u64,
    /// Whether no write was in flight: only then may the read be remembered.
    quiet: bool,
}

/// A write in flight, from [`KnownVersions::write_started`].
#[derive(Debug)]
#[must_use = "a write must be reported done, or the agent stays forgotten"]
pub(crate) struct Write {
    generation: u64,
    /// No other write was in flight when this one started.
    alone: bool,
}

/// Bound on remembered agents; past it the map is cleared (every agent is read once again).
const MAX_KNOWN: usize = 1_000_000;

impl KnownVersions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters: every operation is one insert or remove.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The agent's version if known: `Some(Some(v))` for an agent of `account_id`,
    /// `Some(None)` for an agent of another account, `None` when the database must be asked
    /// (then with the snapshot to pass to [`Self::remember`]).
    pub(crate) fn get(&self, account_id: &str, agent_id: &str) -> Result<Option<i64>, Snapshot> {
        let inner = self.lock();
        match inner.known.get(agent_id) {
            Some((account, version)) => Ok((account == account_id).then_some(*version)),
            None => Err(Snapshot { generation: inner.generation, quiet: inner.in_flight == 0 }),
        }
    }

    /// Remembers what a read that missed found in the database, if that is safe (see the
    /// module documentation).
    pub(crate) fn remember(
        &self,
        snapshot: Snapshot,
        account_id: &str,
        agent_id: &str,
        version: i64,
    ) {
        let mut inner = self.lock();
        if !snapshot.quiet || inner.generation != snapshot.generation {
            return;
        }
        if inner.known.len() >= MAX_KNOWN {
            inner.known.clear();
        }
        inner.known.insert(agent_id.to_owned(), (account_id.to_owned(), version));
    }

    /// A write of `agent_id` (an edit or a delete) is about to run.
    pub(crate) fn write_started(&self, agent_id: &str) -> Write {
        let mut inner = self.lock();
        inner.known.remove(agent_id);
        let alone = inner.in_flight == 0;
        inner.generation += 1;
        inner.in_flight += 1;
        Write { generation: inner.generation, alone }
    }

    /// The write is over: `committed` is the agent's account and version now stored, `None` if
    /// it failed, wrote nothing or deleted the agent.
    pub(crate) fn write_done(&self, write: Write, agent_id: &str, committed: Option<(&str, i64)>) {
        let mut inner = self.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
        // Only a write that overlapped no other may say what is stored: with another one in
        // flight when it started, or started since, which committed last is not known here (an
        // optimistic edit that lost its race commits after the other, and may finish first).
        if let Some((account_id, version)) = committed
            && write.alone
            && inner.generation == write.generation
        {
            inner.known.insert(agent_id.to_owned(), (account_id.to_owned(), version));
        }
    }
}

/// A write of one agent in flight: reports itself done when dropped — with the version it
/// committed if [`WriteGuard::committed`] was called, else as a write that leaves the agent to
/// the database (failed, refused, nothing written, or deleted).
#[derive(Debug)]
pub(crate) struct WriteGuard<'a> {
    known: Option<&'a KnownVersions>,
    write: Option<Write>,
    agent_id: String,
    committed: Option<(String, i64)>,
}

impl<'a> WriteGuard<'a> {
    /// Starts a write of `agent_id` (nothing to do without `known`: PostgreSQL).
    pub(crate) fn start(known: Option<&'a KnownVersions>, agent_id: &str) -> Self {
        let write = known.map(|known| known.write_started(agent_id));
        Self { known, write, agent_id: agent_id.to_owned(), committed: None }
    }

    /// The write committed: the agent is now at `version` in `account_id`.
    pub(crate) fn committed(&mut self, account_id: &str, version: i64) {
        self.committed = Some((account_id.to_owned(), version));
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if let (Some(known), Some(write)) = (self.known, self.write.take()) {
            let committed =
                self.committed.as_ref().map(|(account, version)| (account.as_str(), *version));
            known.write_done(write, &self.agent_id, committed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_missed_then_remembered_is_served_from_memory() {
        let known = KnownVersions::default();
        let snapshot = known.get("acct_a", "agent_1").unwrap_err();
        known.remember(snapshot, "acct_a", "agent_1", 3);
        assert_eq!(known.get("acct_a", "agent_1"), Ok(Some(3)));
        assert_eq!(known.get("acct_b", "agent_1"), Ok(None), "another account's agent");
    }

    #[test]
    fn a_read_that_overlapped_a_write_is_not_remembered() {
        let known = KnownVersions::default();
        // The read looks, a write starts and commits version 2, the read (which saw 1)
        // comes back.
        let snapshot = known.get("acct_a", "agent_1").unwrap_err();
        let write = known.write_started("agent_1");
        known.remember(snapshot, "acct_a", "agent_1", 1);
        assert!(known.get("acct_a", "agent_1").is_err(), "forgotten while the write runs");
        known.write_done(write, "agent_1", Some(("acct_a", 2)));
        assert_eq!(known.get("acct_a", "agent_1"), Ok(Some(2)));
    }

    #[test]
    fn a_read_that_began_during_a_write_is_not_remembered() {
        let known = KnownVersions::default();
        let write = known.write_started("agent_1");
        // It may read the old or the new version, depending on the commit: neither is kept.
        let snapshot = known.get("acct_a", "agent_1").unwrap_err();
        known.write_done(write, "agent_1", Some(("acct_a", 2)));
        known.remember(snapshot, "acct_a", "agent_1", 1);
        assert_eq!(known.get("acct_a", "agent_1"), Ok(Some(2)));
    }

    #[test]
    fn overlapping_writes_leave_the_agent_to_the_database() {
        // Which of two overlapping edits committed last is not known (an optimistic edit that
        // lost its race commits after the other): neither may say what is stored.
        for second_done_first in [true, false] {
            let known = KnownVersions::default();
            let first = known.write_started("agent_1");
            let second = known.write_started("agent_1");
            if second_done_first {
                known.write_done(second, "agent_1", Some(("acct_a", 2)));
                assert!(known.get("acct_a", "agent_1").is_err(), "the first is still running");
                known.write_done(first, "agent_1", Some(("acct_a", 3)));
            } else {
                known.write_done(first, "agent_1", Some(("acct_a", 2)));
                assert!(known.get("acct_a", "agent_1").is_err(), "the second is still running");
                known.write_done(second, "agent_1", Some(("acct_a", 3)));
            }
            assert!(known.get("acct_a", "agent_1").is_err(), "left to the database");
            // The next quiet read is remembered again.
            let snapshot = known.get("acct_a", "agent_1").unwrap_err();
            known.remember(snapshot, "acct_a", "agent_1", 3);
            assert_eq!(known.get("acct_a", "agent_1"), Ok(Some(3)));
        }
    }

    #[test]
    fn a_delete_or_a_failed_write_forgets_the_agent() {
        let known = KnownVersions::default();
        let snapshot = known.get("acct_a", "agent_1").unwrap_err();
        known.remember(snapshot, "acct_a", "agent_1", 1);
        let write = known.write_started("agent_1");
        known.write_done(write, "agent_1", None);
        assert!(known.get("acct_a", "agent_1").is_err());
        // Other agents stay known through a write of this one.
        let snapshot = known.get("acct_a", "agent_2").unwrap_err();
        known.remember(snapshot, "acct_a", "agent_2", 5);
        let write = known.write_started("agent_1");
        assert_eq!(known.get("acct_a", "agent_2"), Ok(Some(5)));
        known.write_done(write, "agent_1", None);
    }
}
