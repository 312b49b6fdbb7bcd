//! `[limits.sending]` from the file to [`Sending`]: how much one authenticated user may
//! send, with the defaults, the per-user overrides and their checks (each error with its key
//! and position). Counting and refusing are the session's (`mta-smtp`).

use std::collections::BTreeMap;

use super::Sending;
use super::checker::Checker;
use super::file::{RawSending, RawSendingUser, S};
use crate::address::Address;

/// Messages one user may send in any hour.
pub(super) const DEFAULT_MESSAGES_PER_HOUR: u32 = 200;
/// Messages one user may send in any 24 hours.
pub(super) const DEFAULT_MESSAGES_PER_DAY: u32 = 1000;
/// Addresses one user may send to for the first time in any 24 hours (as mox ships).
pub(super) const DEFAULT_FIRST_TIME_RECIPIENTS_PER_DAY: u32 = 200;

/// How much one user may send; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendingCaps {
    /// Messages accepted in any hour (a sliding window in minute steps).
    pub messages_per_hour: u32,
    /// Messages accepted in any 24 hours (a sliding window in hour steps).
    pub messages_per_day: u32,
    /// Recipients this user has not sent to in the last 30 days, in any 24 hours.
    pub first_time_recipients_per_day: u32,
}

impl Default for SendingCaps {
    fn default() -> Self {
        SendingCaps {
            messages_per_hour: DEFAULT_MESSAGES_PER_HOUR,
            messages_per_day: DEFAULT_MESSAGES_PER_DAY,
            first_time_recipients_per_day: DEFAULT_FIRST_TIME_RECIPIENTS_PER_DAY,
        }
    }
}

impl Sending {
    /// The caps that apply to `user`: its override where it has one, else the defaults.
    pub fn caps(&self, user: &Address) -> SendingCaps {
        self.users.get(&user.key()).copied().unwrap_or(self.default)
    }
}

impl Checker<'_> {
    /// `[limits.sending]` and `[limits.sending.users."addr"]`.
    pub(super) fn sending(&mut self, raw: Option<&RawSending>) -> Sending {
        let Some(raw) = raw else {
            return Sending::default();
        };
        let base = SendingCaps::default();
        let default = self.caps(
            "limits.sending",
            base,
            (
                &raw.messages_per_hour,
                &raw.messages_per_day,
                &raw.first_time_recipients_per_day,
            ),
        );
        let mut users = BTreeMap::new();
        for (name, user) in raw.users.iter().flatten() {
            let prefix = format!("limits.sending.users.{:?}", name.get_ref());
            let caps = self.user_caps(&prefix, default, user);
            match Address::parse(name.get_ref()) {
                Ok(a) => {
                    users.insert(a.key(), caps);
                }
                Err(e) => {
                    let msg = format!("{:?} is not a mail address: {e}", name.get_ref());
                    self.error(name.span(), &prefix, msg);
                }
            }
        }
        Sending { default, users }
    }

    fn user_caps(
        &mut self,
        prefix: &str,
        default: SendingCaps,
        user: &RawSendingUser,
    ) -> SendingCaps {
        self.caps(
            prefix,
            default,
            (
                &user.messages_per_hour,
                &user.messages_per_day,
                &user.first_time_recipients_per_day,
            ),
        )
    }

    #[allow(clippy::type_complexity)]
    fn caps(
        &mut self,
        prefix: &str,
        base: SendingCaps,
        (hour, day, first): (&Option<S<i64>>, &Option<S<i64>>, &Option<S<i64>>),
    ) -> SendingCaps {
        let max = i64::from(u32::MAX);
        let mut one = |n: &Option<S<i64>>, name: &str, default: u32| match n {
            Some(n) => self
                .int(n, &format!("{prefix}.{name}"), 0, max, None)
                .map_or(default, |v| v as u32),
            None => default,
        };
        SendingCaps {
            messages_per_hour: one(hour, "messages_per_hour", base.messages_per_hour),
            messages_per_day: one(day, "messages_per_day", base.messages_per_day),
            first_time_recipients_per_day: one(
                first,
                "first_time_recipients_per_day",
                base.first_time_recipients_per_day,
            ),
        }
    }
}
