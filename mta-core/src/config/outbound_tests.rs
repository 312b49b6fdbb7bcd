//! Unit tests of `[outbound]` and `[queue]`: the smarthost address and credentials, the
//! per-domain TLS policy, the queue's ordering rules, and the exact text of their errors.

use super::tests::{FULL, domain, errors, parse};
use super::*;

#[test]
fn tls_for_a_domain() {
    let c = parse(FULL).unwrap();
    let o = &c.outbound;
    let required = o.tls_for(&domain("PARTNER.example"));
    assert_eq!(required.mode, TlsMode::Required);
    assert_eq!(
        required.ca_file,
        Some(PathBuf::from("/etc/mta/partner-ca.pem"))
    );
    assert_eq!(o.tls_for(&domain("broken.example")).mode, TlsMode::None);
    let other = DomainTls {
        mode: TlsMode::Opportunistic,
        ca_file: None,
    };
    // Only the domain itself: a subdomain has its own MX hosts and its own policy.
    assert_eq!(o.tls_for(&domain("mx.partner.example")), other);
    assert_eq!(o.tls_for(&domain("example.net")), other);
    let names = [TlsMode::Opportunistic, TlsMode::Required, TlsMode::None].map(TlsMode::name);
    assert_eq!(names, ["opportunistic", "required", "none"]);
    // Internationalised names and address literals are keys as well.
    let text = "[outbound.tls.\"Bücher.example\"]\nmode = \"required\"\n\
                [outbound.tls.\"[192.0.2.1]\"]\nmode = \"none\"\n";
    let c = parse(text).unwrap();
    let literal = c.outbound.tls_for(&domain("[192.0.2.1]"));
    assert_eq!(literal.mode, TlsMode::None);
    let idn = c.outbound.tls_for(&domain("xn--bcher-kva.example"));
    assert_eq!(idn.mode, TlsMode::Required);
}

#[test]
fn relay_addresses() {
    let ok = [
        ("smtp.example:587", "smtp.example", 587),
        ("SMTP.Example:25", "smtp.example", 25),
        ("bücher.example:465", "xn--bcher-kva.example", 465),
        ("localhost:2525", "localhost", 2525),
        ("192.0.2.1:25", "192.0.2.1", 25),
        ("[192.0.2.1]:25", "192.0.2.1", 25),
        ("[2001:DB8::1]:587", "2001:db8::1", 587),
        ("[::1]:65535", "::1", 65535),
    ];
    for (text, host, port) in ok {
        let c = parse(&format!("[outbound]\nrelay = {text:?}\n"))
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let relay = c.outbound.relay.expect("a relay");
        assert_eq!((relay.host.as_str(), relay.port), (host, port), "{text}");
        assert_eq!(relay.tls, SmarthostTls::Starttls);
        assert_eq!(
            (relay.user, relay.password, relay.ca_file),
            (None, None, None)
        );
    }
    let bad = [
        ("smtp.example", "\"smtp.example\" needs a port (host:port)"),
        (
            "smtp.example:",
            "\"smtp.example:\" needs a port (host:port)",
        ),
        ("[::1]", "\"[::1]\" needs a port (host:port)"),
        ("", "\"\" needs a port (host:port)"),
        (":25", "\"\" is not a host name or IP address"),
        (
            "smtp_1.example:25",
            "\"smtp_1.example\" is not a host name or IP address",
        ),
        ("smtp.example:0", "\"0\" is not a port number (1 to 65535)"),
        (
            "smtp.example:65536",
            "\"65536\" is not a port number (1 to 65535)",
        ),
        (
            "smtp.example:+25",
            "\"+25\" is not a port number (1 to 65535)",
        ),
        (
            "smtp.example:submission",
            "\"submission\" is not a port number (1 to 65535)",
        ),
        (
            "2001:db8::1:587",
            "\"2001:db8::1:587\": write an IPv6 address in brackets, such as \
             \"[2001:db8::1]:587\"",
        ),
        ("[::1:587", "\"[::1:587\" has no closing bracket"),
        (
            "[smtp.example]:587",
            "\"smtp.example\" in brackets is not an IP address",
        ),
        ("[::1]587", "\"[::1]587\" is not host:port"),
    ];
    for (text, want) in bad {
        let toml = format!("[outbound]\nrelay = {text:?}\n");
        assert_eq!(
            errors(&toml),
            format!("mta.toml:2:9: outbound.relay: {want}"),
            "{text}"
        );
    }
}

