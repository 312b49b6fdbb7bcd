//! The checker every section's conversion uses: it collects the errors (each with its key
//! and position) and reads the value kinds common to all sections (domains, durations,
//! integers in a range, paths, sizes). The sections' own methods live with them
//! (`validate.rs`, `outbound.rs`, `local.rs`, ...), each depending on this module only.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use super::file::{S, Source};
use super::{ConfigError, duration};
use crate::address::Domain;

/// Collects errors while the values are converted. The sections' modules add the methods
/// for their tables.
pub(super) struct Checker<'a> {
    source: &'a Source<'a>,
    errors: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    /// A checker for `source`, starting with the errors found while reading its shape.
    pub(super) fn new(source: &'a Source<'a>, errors: Vec<ConfigError>) -> Self {
        Checker { source, errors }
    }

    /// Every error collected, in the order of their positions in the file.
    pub(super) fn into_errors(self) -> Vec<ConfigError> {
        let mut errors = self.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        errors
    }

    pub(super) fn error(&mut self, span: Range<usize>, key: &str, message: String) {
        self.errors.push(self.source.error(span, key, message));
    }

    pub(super) fn domain(&mut self, text: &S<String>, key: &str) -> Option<Domain> {
        match Domain::parse(text.get_ref()) {
            Ok(d) if d.is_literal() => {
                let msg = format!(
                    "{:?} is an address literal, not a domain name",
                    text.get_ref()
                );
                self.error(text.span(), key, msg);
                None
            }
            Ok(d) => Some(d),
            Err(_) => {
                let msg = format!("{:?} is not a domain name", text.get_ref());
                self.error(text.span(), key, msg);
                None
            }
        }
    }

    pub(super) fn duration(
        &mut self,
        text: &Option<S<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(text) = text else {
            return default;
        };
        duration::parse(text.get_ref()).unwrap_or_else(|msg| {
            self.error(text.span(), key, msg);
            default
        })
    }

    /// An integer in `min..=max`; `why` explains the minimum when a rule sets it.
    pub(super) fn int(
        &mut self,
        n: &S<i64>,
        key: &str,
        min: i64,
        max: i64,
        why: Option<&str>,
    ) -> Option<i64> {
        let value = *n.get_ref();
        let msg = if value < min {
            let why = why.map(|w| format!(" ({w})")).unwrap_or_default();
            format!("{value} is below the minimum of {min}{why}")
        } else if value > max {
            format!("{value} is above the maximum of {max}")
        } else {
            return Some(value);
        };
        self.error(n.span(), key, msg);
        None
    }

    /// A path, which must not be empty.
    pub(super) fn path(&mut self, p: &Option<S<String>>, key: &str) -> Option<PathBuf> {
        let p = p.as_ref()?;
        if p.get_ref().is_empty() {
            self.error(p.span(), key, "must not be empty".to_string());
            return None;
        }
        Some(PathBuf::from(p.get_ref()))
    }

    pub(super) fn given(&mut self, text: &Option<S<String>>, key: &str) -> Given {
        let Some(text) = text else {
            return Given::Absent;
        };
        match duration::parse(text.get_ref()) {
            Ok(d) => Given::Valid(d, text.span()),
            Err(msg) => {
                self.error(text.span(), key, msg);
                Given::Invalid
            }
        }
    }
}

/// A duration key as the file gives it, for the checks that compare two of them.
pub(super) enum Given {
    /// Not in the file: the default applies.
    Absent,
    /// In the file and valid, with the position of its value.
    Valid(Duration, Range<usize>),
    /// In the file but not a duration: already reported, so not compared.
    Invalid,
}

impl Given {
    pub(super) fn or(&self, default: Duration) -> Duration {
        match self {
            Given::Valid(d, _) => *d,
            Given::Absent | Given::Invalid => default,
        }
    }

    pub(super) fn span(&self) -> Option<Range<usize>> {
        match self {
            Given::Valid(_, span) => Some(span.clone()),
            Given::Absent | Given::Invalid => None,
        }
    }
}

/// A size read with its unit, as the plain number of bytes the range checks take.
pub(super) fn bytes(n: &Option<S<super::size::Size>>) -> Option<S<i64>> {
    n.as_ref()
        .map(|n| toml::Spanned::new(n.span(), n.get_ref().0))
}
