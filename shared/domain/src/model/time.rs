//! Time formatting shared by records and logs.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix seconds as RFC 3339 UTC (`2027-01-31T12:00:00Z`). Out-of-range values
/// are clamped to the representable range rather than failing.
pub fn rfc3339(unix_seconds: i64) -> String {
    let clamped = unix_seconds.clamp(-377_705_116_800, 253_402_300_799);
    OffsetDateTime::from_unix_timestamp(clamped)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses RFC 3339 into Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339(&rfc3339(1_800_000_000)), Some(1_800_000_000));
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(parse_rfc3339("nope"), None);
    }
}
