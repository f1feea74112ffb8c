//! What a service key may do: its scopes.
//!
//! A service key (`roomcast keys create NAME --scope publish`) is a
//! credential for a program, not a person: it acts as its own bot user and
//! only through the endpoints its scopes name. Scopes are written as
//! OAuth writes them, lowercase words separated by spaces, in the database
//! as on the command line.

use std::fmt;

/// One thing a service key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Post, edit and delete messages in any room, as the key's bot user.
    Publish,
    /// Read the message history of any room.
    Read,
}

/// A scope name that is not one of [`Scope`]'s, or no scope at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope {0:?}; scopes are `publish` and `read`")]
    Unknown(String),
    #[error("a service key needs at least one scope")]
    Empty,
}

impl Scope {
    /// Every scope, in the order they are written.
    pub const ALL: [Scope; 2] = [Scope::Publish, Scope::Read];

    /// Parses a scope's name.
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| ScopeError::Unknown(s.to_owned()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Read => "read",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key's scopes: at least one, each once, in [`Scope::ALL`]'s order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// The given scopes, sorted and without repeats; `Empty` for none.
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Result<Self, ScopeError> {
        let mut scopes: Vec<Scope> = scopes.into_iter().collect();
        scopes.sort_unstable();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(Self(scopes))
    }

    /// Parses scope names separated by spaces (as stored).
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        Self::new(
            s.split_whitespace()
                .map(Scope::parse)
                .collect::<Result<Vec<_>, _>>()?,
        )
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for Scopes {
    /// The names separated by spaces: what [`Scopes::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_sorted_and_once() {
        let scopes = Scopes::new([Scope::Read, Scope::Publish, Scope::Read]).expect("not empty");
        assert_eq!(scopes.to_string(), "publish read");
        assert_eq!(Scopes::parse("publish read"), Ok(scopes.clone()));
        assert_eq!(Scopes::parse(" read  publish "), Ok(scopes));
        assert!(
            Scopes::parse("publish")
                .expect("one")
                .contains(Scope::Publish)
        );
        assert!(!Scopes::parse("publish").expect("one").contains(Scope::Read));
    }

    #[test]
    fn unknown_or_missing_scopes_do_not_parse() {
        assert_eq!(Scopes::parse(""), Err(ScopeError::Empty));
        assert_eq!(Scopes::parse("   "), Err(ScopeError::Empty));
        for bad in ["admin", "Publish", "publish,read", "publish admin"] {
            assert!(
                matches!(Scopes::parse(bad), Err(ScopeError::Unknown(_))),
                "{bad:?}"
            );
        }
    }
}
