//! Instants as the server's clock sees them, at microsecond precision.
//!
//! Microseconds because that is what PostgreSQL keeps: a timestamp read back
//! from storage must equal the one that was broadcast.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// A UTC instant truncated to microseconds, written like Python's
/// `datetime.isoformat()` (`2024-05-01T12:34:56.789012+00:00`), which is
/// what the seed's `Message.serialize()` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    pub fn from_datetime(t: OffsetDateTime) -> Self {
        let t = t.to_offset(UtcOffset::UTC);
        let micros = t.microsecond();
        // `replace_microsecond` only fails for values >= 1_000_000.
        Self(t.replace_microsecond(micros).unwrap_or(t))
    }

    /// Microseconds since the Unix epoch: the storage representation.
    pub fn unix_micros(&self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000) as i64
    }

    pub fn from_unix_micros(micros: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .ok()
            .map(Self)
    }

    pub fn as_datetime(&self) -> OffsetDateTime {
        self.0
    }

    /// Parses any RFC 3339 instant (what other servers and clients send).
    pub fn parse(s: &str) -> Option<Self> {
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()
            .map(Self::from_datetime)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
        );
        match self.0.format(&format) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_like_python_isoformat() {
        let t = Timestamp::parse("2024-05-01T12:34:56.789012345Z").expect("valid");
        assert_eq!(t.to_string(), "2024-05-01T12:34:56.789012+00:00");
        let whole = Timestamp::parse("2024-05-01T14:00:00+02:00").expect("valid");
        assert_eq!(whole.to_string(), "2024-05-01T12:00:00.000000+00:00");
    }

    #[test]
    fn timestamps_round_trip_through_micros_and_text() {
        let t = Timestamp::now();
        assert_eq!(Timestamp::from_unix_micros(t.unix_micros()), Some(t));
        assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
    }
}
