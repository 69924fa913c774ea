//! [`InMemoryHistory`]: the embedded, bounded [`HistoryStore`].

mod builder;
mod session;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rag_core::{Error, HistoryStore, Owner, Result, SessionId, SessionOwner, Turn};

pub use builder::InMemoryHistoryBuilder;
use session::SessionTurns;

/// Where the store reads the time; replaced in unit tests.
type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// How many independently locked parts the session map is split into.
const SHARDS: usize = 64;

/// A [`HistoryStore`] in this process's memory: per session, bounded, with optional expiry.
///
/// - Each session keeps at most `max_turns_per_session` turns; the oldest (by
///   [`rag_core::TurnId`]) are evicted first.
/// - At most `max_sessions` sessions are kept; a new session beyond that evicts the least
///   recently used one (`load` and `append` count as use).
/// - With a TTL, a turn is never returned once it was received `ttl` ago or longer; expired
///   turns are removed lazily when their session is used, or by
///   [`InMemoryHistory::purge_expired`]. The TTL runs from when this store received the turn
///   (a monotonic clock), not from [`Turn::created_at`], which the caller sets.
///
/// Sessions live in independently locked shards. No lock is held across an await (there is
/// none inside), and a call locks one shard for a few microseconds, so many sessions can be
/// served from many threads at once. Appends are idempotent by [`Turn::id`] and turns stay in
/// id order even when appends arrive out of order.
///
/// Everything is lost when the process ends: services that run on several machines need a
/// shared store instead.
pub struct InMemoryHistory {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    max_turns: usize,
    max_sessions: usize,
    ttl: Option<Duration>,
    sessions: AtomicUsize,
    tick: AtomicU64,
    evicting: Mutex<()>,
    clock: Clock,
}

/// One independently locked part of the session map, with its use order.
#[derive(Default)]
struct Shard {
    /// By session id (the owner is in the entry, not the key: one id, one conversation).
    sessions: HashMap<String, Entry>,
    /// Sessions by the tick of their last use: the first is the least recently used.
    by_use: BTreeMap<u64, String>,
}

struct Entry {
    turns: SessionTurns,
    last_used: u64,
    /// Who started it (`None`: anonymous).
    owner: Option<Owner>,
}

impl Entry {
    fn ownership(&self) -> SessionOwner {
        match &self.owner {
            Some(owner) => SessionOwner::User(owner.clone()),
            None => SessionOwner::Anonymous,
        }
    }

    /// Refuses `session` unless its owner started this entry.
    fn admit(&self, session: &SessionId) -> Result<()> {
        if self.owner.as_ref() == session.owner() {
            Ok(())
        } else {
            Err(Error::forbidden(session))
        }
    }
}

impl InMemoryHistory {
    /// Turns kept per session by default.
    pub const DEFAULT_MAX_TURNS_PER_SESSION: usize = 100;
    /// Sessions kept by default.
    pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

    /// A store with the default limits: 100 turns per session, 100,000 sessions, no TTL.
    pub fn new() -> Self {
        InMemoryHistoryBuilder::default()
            .build()
            .expect("the default limits are valid")
    }

    /// A builder to set the limits.
    pub fn builder() -> InMemoryHistoryBuilder {
        InMemoryHistoryBuilder::default()
    }

    fn from_parts(
        max_turns: usize,
        max_sessions: usize,
        ttl: Option<Duration>,
        clock: Clock,
    ) -> Self {
        InMemoryHistory {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            max_turns,
            max_sessions,
            ttl,
            sessions: AtomicUsize::new(0),
            tick: AtomicU64::new(0),
            evicting: Mutex::new(()),
            clock,
        }
    }

    /// The most turns kept per session.
    pub fn max_turns_per_session(&self) -> usize {
        self.max_turns
    }

    /// The most sessions kept.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// How long a turn is kept, if limited.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// How many sessions are held now (sessions whose turns all expired count until they
    /// are cleaned up).
    pub fn session_count(&self) -> usize {
        self.sessions.load(Ordering::Acquire)
    }

    /// Removes every expired turn and every session left empty, in all shards. Expired turns
    /// are never returned anyway; call this from a periodic task to free their memory sooner.
    pub fn purge_expired(&self) {
        let Some(ttl) = self.ttl else { return };
        for shard in self.shards.iter() {
            let now = (self.clock)();
            let mut shard = lock(shard);
            let Shard { sessions, by_use } = &mut *shard;
            sessions.retain(|_, entry| {
                entry.turns.expire(now, Some(ttl));
                let keep = !entry.turns.is_empty();
                if !keep {
                    by_use.remove(&entry.last_used);
                    self.sessions.fetch_sub(1, Ordering::AcqRel);
                }
                keep
            });
        }
    }