#[test]
fn relay_credentials() {
    let base = "[outbound]\nrelay = \"smtp.example:587\"\n";
    let with = |keys: &str| format!("{base}{keys}");
    let c = parse(&with(
        "relay_user = \"me\"\nrelay_password_file = \"/etc/mta/relay.pass\"\n",
    ))
    .unwrap();
    let relay = c.outbound.relay.unwrap();
    assert_eq!(relay.user.as_deref(), Some("me"));
    let file = PasswordSource::File(PathBuf::from("/etc/mta/relay.pass"));
    assert_eq!(relay.password, Some(file));
    let c = parse(&with(
        "relay_user = \"me\"\nrelay_password_env = \"_MTA_PW2\"\n",
    ))
    .unwrap();
    let env = PasswordSource::Env("_MTA_PW2".to_string());
    assert_eq!(c.outbound.relay.unwrap().password, Some(env));

    let bad = [
        (
            "relay_password_file = \"/p\"\n",
            "mta.toml:3:23: outbound.relay_password_file: set without outbound.relay_user",
        ),
        (
            "relay_password_env = \"PW\"\n",
            "mta.toml:3:22: outbound.relay_password_env: set without outbound.relay_user",
        ),
        (
            "relay_user = \"me\"\nrelay_password_file = \"/p\"\nrelay_password_env = \"PW\"\n",
            "mta.toml:5:22: outbound.relay_password_env: set together with \
             outbound.relay_password_file: give only one",
        ),
        (
            "relay_user = \"\"\nrelay_password_env = \"PW\"\n",
            "mta.toml:3:14: outbound.relay_user: must not be empty",
        ),
        (
            "relay_user = \"a\\u0000b\"\nrelay_password_env = \"PW\"\n",
            "mta.toml:3:14: outbound.relay_user: must not contain control characters",
        ),
        (
            "relay_user = \"me\"\nrelay_password_file = \"\"\n",
            "mta.toml:4:23: outbound.relay_password_file: must not be empty",
        ),
        (
            "relay_user = \"me\"\nrelay_password_env = \"1PW\"\n",
            "mta.toml:4:22: outbound.relay_password_env: \"1PW\" is not an environment \
             variable name (letters, digits and _, not starting with a digit)",
        ),
        (
            "relay_user = \"me\"\nrelay_password_env = \"MTA-PW\"\n",
            "mta.toml:4:22: outbound.relay_password_env: \"MTA-PW\" is not an environment \
             variable name (letters, digits and _, not starting with a digit)",
        ),
        (
            "relay_tls = \"tls\"\n",
            "mta.toml:3:13: outbound.relay_tls: \"tls\" is not one of starttls, implicit",
        ),
        (
            "relay_ca_file = \"\"\n",
            "mta.toml:3:17: outbound.relay_ca_file: must not be empty",
        ),
    ];
    for (keys, want) in bad {
        assert_eq!(errors(&with(keys)), want, "{keys}");
    }
}

#[test]
fn relay_keys_need_a_relay() {
    let text = r#"[outbound]
relay_tls = "implicit"
relay_user = "me"
relay_password_file = "/p"
relay_password_env = "PW"
relay_ca_file = "/ca.pem"
"#;
    let want = [
        "mta.toml:2:13: outbound.relay_tls: set without outbound.relay",
        "mta.toml:3:14: outbound.relay_user: set without outbound.relay",
        "mta.toml:4:23: outbound.relay_password_file: set without outbound.relay",
        "mta.toml:5:22: outbound.relay_password_env: set without outbound.relay",
        "mta.toml:6:17: outbound.relay_ca_file: set without outbound.relay",
    ];
    assert_eq!(errors(text), want.join("\n"));
}

#[test]
fn outbound_errors() {
    let table = [
        (
            "[outbound]\nip = \"v4\"\n",
            "mta.toml:2:6: outbound.ip: \"v4\" is not one of any, ipv4, ipv6, prefer-ipv4, prefer-ipv6",
        ),
        (
            "[outbound]\nmax_connections = 0\n",
            "mta.toml:2:19: outbound.max_connections: 0 is below the minimum of 1",
        ),
        (
            "[outbound]\nallow_internal = [\"127.0.0.0/8\", \"localhost\", \"10.0.0.0/33\"]\n",
            "mta.toml:2:34: outbound.allow_internal: \"localhost\" is not an address block such \
             as \"127.0.0.0/8\" or \"::1/128\"\n\
             mta.toml:2:47: outbound.allow_internal: \"10.0.0.0/33\" is not an address block \
             such as \"127.0.0.0/8\" or \"::1/128\"",
        ),
        (
            "[outbound]\nattempt_timeout = \"soon\"\n",
            "mta.toml:2:19: outbound.attempt_timeout: \"soon\" is not a duration: write a \
             positive whole number and a unit s, m, h or d, such as \"30s\" or \"5m\"",
        ),
        (
            "[outbound]\nmax_per_domain = -4\n",
            "mta.toml:2:18: outbound.max_per_domain: -4 is below the minimum of 1",
        ),
        (
            "[outbound]\nconnect_timeout = \"30\"\n",
            "mta.toml:2:19: outbound.connect_timeout: \"30\" is not a duration: write a \
             positive whole number and a unit s, m, h or d, such as \"30s\" or \"5m\"",
        ),
        (
            "[outbound.tls.\"example.com\"]\nca_file = \"/ca.pem\"\n",
            "mta.toml:1:15: outbound.tls.\"example.com\".mode: must be set: one of \
             opportunistic, required, none",
        ),
        (
            "[outbound.tls.\"example.com\"]\nmode = \"none\"\nca_file = \"/ca.pem\"\n",
            "mta.toml:3:11: outbound.tls.\"example.com\".ca_file: has no use with mode \"none\"",
        ),
        (
            "[outbound.tls.\"example.com\"]\nmode = \"required\"\nca_file = \"\"\n",
            "mta.toml:3:11: outbound.tls.\"example.com\".ca_file: must not be empty",
        ),
        (
            "[outbound.tls.\"exa mple.com\"]\nmode = \"required\"\n",
            "mta.toml:1:15: outbound.tls.\"exa mple.com\": \"exa mple.com\" is not a domain name",
        ),
        (
            "[outbound.tls.\"example.com\"]\nmode = \"none\"\n\
             [outbound.tls.\"EXAMPLE.com\"]\nmode = \"none\"\n",
            "mta.toml:3:15: outbound.tls.\"EXAMPLE.com\": the same domain as \"example.com\" \
             (case does not matter)",
        ),
        (
            "[outbound.tls.\"example.com\"]\nmode = \"required\"\ncafile = \"/ca.pem\"\n",
            "mta.toml:3:1: outbound.tls.\"example.com\".cafile: unknown field `cafile`, \
             expected `mode` or `ca_file`",
        ),
        (
            "[outbound]\ntls = \"required\"\n",
            "mta.toml:2:7: outbound.tls: invalid type: string \"required\", expected a map",
        ),
    ];
    for (text, want) in table {
        assert_eq!(errors(text), want, "for:\n{text}");
    }
}

