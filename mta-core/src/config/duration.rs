//! Durations as the config file writes them: a positive whole number and a unit, `30s`,
//! `5m`, `1h`, `5d`. Nothing else is accepted, so `5` (which unit?) and `1.5h` are errors
//! rather than guesses.

use std::time::Duration;

/// Seconds per unit, largest first (the order [`format()`] tries them in).
const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// Parses `<digits><unit>`.
///
/// # Errors
/// The operator-facing message when `text` is not such a duration, is zero, or overflows.
pub(super) fn parse(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration: write a positive whole number and a unit s, m, h or d, \
             such as \"30s\" or \"5m\""
        )
    };
    let mut chars = text.chars();
    let unit = chars.next_back().ok_or_else(bad)?;
    let number = chars.as_str();
    let (_, per_unit) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(bad)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let count: u64 = number.parse().map_err(|_| bad())?;
    match count.checked_mul(*per_unit) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(bad()),
    }
}

/// Writes a duration in the largest unit that divides it exactly. Sub-second parts are rounded
/// up to the next whole second, since the file cannot express them.
pub(super) fn format(duration: Duration) -> String {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    let (unit, per_unit) = UNITS
        .iter()
        .find(|(_, n)| secs > 0 && secs.is_multiple_of(*n))
        .unwrap_or(&('s', 1));
    format!("{}{unit}", secs / per_unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("30s", 30),
            ("5m", 300),
            ("1h", 3600),
            ("5d", 432_000),
            ("010s", 10),
        ];
        for (text, secs) in ok {
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        let bad = [
            "",
            "s",
            "10",
            "0s",
            "00m",
            "1.5h",
            "-1s",
            "+1s",
            " 1s",
            "1s ",
            "1 s",
            "1S",
            "1w",
            "1ms",
            "99999999999999999999d",
            "999999999999999999d",
        ];
        for text in bad {
            assert!(parse(text).is_err(), "{text:?} should be refused");
        }
        let formats = [
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(3600 * 25), "25h"),
            (Duration::from_secs(86_400 * 2), "2d"),
            (Duration::from_millis(1500), "2s"),
            (Duration::ZERO, "0s"),
        ];
        for (d, want) in formats {
            assert_eq!(format(d), want);
        }
    }
}
