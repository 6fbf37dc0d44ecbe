//! Go duration strings (`30s`, `1m30s`, `500ms`), as OpenTelemetry Collector and Jaeger configurations write them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Go duration string (`30s`, `1m30s`, `500ms`) as in OpenTelemetry Collector configs; nanoseconds inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GoDuration(pub u64);

impl GoDuration {
    /// The duration in milliseconds.
    pub fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }
}

/// The shortest exact Go form: `72h`, `30s`, `500ms` or `1500ns` (what the operator passes as flags, too).
impl std::fmt::Display for GoDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = self.0;
        const HOUR: u64 = 3_600_000_000_000;
        if ns == 0 {
            f.write_str("0s")
        } else if ns.is_multiple_of(HOUR) {
            write!(f, "{}h", ns / HOUR)
        } else if ns.is_multiple_of(1_000_000_000) {
            write!(f, "{}s", ns / 1_000_000_000)
        } else if ns.is_multiple_of(1_000_000) {
            write!(f, "{}ms", ns / 1_000_000)
        } else {
            write!(f, "{ns}ns")
        }
    }
}

impl Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_go_duration(&s).map(GoDuration).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GoDuration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A Go duration: a number with a unit (ns, us, ms, s, m, h), e.g. \"30s\" or \"1m30s\".",
            "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$|^0$"
        })
    }
}

/// Parses a Go duration string (`1.5s`, `100ms`, `250us`, `2h45m`) into nanoseconds.
///
/// # Errors
/// A message naming the bad input.
pub fn parse_go_duration(s: &str) -> Result<u64, String> {
    let err = || format!("cannot parse duration {s:?}: use a number with a unit (ns, us, µs, ms, s, m, h)");
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total += value * unit;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(err());
    }
    Ok(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("100ms"), Ok(100_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("250us"), Ok(250_000));
        assert_eq!(parse_go_duration("250µs"), Ok(250_000));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("abc").is_err());
        assert!(parse_go_duration("5 parsecs").is_err());
    }
}
