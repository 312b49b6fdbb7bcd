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
