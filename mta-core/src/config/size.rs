//! Sizes as the config file writes them: a whole number of bytes (`26214400`), or a string of
//! a whole number and a unit: `"512B"`, `"64KB"`, `"25MB"`, `"1GB"` (powers of 1000) or
//! `"64KiB"`, `"25MiB"`, `"1GiB"` (powers of 1024). Units are read without regard to case;
//! nothing else is accepted, so `"25M"` (mega or mebi?) and `"1.5MB"` are errors.

use serde::Deserialize;

/// Bytes per unit.
const UNITS: [(&str, i64); 7] = [
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
];

/// A size in bytes, read from an integer or a string with a unit. Negative integers are kept,
/// for validation to report with the minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Size(pub i64);

/// Parses `<digits><unit>`.
///
/// # Errors
/// The operator-facing message when `text` is not such a size or overflows.
pub(super) fn parse(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{text:?} is not a size: write a number of bytes, or a whole number and a unit B, \
             KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024), such as \"25MB\""
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(bad());
    }
    let unit = unit.to_ascii_lowercase();
    let (_, per_unit) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(bad)?;
    let count: i64 = number.parse().map_err(|_| bad())?;
    count.checked_mul(*per_unit).ok_or_else(bad)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of bytes, or a string such as \"25MB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                i64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                parse(v).map(Size).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn sizes() {
        let ok = [
            ("0B", 0),
            ("512B", 512),
            ("64KB", 64_000),
            ("25MB", 25_000_000),
            ("25mb", 25_000_000),
            ("1GB", 1_000_000_000),
            ("64KiB", 65_536),
            ("25MiB", 26_214_400),
            ("1gib", 1_073_741_824),
        ];
        for (text, bytes) in ok {
            assert_eq!(parse(text), Ok(bytes), "{text}");
        }
        let bad = [
            "",
            "MB",
            "25",
            "25M",
            "25 MB",
            " 25MB",
            "25MB ",
            "1.5MB",
            "-1MB",
            "+1MB",
            "25XB",
            "25MBs",
            "99999999999999999999B",
            "9999999999999GiB",
        ];
        for text in bad {
            let e = parse(text).expect_err(text);
            assert!(e.contains("is not a size"), "{text}: {e}");
        }
    }

    /// The obvious reading: split at the first letter, look the unit up in a table written
    /// out a second time, multiply in 128 bits and check the range.
    fn model(text: &str) -> Option<i64> {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        let unit = &text[digits.len()..];
        let per = match unit.to_lowercase().as_str() {
            "b" => 1i128,
            "kb" => 1000,
            "mb" => 1000 * 1000,
            "gb" => 1000 * 1000 * 1000,
            "kib" => 1024,
            "mib" => 1024 * 1024,
            "gib" => 1024 * 1024 * 1024,
            _ => return None,
        };
        if digits.is_empty() || digits.len() > 30 {
            return None;
        }
        let n: i128 = digits.parse().ok()?;
        i64::try_from(n * per).ok()
    }

    proptest! {
        #[test]
        fn parse_matches_the_model(text in "[0-9]{0,21}(B|b|KB|kB|MB|mb|GB|KiB|MiB|mib|GiB|M|K|x|)[ .]?") {
            prop_assert_eq!(parse(&text).ok(), model(&text));
        }
    }
}
