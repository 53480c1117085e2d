//! Identifiers of the coordinator's wire contract: operation ids (ULIDs) and AWS regions.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IrcIdError {
    #[error("op_id must be a ULID (26 characters of Crockford base32), got {0:?}")]
    OpId(String),
    #[error("region must look like us-east-1 (lowercase words and a number, at most 32 characters), got {0:?}")]
    Region(String),
}

/// An operation's id: a ULID, so ids sort by submit time and need no coordination to be unique.
/// Kept in canonical (uppercase) form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OpId(String);

impl OpId {
    pub fn new() -> Self {
        Self(ulid::Ulid::new().to_string())
    }

    pub fn parse(raw: &str) -> Result<Self, IrcIdError> {
        if raw.len() != 26 {
            return Err(IrcIdError::OpId(raw.to_owned()));
        }
        ulid::Ulid::from_string(raw)
            .map(|u| Self(u.to_string()))
            .map_err(|_| IrcIdError::OpId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for OpId {
    fn default() -> Self {
        Self::new()
    }
}

/// An AWS region name such as `us-east-1` or `us-gov-west-1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

impl Region {
    pub fn parse(raw: &str) -> Result<Self, IrcIdError> {
        let parts: Vec<&str> = raw.split('-').collect();
        let words_ok = parts.len() >= 3
            && parts[..parts.len() - 1]
                .iter()
                .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()));
        let number_ok = parts
            .last()
            .is_some_and(|n| (1..=2).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()));
        if raw.len() > 32 || !words_ok || !number_ok {
            return Err(IrcIdError::Region(raw.to_owned()));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

crate::ids::id_string_conversions!(OpId, IrcIdError);
crate::ids::id_string_conversions!(Region, IrcIdError);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn op_ids_are_canonical_ulids() {
        let id = OpId::new();
        assert_eq!(OpId::parse(id.as_str()), Ok(id.clone()));
        let lower = id.as_str().to_ascii_lowercase();
        assert_eq!(OpId::parse(&lower), Ok(id));
        assert!(OpId::parse("not-a-ulid").is_err());
        assert!(
            OpId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAVX").is_err(),
            "27 characters"
        );
        assert!(OpId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").is_ok());
        assert!(
            OpId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAU").is_err(),
            "U is not Crockford"
        );
    }

    #[test]
    fn regions_look_like_aws_regions() {
        for ok in ["us-east-1", "eu-west-1", "us-gov-west-1", "ap-southeast-10"] {
            assert!(Region::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "us-east",
            "US-EAST-1",
            "us-east-123",
            "us--1",
            "us-east-1 ",
            "x/y-z-1",
        ] {
            assert!(Region::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(raw in "\\PC{0,40}") {
            let _ = OpId::parse(&raw);
            let _ = Region::parse(&raw);
        }
    }
}
