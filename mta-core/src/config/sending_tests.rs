//! `[limits.sending]`: defaults, a user's override falling back key by key, 0 for no
//! limit, and the exact error texts.

use super::SendingCaps;
use super::tests::{addr, errors, parse};

#[test]
fn sending_defaults() {
    let s = parse("").unwrap().limits.sending;
    assert_eq!(
        s.default,
        SendingCaps {
            messages_per_hour: 200,
            messages_per_day: 1000,
            first_time_recipients_per_day: 200,
        }
    );
    assert!(s.users.is_empty());
}

#[test]
fn sending_user_override_keeps_the_other_keys() {
    let s = parse(
        "[limits.sending]\nmessages_per_hour = 10\n\
         [limits.sending.users.\"Alice@Example.org\"]\nmessages_per_day = 5000\n\
         [limits.sending.users.\"bulk@example.org\"]\nmessages_per_hour = 0\n",
    )
    .unwrap()
    .limits
    .sending;
    let alice = s.caps(&addr("alice@example.org"));
    assert_eq!(
        (alice.messages_per_hour, alice.messages_per_day),
        (10, 5000)
    );
    assert_eq!(alice.first_time_recipients_per_day, 200);
    assert_eq!(s.caps(&addr("bulk@example.org")).messages_per_hour, 0);
    assert_eq!(s.caps(&addr("bob@example.org")), s.default);
}

#[test]
fn sending_errors() {
    assert_eq!(
        errors("[limits.sending]\nmessages_per_day = -1\n"),
        "mta.toml:2:20: limits.sending.messages_per_day: -1 is below the minimum of 0"
    );
    assert_eq!(
        errors("[limits.sending.users.\"not an address\"]\nmessages_per_day = 1\n"),
        "mta.toml:1:23: limits.sending.users.\"not an address\": \"not an address\" is not a \
         mail address: invalid local part"
    );
}
