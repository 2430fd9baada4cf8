//! `grpc-timeout` (the gRPC over HTTP/2 spec): an ASCII integer of at most 8 digits and
//! a unit, `H` `M` `S` `m` `u` `n`.

use std::time::Duration;

/// The duration a `grpc-timeout` header value says; `None` if it is malformed.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_and_the_malformed_ones() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("7n", Some(Duration::from_nanos(7))),
            ("0m", Some(Duration::ZERO)),
            ("", None),
            ("m", None),
            ("123456789S", None),
            ("12x", None),
            ("-1S", None),
            ("1.5S", None),
            (" 1S", None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_grpc_timeout(value), *expected, "{value:?}");
        }
    }
}
