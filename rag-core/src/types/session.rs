use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Who a conversation belongs to: the authenticated user's stable id (a Cognito `sub`, for
/// example), validated on construction.
///
/// 1 to 256 bytes, no control characters and no leading or trailing whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Owner(String);

impl Owner {
    /// The longest accepted owner id, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() || id.trim() != id {
            return Err(Error::invalid_input(
                "owner",
                "must not be empty or start or end with whitespace",
            ));
        }
        if id.len() > Self::MAX_LEN {
            return Err(Error::invalid_input(
                "owner",
                format!("is {} bytes, the limit is {}", id.len(), Self::MAX_LEN),
            ));
        }
        if id.chars().any(char::is_control) {
            return Err(Error::invalid_input("owner", "holds a control character"));
        }
        Ok(Owner(id))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Owner {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Owner::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Who a stored session belongs to, as [`crate::HistoryStore::owner`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOwner {
    /// The session has no turns: whoever asks first starts it.
    Unclaimed,
    /// Started without an owner ([`SessionId::new`] alone): open to asks without one only.
    Anonymous,
    /// Started by this owner: open to this owner only.
    User(Owner),
}

impl SessionOwner {
    /// Whether `session` (with its owner, or none) may read and extend a session owned so.
    pub fn admits(&self, session: &SessionId) -> bool {
        match (self, session.owner()) {
            (SessionOwner::Unclaimed, _) | (SessionOwner::Anonymous, None) => true,
            (SessionOwner::User(owner), Some(asking)) => owner == asking,
            _ => false,
        }
    }
}

/// The id of a conversation, validated on construction, and the [`Owner`] it belongs to.
///
/// The id is 1 to 256 bytes of ASCII letters, digits and `- _ . : @ = + /` (which covers API
/// Gateway connection ids, UUIDs and ULIDs). Anything else (empty, whitespace, control
/// characters, non-ASCII) is an [`Error::InvalidInput`], so a session id is safe to use as a
/// storage key.
///
/// The owner is the history's namespace: every [`crate::HistoryStore`] records who started a
/// session and refuses ([`Error::Forbidden`]) to load, extend or clear it for anyone else. A
/// session made with [`SessionId::new`] alone has no owner and is open only to asks without
/// one (local tools, a shared-token service). Serialized as the id alone without an owner, as
/// `{"id": ..., "owner": ...}` with one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    id: String,
    owner: Option<Owner>,
}

impl Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.owner {
            None => s.serialize_str(&self.id),
            Some(owner) => {
                use serde::ser::SerializeStruct;
                let mut st = s.serialize_struct("SessionId", 2)?;
                st.serialize_field("id", &self.id)?;
                st.serialize_field("owner", owner)?;
                st.end()
            }
        }
    }
}

impl SessionId {
    /// The longest accepted id, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() {
            return Err(Error::invalid_input("session_id", "must not be empty"));
        }
        if id.len() > Self::MAX_LEN {
            return Err(Error::invalid_input(
                "session_id",
                format!("is {} bytes, the limit is {}", id.len(), Self::MAX_LEN),
            ));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.:@=+/".contains(*c)))
        {
            return Err(Error::invalid_input(
                "session_id",
                format!("contains {bad:?}; allowed are ASCII letters, digits and - _ . : @ = + /"),
            ));
        }
        Ok(SessionId { id, owner: None })
    }

    /// The same session, owned by `owner`.
    pub fn owned_by(mut self, owner: Owner) -> Self {
        self.owner = Some(owner);
        self
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// Who it belongs to (`None`: no one, an anonymous session).
    pub fn owner(&self) -> Option<&Owner> {
        self.owner.as_ref()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

impl FromStr for SessionId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        SessionId::new(s)
    }
}

impl TryFrom<String> for SessionId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        SessionId::new(s)
    }
}

impl TryFrom<&str> for SessionId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        SessionId::new(s)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Id(String),
            Owned { id: String, owner: Owner },
        }
        match Repr::deserialize(d)? {
            Repr::Id(id) => SessionId::new(id).map_err(serde::de::Error::custom),
            Repr::Owned { id, owner } => SessionId::new(id)
                .map(|s| s.owned_by(owner))
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_connection_ids_and_uuids() {
        for ok in [
            "L0SM9cOFvHcCIhw=",
            "0190b5b2-6f3c-7cc4-8e36-1d2b9b0e4c11",
            "user@example.com:chat/1",
        ] {
            assert_eq!(SessionId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_ids_with_invalid_input() {
        for bad in ["", " ", "a b", "line\nbreak", "é", &"x".repeat(257)] {
            match SessionId::new(bad) {
                Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "session_id"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn owners_are_validated_and_round_trip() {
        for bad in ["", " a", "a ", "tab\there", &"x".repeat(257)] {
            assert!(Owner::new(bad).is_err(), "{bad:?}");
        }
        let owned = SessionId::new("s-1")
            .unwrap()
            .owned_by(Owner::new("3f9c-sub").unwrap());
        let json = serde_json::to_string(&owned).unwrap();
        assert_eq!(json, r#"{"id":"s-1","owner":"3f9c-sub"}"#);
        assert_eq!(serde_json::from_str::<SessionId>(&json).unwrap(), owned);
        let plain = SessionId::new("s-1").unwrap();
        assert_eq!(serde_json::to_string(&plain).unwrap(), r#""s-1""#);
        assert_ne!(plain, owned);
        assert_eq!(owned.as_str(), plain.as_str());
    }

    #[test]
    fn ownership_admits_only_its_owner() {
        let alice = SessionId::new("s")
            .unwrap()
            .owned_by(Owner::new("alice").unwrap());
        let bob = SessionId::new("s")
            .unwrap()
            .owned_by(Owner::new("bob").unwrap());
        let anonymous = SessionId::new("s").unwrap();
        let owned = SessionOwner::User(Owner::new("alice").unwrap());
        assert!(owned.admits(&alice));
        assert!(!owned.admits(&bob));
        assert!(!owned.admits(&anonymous));
        assert!(SessionOwner::Anonymous.admits(&anonymous));
        assert!(!SessionOwner::Anonymous.admits(&alice));
        assert!(SessionOwner::Unclaimed.admits(&bob));
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<SessionId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<SessionId>("\"not ok\"").is_err());
    }
}