    fn shard(&self, session: &SessionId) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(session.as_str()) % SHARDS as u64) as usize;
        lock(&self.shards[i])
    }

    fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }

    /// Evicts least recently used sessions until at most `max_sessions` are held.
    ///
    /// Runs only after a new session was created. One evictor at a time (so two never evict
    /// for the same excess); it locks one shard at a time, never two, so it cannot deadlock
    /// with the calls that lock a single shard.
    fn evict_over_limit(&self) {
        if self.session_count() <= self.max_sessions {
            return;
        }
        let _one_evictor = lock(&self.evicting);
        while self.session_count() > self.max_sessions {
            let oldest = self
                .shards
                .iter()
                .enumerate()
                .filter_map(|(i, shard)| lock(shard).by_use.first_key_value().map(|(t, _)| (*t, i)))
                .min();
            let Some((tick, i)) = oldest else { return };
            let mut shard = lock(&self.shards[i]);
            // Used again since the scan: its tick changed, so look again.
            if let Some(id) = shard.by_use.remove(&tick) {
                shard.sessions.remove(&id);
                self.sessions.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl Shard {
    /// Marks `session` (which must be present) as used at `tick`.
    fn touch(&mut self, session: &SessionId, tick: u64) {
        let Some(entry) = self.sessions.get_mut(session.as_str()) else {
            return;
        };
        let id = self
            .by_use
            .remove(&entry.last_used)
            .unwrap_or_else(|| session.as_str().to_owned());
        entry.last_used = tick;
        self.by_use.insert(tick, id);
    }

    /// Removes `session`; returns whether it was present.
    fn remove(&mut self, session: &SessionId) -> bool {
        match self.sessions.remove(session.as_str()) {
            Some(entry) => {
                self.by_use.remove(&entry.last_used);
                true
            }
            None => false,
        }
    }
}

/// Locks `m`, ignoring poisoning: every update leaves a shard consistent before it can panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for InMemoryHistory {
    fn default() -> Self {
        InMemoryHistory::new()
    }
}

impl fmt::Debug for InMemoryHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryHistory")
            .field("max_turns_per_session", &self.max_turns)
            .field("max_sessions", &self.max_sessions)
            .field("ttl", &self.ttl)
            .field("sessions", &self.session_count())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl HistoryStore for InMemoryHistory {
    async fn load(&self, session: &SessionId, max_turns: usize) -> Result<Vec<Turn>> {
        let now = (self.clock)();
        let tick = self.next_tick();
        let mut shard = self.shard(session);
        let Some(entry) = shard.sessions.get_mut(session.as_str()) else {
            return Ok(Vec::new());
        };
        entry.turns.expire(now, self.ttl);
        if entry.turns.is_empty() {
            shard.remove(session);
            self.sessions.fetch_sub(1, Ordering::AcqRel);
            return Ok(Vec::new());
        }
        entry.admit(session)?;
        let turns = entry.turns.newest(max_turns);
        shard.touch(session, tick);
        Ok(turns)
    }

    async fn append(&self, session: &SessionId, turn: &Turn) -> Result<()> {
        let now = (self.clock)();
        let tick = self.next_tick();
        let created = {
            let mut shard = self.shard(session);
            let created = match shard.sessions.get_mut(session.as_str()) {
                Some(entry) => {
                    entry.turns.expire(now, self.ttl);
                    // Every turn expired: the session is unclaimed, and this append claims it.
                    if entry.turns.is_empty() {
                        entry.owner = session.owner().cloned();
                    }
                    entry.admit(session)?;
                    entry.turns.insert(turn, now, self.max_turns);
                    false
                }
                None => {
                    let mut turns = SessionTurns::default();
                    turns.insert(turn, now, self.max_turns);
                    shard.sessions.insert(
                        session.as_str().to_owned(),
                        Entry {
                            turns,
                            last_used: tick,
                            owner: session.owner().cloned(),
                        },
                    );
                    shard.by_use.insert(tick, session.as_str().to_owned());
                    self.sessions.fetch_add(1, Ordering::AcqRel);
                    true
                }
            };
            if !created {
                shard.touch(session, tick);
            }
            created
        };
        if created {
            self.evict_over_limit();
        }
        Ok(())
    }

    async fn clear(&self, session: &SessionId) -> Result<()> {
        let mut shard = self.shard(session);
        if let Some(entry) = shard.sessions.get(session.as_str()) {
            entry.admit(session)?;
        }
        if shard.remove(session) {
            self.sessions.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(())
    }

    async fn owner(&self, session: &SessionId) -> Result<SessionOwner> {
        let now = (self.clock)();
        let mut shard = self.shard(session);
        let Some(entry) = shard.sessions.get_mut(session.as_str()) else {
            return Ok(SessionOwner::Unclaimed);
        };
        // A session whose turns all expired is gone: unclaimed.
        entry.turns.expire(now, self.ttl);
        if entry.turns.is_empty() {
            shard.remove(session);
            self.sessions.fetch_sub(1, Ordering::AcqRel);
            return Ok(SessionOwner::Unclaimed);
        }
        Ok(entry.ownership())
    }
}

#[cfg(test)]
mod tests;
