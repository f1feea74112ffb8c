//! Who may join a room: its host decides.

/// A room's visibility. `Private` is the default: only the host adds
/// participants, and the room does not exist for anyone else (404). A
/// `Public` room anyone may join, except users its host removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Visibility {
    Public,
    #[default]
    Private,
}

/// A visibility that is neither `public` nor `private`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("visibility is `public` or `private`")]
pub struct VisibilityError;

impl Visibility {
    /// Parses the wire and database spelling.
    pub fn parse(s: &str) -> Result<Self, VisibilityError> {
        match s {
            "public" => Ok(Visibility::Public),
            "private" => Ok(Visibility::Private),
            _ => Err(VisibilityError),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibilities_round_trip_and_nothing_else_parses() {
        for v in [Visibility::Public, Visibility::Private] {
            assert_eq!(Visibility::parse(v.as_str()), Ok(v));
        }
        for bad in ["", "Public", "secret", " private"] {
            assert_eq!(Visibility::parse(bad), Err(VisibilityError), "{bad:?}");
        }
        assert_eq!(Visibility::default(), Visibility::Private);
    }
}
