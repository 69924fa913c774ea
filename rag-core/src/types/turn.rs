use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The unique, time-ordered id of a [`Turn`].
///
/// A UUID version 7: its text form sorts in creation order, and ids made in one process are
/// strictly increasing, so a store that orders turns by id keeps them in the order they were
/// asked even when answers finish out of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TurnId(uuid::Uuid);

impl TurnId {
    /// A new id, greater than every id made before it in this process.
    pub fn new() -> Self {
        TurnId(uuid::Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }

    /// This id if it sorts after `other`; else an id just after `other` that keeps this id's
    /// random bits: `other`'s time stamp (one millisecond later when the random bits alone do
    /// not sort after it). A turn asked after another was saved, on a host whose clock runs
    /// behind, still sorts after it, and two asks that both move after the same turn still get
    /// different ids (a store that takes an id it holds as already appended would otherwise
    /// drop the second turn).
    pub fn after(self, other: TurnId) -> TurnId {
        if self > other {
            return self;
        }
        // UUIDv7 layout: 48 bits of milliseconds, then version, random bits and variant.
        const RANDOM: u128 = (1u128 << 80) - 1;
        let (mine, theirs) = (self.0.as_u128(), other.0.as_u128());
        let millis = theirs >> 80;
        let same_millis = (millis << 80) | (mine & RANDOM);
        let next = if same_millis > theirs {
            same_millis
        } else {
            (((millis + 1) & ((1u128 << 48) - 1)) << 80) | (mine & RANDOM)
        };
        TurnId(uuid::Uuid::from_u128(next))
    }
}

impl Default for TurnId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TurnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for TurnId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        uuid::Uuid::parse_str(s)
            .map(TurnId)
            .map_err(|e| Error::invalid_input("turn_id", e.to_string()))
    }
}

impl From<uuid::Uuid> for TurnId {
    fn from(id: uuid::Uuid) -> Self {
        TurnId(id)
    }
}

/// One question and its complete answer in a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Unique and time-ordered; a store appends a given id at most once.
    pub id: TurnId,
    /// The user's question.
    pub question: String,
    /// The model's complete answer.
    pub answer: String,
    /// When the question was asked.
    pub created_at: SystemTime,
}

impl Turn {
    /// A turn with a new id, stamped now.
    pub fn new(question: impl Into<String>, answer: impl Into<String>) -> Self {
        Turn {
            id: TurnId::new(),
            question: question.into(),
            answer: answer.into(),
            created_at: SystemTime::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_strictly_increase_in_text_and_value() {
        let ids: Vec<TurnId> = (0..10_000).map(|_| TurnId::new()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].to_string() < pair[1].to_string());
        }
    }

    #[test]
    fn after_sorts_after_in_value_and_text() {
        let early = TurnId::new();
        let late = TurnId::new();
        assert_eq!(late.after(early), late);
        let next = early.after(late);
        assert!(next > late && next.to_string() > late.to_string());
        assert_eq!(next.as_uuid().get_version_num(), 7);
        assert_eq!(next.as_uuid().get_variant(), uuid::Variant::RFC4122);
        // The random bits are kept: two ids moved after the same one stay different.
        let (a, b) = (TurnId::new(), TurnId::new());
        let future = TurnId(uuid::Uuid::from_u128(
            ((late.0.as_u128() >> 80) + 3_600_000) << 80 | (late.0.as_u128() & ((1 << 80) - 1)),
        ));
        let (a, b) = (a.after(future), b.after(future));
        assert!(a > future && b > future && a != b);
        assert!(a.to_string() > future.to_string());
        // An id whose random bits sort below: a millisecond later.
        let low = TurnId(uuid::Uuid::from_u128(
            (1u128 << 80) | (0x7 << 76) | (0b10 << 62),
        ));
        let high = TurnId(uuid::Uuid::from_u128(
            (1u128 << 80) | (0x7 << 76) | (0xFFF << 64) | (0b10 << 62) | ((1u128 << 62) - 1),
        ));
        let next = low.after(high);
        assert!(next > high);
        assert_eq!(next.as_uuid().as_u128() >> 80, 2);
    }

    #[test]
    fn id_round_trips_through_text() {
        let id = TurnId::new();
        assert_eq!(id.to_string().parse::<TurnId>().unwrap(), id);
        assert!("nope".parse::<TurnId>().is_err());
    }
}
