//! Identifiers that cross the wire. Validated once at the edge, so the rest of the code can
//! put them in DynamoDB expressions and logs without further checks.

use serde::{Deserialize, Serialize};

/// Longest id the wire contract accepts.
pub(crate) const MAX_ID_LEN: usize = 64;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be 1-{MAX_ID_LEN} characters, got {len}")]
    Length { kind: &'static str, len: usize },
    #[error("{kind} may contain only A-Z a-z 0-9 . _ - (found {found:?})")]
    Character { kind: &'static str, found: char },
}

fn validate(kind: &'static str, raw: &str) -> Result<(), IdError> {
    let len = raw.chars().count();
    if len == 0 || len > MAX_ID_LEN {
        return Err(IdError::Length { kind, len });
    }
    match raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(found) => Err(IdError::Character { kind, found }),
        None => Ok(()),
    }
}

/// The string conversions every id type shares (serde goes through them), given its `parse`
/// and `as_str`: ids are validated on the way in, whichever way they come.
macro_rules! id_string_conversions {
    ($name:ident, $error:ty) => {
        impl TryFrom<String> for $name {
            type Error = $error;
            fn try_from(raw: String) -> Result<Self, $error> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            // `pad` honours width and alignment, so ids line up in operators' tables.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $error;
            fn from_str(raw: &str) -> Result<Self, $error> {
                Self::parse(raw)
            }
        }
    };
}
pub(crate) use id_string_conversions;

macro_rules! wire_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `raw` against the wire contract: 1-64 characters of `[A-Za-z0-9._-]`.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                validate($kind, raw)?;
                Ok(Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        id_string_conversions!($name, IdError);
    };
}

wire_id!(
    /// A replica group: the unit that has one lease and one primary.
    GroupId,
    "group_id"
);
wire_id!(
    /// A replica host (one per availability zone in a group).
    HostId,
    "host_id"
);
wire_id!(
    /// One agent process on a host, random at start. A new incarnation never inherits the
    /// grants recorded for its host (`docs/protocol.md`, Traps: incarnations).
    Incarnation,
    "incarnation"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_contract_alphabet() {
        assert!(GroupId::parse("orders-eu_1.v2").is_ok());
        assert!(HostId::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn refuses_empty_long_and_foreign_characters() {
        assert_eq!(
            GroupId::parse(""),
            Err(IdError::Length {
                kind: "group_id",
                len: 0
            })
        );
        assert!(matches!(
            HostId::parse(&"a".repeat(65)),
            Err(IdError::Length { len: 65, .. })
        ));
        assert!(matches!(
            HostId::parse("a/b"),
            Err(IdError::Character { found: '/', .. })
        ));
        assert!(matches!(
            HostId::parse("é"),
            Err(IdError::Character { found: 'é', .. })
        ));
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<HostId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<HostId>("\"not ok\"").is_err());
    }

    proptest! {
        // Any string is either accepted verbatim or refused; parsing never panics.
        #[test]
        fn parse_accepts_exactly_the_contract(raw in "\\PC{0,80}") {
            let ok = !raw.is_empty() && raw.chars().count() <= 64
                && raw.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
            prop_assert_eq!(GroupId::parse(&raw).is_ok(), ok);
        }
    }
}
