//! The `[limits]` keys that hold the server against hostile clients: per-address sessions,
//! total session time, AUTH failures, and header bounds. Their bounds and the one rule that
//! ties two of them (`session_timeout ≥ data_timeout`), with the exact error texts.

use std::time::Duration;

use super::tests::{errors, parse};

#[test]
fn hostile_client_limits_parse() {
    let c = parse(
        "[limits]\nmax_sessions_per_ip = 1\nsession_timeout = \"10m\"\nauth_failures = 100\n\
         auth_failure_window = \"1d\"\nmax_headers = 100\nmax_header_size = 16384\n\
         max_received = 10\n",
    )
    .unwrap();
    let l = &c.limits;
    assert_eq!(
        (l.max_sessions_per_ip, l.auth_failures, l.max_headers),
        (1, 100, 100)
    );
    assert_eq!((l.max_header_size, l.max_received), (16384, 10));
    assert_eq!(l.session_timeout, Duration::from_secs(600));
    assert_eq!(l.auth_failure_window, Duration::from_secs(86_400));
}

#[test]
fn message_memory_defaults_and_bounds() {
    let l = parse("").unwrap().limits;
    assert_eq!(l.message_memory, 64 << 20);
    // Never below the largest message, by default or as written.
    let l = parse("[limits]\nmax_message_size = 104857600\n")
        .unwrap()
        .limits;
    assert_eq!(l.message_memory, 100 << 20);
    let l = parse("[limits]\nmax_message_size = 1024\nmessage_memory = 2048\n")
        .unwrap()
        .limits;
    assert_eq!(l.message_memory, 2048);
    assert_eq!(
        errors("[limits]\nmessage_memory = 1048576\n"),
        "mta.toml:2:18: limits.message_memory: 1048576 is below limits.max_message_size \
         (26214400)"
    );
    assert_eq!(
        errors("[limits]\nmessage_memory = 1023\n"),
        "mta.toml:2:18: limits.message_memory: 1023 is below the minimum of 1024"
    );
}

#[test]
fn hostile_client_limit_errors() {
    let table = [
        (
            "[limits]\nmax_sessions_per_ip = 0\n",
            "mta.toml:2:23: limits.max_sessions_per_ip: 0 is below the minimum of 1",
        ),
        (
            "[limits]\nauth_failures = 0\n",
            "mta.toml:2:17: limits.auth_failures: 0 is below the minimum of 1",
        ),
        (
            "[limits]\nauth_failures = 101\n",
            "mta.toml:2:17: limits.auth_failures: 101 is above the maximum of 100",
        ),
        (
            "[limits]\nauth_failure_window = \"0s\"\n",
            "mta.toml:2:23: limits.auth_failure_window: \"0s\" is not a duration: write a \
             positive whole number and a unit s, m, h or d, such as \"30s\" or \"5m\"",
        ),
        (
            "[limits]\nmax_headers = 99\n",
            "mta.toml:2:15: limits.max_headers: 99 is below the minimum of 100",
        ),
        (
            "[limits]\nmax_header_size = 1024\n",
            "mta.toml:2:19: limits.max_header_size: 1024 is below the minimum of 16384",
        ),
        (
            "[limits]\nmax_received = 9\n",
            "mta.toml:2:16: limits.max_received: 9 is below the minimum of 10 (RFC 5321 §6.3 \
             asks for a large threshold)",
        ),
        (
            "[limits]\nsession_timeout = \"5m\"\n",
            "mta.toml:2:19: limits.session_timeout: must not be shorter than \
             limits.data_timeout",
        ),
        (
            "[limits]\ndata_timeout = \"1h\"\n",
            "mta.toml:2:16: limits.data_timeout: must not be longer than limits.session_timeout",
        ),
        (
            "[limits]\ndata_timeout = \"2h\"\nsession_timeout = \"1h\"\n",
            "mta.toml:3:19: limits.session_timeout: must not be shorter than \
             limits.data_timeout",
        ),
    ];
    for (text, want) in table {
        assert_eq!(errors(text), want, "{text}");
    }
    // An invalid duration is reported once, not compared as well.
    assert_eq!(
        errors("[limits]\nsession_timeout = \"soon\"\ndata_timeout = \"1h\"\n")
            .lines()
            .count(),
        1
    );
    // Equal is fine.
    assert!(parse("[limits]\ndata_timeout = \"1h\"\nsession_timeout = \"60m\"\n").is_ok());
}
