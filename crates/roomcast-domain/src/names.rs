//! Usernames and room slugs: the seed's Django `SlugField`, lowercase only,
//! because both appear in URLs (`/ws/chat/{host}/{slug}`) and must compare
//! equal byte for byte.

use std::fmt;

/// The seed's `SlugField(max_length=200)`.
pub const MAX_NAME_CHARS: usize = 200;

/// Why a username or slug was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_NAME_CHARS} characters")]
    TooLong,
    #[error("may contain only lowercase letters, digits, '-' and '_'")]
    BadCharacter,
}

fn check_slug(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_CHARS {
        // All allowed characters are ASCII, so bytes == characters here.
        return Err(NameError::TooLong);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

macro_rules! slug_name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                check_slug(&s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
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

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }
    };
}

slug_name!(
    /// A user's handle: the `{host_username}` of the WebSocket path.
    Username
);
slug_name!(
    /// A room's name within its host: the `{room_slug}` of the WebSocket path.
    RoomSlug
);

impl RoomSlug {
    /// Derives a slug from a display name, as Django's `slugify` does:
    /// transliterated to ASCII ("Café Crème" is `cafe-creme`; Django uses
    /// NFKD and drops what is left, `deunicode` also spells out scripts
    /// without Latin letters), lowercased, anything but letters, digits,
    /// `_`, `-` and spaces removed, runs of `-` and spaces made one `-`,
    /// `-` and `_` trimmed at both ends. `None` when nothing is left.
    ///
    /// Only names of new rooms go through this: a stored slug never changes.
    pub fn slugify(name: &str) -> Option<Self> {
        let ascii = deunicode::deunicode(name).to_ascii_lowercase();
        let mut out = String::with_capacity(ascii.len());
        let mut pending_dash = false;
        for c in ascii.chars() {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                if pending_dash {
                    out.push('-');
                    pending_dash = false;
                }
                out.push(c);
            } else if c == '-' || c.is_ascii_whitespace() {
                pending_dash = true;
            }
            // Everything else is removed, not replaced: "a.b" is "ab".
        }
        // A dash is only written before a kept character, so no trailing one;
        // a leading one can come only from a dash run at the start.
        let trimmed = out.trim_matches(|c| c == '-' || c == '_');
        let cut: String = trimmed.chars().take(MAX_NAME_CHARS).collect();
        Self::parse(cut.trim_end_matches(['-', '_'])).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_slug_alphabet() {
        for ok in ["a", "alice", "user-0", "room_1", "0", &"x".repeat(200)] {
            assert!(Username::parse(ok).is_ok(), "{ok:?}");
            assert!(RoomSlug::parse(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn names_refuse_everything_else() {
        let cases = [
            ("", NameError::Empty),
            (&*"x".repeat(201), NameError::TooLong),
            ("Alice", NameError::BadCharacter),
            ("a b", NameError::BadCharacter),
            ("a/b", NameError::BadCharacter),
            ("é", NameError::BadCharacter),
            ("a.b", NameError::BadCharacter),
        ];
        for (input, want) in cases {
            assert_eq!(Username::parse(input), Err(want.clone()), "{input:?}");
            assert_eq!(RoomSlug::parse(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn slugify_follows_django() {
        let cases = [
            ("General Chat", Some("general-chat")),
            ("  Rust & Tokio!  ", Some("rust-tokio")),
            ("snake_case", Some("snake_case")),
            ("Café Crème", Some("cafe-creme")),
            ("Ünïcödé Straße", Some("unicode-strasse")),
            ("C'est la vie", Some("cest-la-vie")),
            ("v1.2 release", Some("v12-release")),
            ("a - b", Some("a-b")),
            ("-_edge_-", Some("edge")),
            ("!!!", None),
            ("   ", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                RoomSlug::slugify(input)
                    .map(RoomSlug::into_string)
                    .as_deref(),
                want,
                "{input:?}"
            );
        }
    }
}
