//! Typed identifiers: a `MessageId` can never be passed where a `RoomId` is
//! expected, although both are UUIDs underneath.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A string that is not a UUID was given where an id was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id")]
pub struct IdError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id. Version 7 UUIDs sort by creation time, which keeps
            /// database indexes append-mostly. (Deliberately not `Default`:
            /// a default that mints a random id hides a missing value.)
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// Parses the hyphenated form used on the wire.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdError)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&*s).map_err(serde::de::Error::custom)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

uuid_id!(
    /// Identifies a user account.
    UserId
);
uuid_id!(
    /// Identifies a room (independently of its host and slug).
    RoomId
);
uuid_id!(
    /// Identifies a chat message; the seed sends it as `id` and `messageId`.
    MessageId
);
uuid_id!(
    /// Identifies a login session: the family of refresh tokens that
    /// descend from one login by rotation, revoked together (a replayed
    /// token, a logout). Access tokens carry it as their `sid` claim.
    RefreshFamily
);
uuid_id!(
    /// Identifies a service key (`roomcast keys create`), whatever its name.
    ServiceKeyId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_wire_form() {
        let id = MessageId::new();
        assert_eq!(MessageId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn ids_reject_what_is_not_a_uuid() {
        for bad in [
            "",
            "42",
            "not-a-uuid",
            "6f1c0000-0000-0000-0000-00000000000g",
        ] {
            assert_eq!(RoomId::parse(bad), Err(IdError), "{bad:?}");
        }
    }

    #[test]
    fn ids_display_lowercase_hyphenated() {
        let id = UserId::parse("6F1C0000-0000-4000-8000-000000000001").expect("valid uuid");
        assert_eq!(id.to_string(), "6f1c0000-0000-4000-8000-000000000001");
    }
}
