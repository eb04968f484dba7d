//! Agents as encoded for the API, per (agent id, version) (docs/decisions.md#api-line-rate), so
//! reading an agent that did not change decodes and encodes nothing.
//!
//! Every edit bumps an agent's version in the database, and handlers always read the current
//! version there first (`AgentRepo::agent_version`, `AgentRepo::list_agent_versions`, which
//! also check the account), so an entry is only ever served for the exact version it encodes —
//! on any node, with no invalidation to get wrong. This module must not decide who may read an
//! agent: callers look it up only after the database said the agent is the caller's.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

/// The most encoded JSON kept; past it the cache starts over.
const MAX_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Default)]
struct Entries {
    /// Agent id → (version, the agent object's JSON).
    by_id: HashMap<String, (i64, Bytes)>,
    /// Sum of the kept JSON lengths.
    bytes: usize,
}

/// This node's encoded agents. Shared behind the application state's `Arc`.
#[derive(Debug, Default)]
pub struct AgentJsonCache {
    entries: Mutex<Entries>,
}

impl AgentJsonCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        match self.entries.lock() {
            Ok(entries) => entries,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The agent's JSON at exactly `version`.
    pub fn get(&self, agent_id: &str, version: i64) -> Option<Bytes> {
        let entries = self.entries();
        let (cached_version, json) = entries.by_id.get(agent_id)?;
        (*cached_version == version).then(|| json.clone())
    }

    /// Keeps the agent's JSON at `version` unless a newer version is kept already.
    pub fn put(&self, agent_id: &str, version: i64, json: Bytes) {
        let mut entries = self.entries();
        if entries.by_id.get(agent_id).is_some_and(|(kept, _)| *kept > version) {
            return;
        }
        if entries.bytes + json.len() > MAX_BYTES {
            entries.by_id.clear();
            entries.bytes = 0;
        }
        entries.bytes += json.len();
        if let Some((_, old)) = entries.by_id.insert(agent_id.to_owned(), (version, json)) {
            entries.bytes -= old.len();
        }
    }

    /// Forgets a deleted agent.
    pub fn forget(&self, agent_id: &str) {
        let mut entries = self.entries();
        if let Some((_, old)) = entries.by_id.remove(agent_id) {
            entries.bytes -= old.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_version_is_served() {
        let cache = AgentJsonCache::new();
        cache.put("agent_1", 2, Bytes::from_static(b"{\"v\":2}"));
        assert_eq!(cache.get("agent_1", 2).as_deref(), Some(&b"{\"v\":2}"[..]));
        assert!(cache.get("agent_1", 3).is_none());
        assert!(cache.get("agent_1", 1).is_none());
        // An older encoding arriving late does not replace a newer one.
        cache.put("agent_1", 1, Bytes::from_static(b"{\"v\":1}"));
        assert!(cache.get("agent_1", 2).is_some());
        cache.forget("agent_1");
        assert!(cache.get("agent_1", 2).is_none());
        assert_eq!(cache.entries().bytes, 0);
    }
}
