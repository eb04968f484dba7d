//! Agents' versions answered without asking SQLite, for as long as nobody has written to the
//! database (docs/decisions.md#known-versions).
//!
//! An authenticated `GET /v1/agents/{id}` asks the store only for the agent's version (the
//! encoded agent is cached per version by the API). On SQLite that question was half the
//! request's cost: a hand-over to a database thread and back for an indexed read of a few
//! microseconds.
//!
//! Whether anyone — this process, another `nixflex serve` on the same file, a `nixflex`
//! command — has committed since a moment is known without that hand-over: SQLite publishes
//! the state of a WAL database in the header of its shared-memory index (the `-shm` file
//! beside the database), rewritten at every commit ([`WalIndex`]). A version read from the
//! database is kept with the header as it was *before* the read; it is answered again only
//! while the header is unchanged — no commit since, so the database still says the same.
//! Any commit, of anything, forgets every kept version; the next read of each agent asks the
//! database again. Pages of an account's agents list (their ids, versions and the total) are
//! kept the same way.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The WAL index header as published by the last commit. SQLite keeps two copies and writes
/// the second, then the first; a token is taken only when both read equal, so it is never half
/// a commit.
pub(crate) type Token = [u8; HEADER_LEN];

/// Length of one copy of the header: version, unused, change counter, initialised flag, byte
/// order, page size, last frame, page count, last frame's checksum, the WAL's salts and the
/// header's checksum.
const HEADER_LEN: usize = 48;

/// The shared-memory index of a SQLite database in WAL mode, read (never written, never
/// mapped: a truncated file cannot fault a read) to tell whether anything was committed.
#[derive(Debug)]
pub(crate) struct WalIndex {
    file: std::fs::File,
}

impl WalIndex {
    /// Opens `<database>-shm` read-only; `None` where it does not exist (not WAL mode, or not
    /// a unix system).
    pub(crate) fn open(database: &Path) -> Option<Self> {
        let mut path = database.as_os_str().to_owned();
        path.push("-shm");
        let file = std::fs::File::open(path).ok()?;
        let index = Self { file };
        index.token().map(|_| index)
    }

    /// The header as it stands; `None` when it cannot be read whole and consistent (being
    /// rewritten, not initialised yet): the caller then asks the database.
    #[cfg(unix)]
    pub(crate) fn token(&self) -> Option<Token> {
        use std::os::unix::fs::FileExt;
        let mut both = [0u8; 2 * HEADER_LEN];
        self.file.read_exact_at(&mut both, 0).ok()?;
        let (first, second) = both.split_at(HEADER_LEN);
        // Byte 12 is `isInit`: 1 once a connection has built the index.
        if first != second || first[12] != 1 {
            return None;
        }
        first.try_into().ok()
    }

    /// Not a unix system: nothing is known without asking.
    #[cfg(not(unix))]
    pub(crate) fn token(&self) -> Option<Token> {
        None
    }
}

/// Agents' versions kept while the database is unchanged (see the module documentation).
#[derive(Debug)]
pub(crate) struct KnownVersions {
    index: WalIndex,
    inner: Mutex<Inner>,
    /// Answers given from memory (for tests and the benchmark notes).
    hits: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    /// The header everything kept was read under.
    token: Option<Token>,
    /// agent id → its account and version; `None` for an agent that does not exist.
    known: HashMap<String, Option<(String, i64)>>,
    /// A page of an account's agents list → its agents' ids and versions, and the total.
    pages: HashMap<PageKey, Arc<AgentPage>>,
}

/// A page of an account's agents list: the account, the `is_active` filter, limit and offset.
pub(crate) type PageKey = (String, Option<bool>, i64, i64);

/// What a page of the agents list holds: its agents' ids and versions, newest first, and the
/// list's total.
pub(crate) type AgentPage = (Vec<(nixflex_core::ids::AgentId, i64)>, i64);

/// What [`KnownVersions::get`] and [`KnownVersions::page`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup<T> {
    /// The database says this, as of now.
    Known(T),
    /// Ask the database; keep the answer with this header, read before asking (`None`: do
    /// not keep it).
    Ask(Option<Token>),
}

impl Inner {
    /// Forgets everything kept under another header than `token`, the current one.
    fn keep_under(&mut self, token: Token) {
        if self.token != Some(token) {
            self.known.clear();
            self.pages.clear();
            self.token = Some(token);
        }
    }
}

/// Bound on kept agents (ids that do not exist included); past it they are all forgotten.
const MAX_KNOWN: usize = 100_000;

/// Bound on kept pages (up to 100 agents each); past it they are all forgotten.
const MAX_PAGES: usize = 2_000;

impl KnownVersions {
    pub(crate) fn new(index: WalIndex) -> Self {
        Self { index, inner: Mutex::default(), hits: AtomicU64::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every operation under the lock is one insert, lookup or clear: a panic cannot leave
        // it half done.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The version of `agent_id` in `account_id` (`None` when it is not the account's), if
    /// known as of now.
    pub(crate) fn get(&self, account_id: &str, agent_id: &str) -> Lookup<Option<i64>> {
        self.lookup(|inner| {
            inner.known.get(agent_id).map(|found| match found {
                Some((account, version)) if account == account_id => Some(*version),
                _ => None,
            })
        })
    }

    /// Keeps what the database said of `agent_id` (its account and version, `None` if it does
    /// not exist) when asked after the header read `before` — unless something has been
    /// committed since, which may have changed it.
    pub(crate) fn remember(&self, before: Token, agent_id: &str, found: Option<(String, i64)>) {
        self.keep(before, |inner| {
            if inner.known.len() >= MAX_KNOWN {
                inner.known.clear();
            }
            inner.known.insert(agent_id.to_owned(), found);
        });
    }

    /// A page of the agents list, if known as of now.
    pub(crate) fn page(&self, key: &PageKey) -> Lookup<Arc<AgentPage>> {
        self.lookup(|inner| inner.pages.get(key).cloned())
    }

    /// Keeps a page the database gave when asked after the header read `before` (see
    /// [`Self::remember`]).
    pub(crate) fn remember_page(&self, before: Token, key: PageKey, page: Arc<AgentPage>) {
        self.keep(before, |inner| {
            if inner.pages.len() >= MAX_PAGES {
                inner.pages.clear();
            }
            inner.pages.insert(key, page);
        });
    }

    /// What `find` finds among what is kept, if it was kept under the header as it is now.
    fn lookup<T>(&self, find: impl FnOnce(&Inner) -> Option<T>) -> Lookup<T> {
        let Some(now) = self.index.token() else { return Lookup::Ask(None) };
        let inner = self.lock();
        if inner.token == Some(now)
            && let Some(found) = find(&inner)
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Known(found);
        }
        Lookup::Ask(Some(now))
    }

    /// Runs `keep` on what is kept under `before`, if nothing was committed since it was read.
    fn keep(&self, before: Token, keep: impl FnOnce(&mut Inner)) {
        if self.index.token() != Some(before) {
            return;
        }
        let mut inner = self.lock();
        inner.keep_under(before);
        keep(&mut inner);
    }

    /// Answers given from memory so far.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}