#[test]
fn queue_order() {
    let table = [
        (
            "retry_first = \"2h\"\n",
            "mta.toml:2:15: queue.retry_first: must not be longer than queue.retry_max",
        ),
        (
            "retry_max = \"1m\"\n",
            "mta.toml:2:13: queue.retry_max: must not be shorter than queue.retry_first",
        ),
        (
            "delay_warning = \"5d\"\n",
            "mta.toml:2:17: queue.delay_warning: must be shorter than queue.max_lifetime",
        ),
        (
            "max_lifetime = \"1h\"\n",
            "mta.toml:2:16: queue.max_lifetime: must be longer than queue.delay_warning",
        ),
        (
            "max_lifetime = \"2h\"\ndelay_warning = \"120m\"\n",
            "mta.toml:3:17: queue.delay_warning: must be shorter than queue.max_lifetime",
        ),
        // A bad duration is reported once, not compared with the other key too.
        (
            "retry_first = \"2\"\nretry_max = \"1s\"\n",
            "mta.toml:2:15: queue.retry_first: \"2\" is not a duration: write a positive whole \
             number and a unit s, m, h or d, such as \"30s\" or \"5m\"",
        ),
        (
            "min_free_space = -1\n",
            "mta.toml:2:18: queue.min_free_space: -1 is below the minimum of 0",
        ),
        (
            "min_free_inodes = -5\n",
            "mta.toml:2:19: queue.min_free_inodes: -5 is below the minimum of 0",
        ),
    ];
    for (keys, want) in table {
        assert_eq!(errors(&format!("[queue]\n{keys}")), want, "for:\n{keys}");
    }
    // Equal first and maximum delays are a fixed interval.
    let c = parse("[queue]\nretry_first = \"1h\"\nretry_max = \"60m\"\n").unwrap();
    assert_eq!(c.queue.retry_first, c.queue.retry_max);
}

#[test]
fn all_errors_at_once() {
    let text = r#"[outbound]
ip = "both"
relay = "smtp.example"
relay_user = "me"

[outbound.tls."example.com"]
mode = "strict"

[queue]
retry_first = "2h"
retry_max = "1h"
delay_warning = "6d"
"#;
    let want = [
        "mta.toml:2:6: outbound.ip: \"both\" is not one of any, ipv4, ipv6, prefer-ipv4, prefer-ipv6",
        "mta.toml:3:9: outbound.relay: \"smtp.example\" needs a port (host:port)",
        "mta.toml:4:14: outbound.relay_user: needs relay_password_file or relay_password_env",
        "mta.toml:7:8: outbound.tls.\"example.com\".mode: \"strict\" is not one of \
         opportunistic, required, none",
        "mta.toml:11:13: queue.retry_max: must not be shorter than queue.retry_first",
        "mta.toml:12:17: queue.delay_warning: must be shorter than queue.max_lifetime",
    ];
    assert_eq!(errors(text), want.join("\n"));
}

#[test]
fn allow_internal_blocks() {
    let c =
        parse("[outbound]\nallow_internal = [\"127.0.0.1/8\", \"::1\", \"192.0.2.7\"]\n").unwrap();
    let blocks: Vec<String> = c
        .outbound
        .allow_internal
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(blocks, ["127.0.0.0/8", "::1/128", "192.0.2.7/32"]);
}
