//! The turns of one session: sorted by id, bounded, with optional expiry.
//!
//! Pure data and logic with the current time passed in, so the rules are tested without a
//! clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rag_core::Turn;

/// A turn and when this store received it.
#[derive(Debug)]
struct Stored {
    turn: Turn,
    stored_at: Instant,
}

/// The turns of one session, sorted by [`rag_core::TurnId`], at most `max_turns` of them.
#[derive(Debug, Default)]
pub(crate) struct SessionTurns {
    turns: VecDeque<Stored>,
}

impl SessionTurns {
    /// Inserts `turn` at its place by id unless its id is stored already; then drops the
    /// oldest turns beyond `max_turns`. Returns whether the turn was inserted (a retried
    /// append of a turn that was already evicted as the oldest is dropped again at once).
    pub(crate) fn insert(&mut self, turn: &Turn, now: Instant, max_turns: usize) -> bool {
        // Appends nearly always carry the newest id: check the end before searching.
        let at = match self.turns.back() {
            None => 0,
            Some(last) if last.turn.id < turn.id => self.turns.len(),
            Some(_) => match self.turns.binary_search_by_key(&turn.id, |s| s.turn.id) {
                Ok(_) => return false,
                Err(at) => at,
            },
        };
        if at == 0 && self.turns.len() >= max_turns {
            // It would be the oldest turn of a full session: evicted at once.
            return false;
        }
        self.turns.insert(
            at,
            Stored {
                turn: turn.clone(),
                stored_at: now,
            },
        );
        while self.turns.len() > max_turns {
            self.turns.pop_front();
        }
        true
    }

    /// Drops turns received `ttl` or longer before `now`.
    pub(crate) fn expire(&mut self, now: Instant, ttl: Option<Duration>) {
        if let Some(ttl) = ttl {
            self.turns
                .retain(|s| now.saturating_duration_since(s.stored_at) < ttl);
        }
    }

    /// The newest `n` turns, oldest first.
    pub(crate) fn newest(&self, n: usize) -> Vec<Turn> {
        let skip = self.turns.len().saturating_sub(n);
        self.turns
            .iter()
            .skip(skip)
            .map(|s| s.turn.clone())
            .collect()
    }

    /// Whether no turn is stored.
    pub(crate) fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// How many turns are stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.turns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(turns: &[Turn]) -> Vec<rag_core::TurnId> {
        turns.iter().map(|t| t.id).collect()
    }

    fn make(n: usize) -> Vec<Turn> {
        (0..n)
            .map(|i| Turn::new(format!("q{i}"), format!("a{i}")))
            .collect()
    }

    #[test]
    fn keeps_id_order_for_out_of_order_inserts() {
        let all = make(5);
        let now = Instant::now();
        let mut s = SessionTurns::default();
        for i in [3, 0, 4, 1, 2] {
            assert!(s.insert(&all[i], now, 10));
        }
        assert_eq!(ids(&s.newest(10)), ids(&all));
        assert_eq!(ids(&s.newest(2)), ids(&all[3..]));
        assert!(s.newest(0).is_empty());
    }

    #[test]
    fn a_stored_id_is_neither_duplicated_nor_overwritten() {
        let turn = Turn::new("q", "a");
        let mut changed = turn.clone();
        changed.answer = "other".into();
        let now = Instant::now();
        let mut s = SessionTurns::default();
        assert!(s.insert(&turn, now, 10));
        assert!(!s.insert(&turn, now, 10));
        assert!(!s.insert(&changed, now, 10));
        assert_eq!(s.newest(10), vec![turn]);
    }

    #[test]
    fn the_oldest_turns_beyond_the_limit_are_evicted() {
        let all = make(6);
        let now = Instant::now();
        let mut s = SessionTurns::default();
        for t in &all {
            s.insert(t, now, 4);
        }
        assert_eq!(s.len(), 4);
        assert_eq!(ids(&s.newest(10)), ids(&all[2..]));
        // A retried append of an evicted (oldest) turn is not resurrected.
        assert!(!s.insert(&all[0], now, 4));
        assert_eq!(ids(&s.newest(10)), ids(&all[2..]));
    }

    #[test]
    fn turns_expire_by_the_time_they_were_received() {
        let all = make(3);
        let t0 = Instant::now();
        let ttl = Some(Duration::from_secs(10));
        let mut s = SessionTurns::default();
        s.insert(&all[0], t0, 10);
        s.insert(&all[1], t0 + Duration::from_secs(5), 10);
        s.insert(&all[2], t0 + Duration::from_secs(8), 10);
        s.expire(t0 + Duration::from_secs(9), ttl);
        assert_eq!(s.len(), 3, "nothing is 10 s old yet");
        s.expire(t0 + Duration::from_secs(10), ttl);
        assert_eq!(ids(&s.newest(10)), ids(&all[1..]), "the first turn expired");
        s.expire(t0 + Duration::from_secs(60), ttl);
        assert!(s.is_empty());
        s.expire(t0 + Duration::from_secs(60), None);
    }
}
