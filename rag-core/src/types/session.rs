use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The id of a conversation, validated on construction.
///
/// 1 to 256 bytes of ASCII letters, digits and `- _ . : @ = + /` (which covers API Gateway
/// connection ids, UUIDs and ULIDs). Anything else (empty, whitespace, control characters,
/// non-ASCII) is an [`Error::InvalidInput`], so a session id is safe to use as a storage key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

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
        Ok(SessionId(id))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
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
        let s = String::deserialize(d)?;
        SessionId::new(s).map_err(serde::de::Error::custom)
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
    fn deserialize_validates() {
        assert!(serde_json::from_str::<SessionId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<SessionId>("\"not ok\"").is_err());
    }
}
