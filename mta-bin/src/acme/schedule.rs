//! When to renew and when to try again: pure functions of the certificate's validity, the
//! failures so far and what the CA said (`Retry-After`, RFC 9110 §10.2.3).

use std::time::{Duration, SystemTime};

/// The first retry after a failure; each further failure doubles it up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// The longest wait between two failed attempts of our own choosing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// The longest `Retry-After` honoured: a CA asking for more is asked again after a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// When to renew a certificate valid from `not_before` to `not_after`: when `renew_before`
/// is left (exactly: the operator chose it), or else when a third of its lifetime is left
/// plus a jitter of up to a tenth of that third (`random` picks where in it), so that
/// servers started together do not ask together.
pub fn renew_at(
    not_before: SystemTime,
    not_after: SystemTime,
    renew_before: Option<Duration>,
    random: u64,
) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let window = renew_before.unwrap_or(lifetime / 3).min(lifetime);
    let start = not_after.checked_sub(window).unwrap_or(not_before);
    let spread = match renew_before {
        Some(_) => 0,
        None => u64::try_from((window / 10).as_millis()).unwrap_or(u64::MAX),
    };
    let jitter = match spread {
        0 => 0,
        s => random % s,
    };
    start + Duration::from_millis(jitter)
}

/// How long to wait after `failures` failed attempts in a row (at least 1), at least until
/// the CA's `retry_after` when it gave one.
pub fn retry_delay(failures: u32, retry_after: Option<SystemTime>, now: SystemTime) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let ours = FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF);
    let theirs = retry_after
        .and_then(|t| t.duration_since(now).ok())
        .unwrap_or_default()
        .min(MAX_RETRY_AFTER);
    ours.max(theirs)
}

/// A `Retry-After` value: delay-seconds or an HTTP-date, as a point in time.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<SystemTime> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = value.parse().unwrap_or(u64::MAX);
        return now.checked_add(Duration::from_secs(secs.min(MAX_RETRY_AFTER.as_secs())));
    }
    httpdate::parse_http_date(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: u64 = 86400;

    #[test]
    fn a_90_day_certificate_is_renewed_after_60_days() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000 * DAY);
        let end = start + Duration::from_secs(90 * DAY);
        let at = renew_at(start, end, None, 0);
        assert_eq!(at, start + Duration::from_secs(60 * DAY));
        let late = renew_at(start, end, None, u64::MAX);
        assert!(late < start + Duration::from_secs(63 * DAY));
        let asked = renew_at(start, end, Some(Duration::from_secs(10 * DAY)), 0);
        assert_eq!(asked, start + Duration::from_secs(80 * DAY));
    }

    #[test]
    fn retries_double_and_honour_the_ca() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(DAY);
        assert_eq!(retry_delay(1, None, now), Duration::from_secs(60));
        assert_eq!(retry_delay(3, None, now), Duration::from_secs(240));
        assert_eq!(retry_delay(100, None, now), MAX_BACKOFF);
        let later = now + Duration::from_secs(3600);
        assert_eq!(retry_delay(1, Some(later), now), Duration::from_secs(3600));
        let far = now + Duration::from_secs(100 * DAY);
        assert_eq!(retry_delay(1, Some(far), now), MAX_RETRY_AFTER);
        assert_eq!(
            parse_retry_after("120", now),
            Some(now + Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    proptest! {
        /// Against the plain reading: the renewal falls in the tenth of the window after
        /// its start, and never after the certificate expires.
        #[test]
        fn renewal_within_the_window(
            start in 0u64..4_000_000_000,
            lifetime in 0u64..400 * DAY,
            before in proptest::option::of(0u64..500 * DAY),
            random in any::<u64>(),
        ) {
            let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(start);
            let na = nb + Duration::from_secs(lifetime);
            let at = renew_at(nb, na, before.map(Duration::from_secs), random);
            let lifetime_ns = u128::from(lifetime) * 1_000_000_000;
            let window_ns = match before {
                Some(b) => (u128::from(b) * 1_000_000_000).min(lifetime_ns),
                None => lifetime_ns / 3,
            };
            let first = u128::from(start) * 1_000_000_000 + lifetime_ns - window_ns;
            let got = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
            prop_assert!(got >= first, "{} < {}", got, first);
            let spread = if before.is_some() { 0 } else { window_ns / 10 };
            prop_assert!(got <= first + spread, "{} > {}", got, first + spread);
            prop_assert!(at <= na);
        }

        #[test]
        fn retry_delay_is_bounded(failures in 1u32..1000, secs in proptest::option::of(0u64..10_000_000)) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(DAY);
            let after = secs.map(|s| now + Duration::from_secs(s));
            let d = retry_delay(failures, after, now);
            prop_assert!(d >= FIRST_BACKOFF && d <= MAX_RETRY_AFTER);
            if let Some(s) = secs {
                prop_assert!(d >= Duration::from_secs(s).min(MAX_RETRY_AFTER));
            }
        }
    }
}
