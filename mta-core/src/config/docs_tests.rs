//! Tests that `docs/config.md` and the code agree: the docs name every key `RawConfig`
//! accepts (and no other), and their examples parse to what they say.

use super::tests::{addr, addrs, domain, parse, sock};
use super::*;

const DOC: &str = include_str!("../../../docs/config.md");

/// Every key the file accepts, as the docs name them.
const KEYS: &[&str] = &[
    "hostname",
    "data_dir",
    "local_domains",
    "shutdown_grace",
    "user",
    "group",
    "allow_root",
    "sandbox",
    "listen.smtp",
    "listen.submission",
    "listen.submissions",
    "tls.cert",
    "tls.key",
    "tls.\"NAME\".cert",
    "tls.\"NAME\".key",
    "limits.max_message_size",
    "limits.max_recipients",
    "limits.max_sessions",
    "limits.max_errors",
    "limits.command_timeout",
    "limits.data_timeout",
    "limits.max_sessions_per_ip",
    "limits.max_sessions_per_network",
    "limits.max_commands_without_progress",
    "limits.session_timeout",
    "limits.auth_failures",
    "limits.auth_failure_window",
    "limits.max_headers",
    "limits.max_header_size",
    "limits.max_received",
    "limits.message_memory",
    "limits.sending.messages_per_hour",
    "limits.sending.messages_per_day",
    "limits.sending.first_time_recipients_per_day",
    "limits.sending.users",
    "dns.nameservers",
    "outbound.port",
    "outbound.ip",
    "outbound.max_connections",
    "outbound.max_per_domain",
    "outbound.connect_timeout",
    "outbound.connection_timeout",
    "outbound.attempt_timeout",
    "outbound.allow_internal",
    "outbound.refuse_private",
    "outbound.tls_memory",
    "outbound.mta_sts",
    "outbound.mta_sts_port",
    "outbound.mta_sts_ca_file",
    "outbound.dane",
    "outbound.dnssec",
    "outbound.dane_trust_anchor",
    "outbound.tls_reports",
    "outbound.tls_report_interval",
    "outbound.tls_report_allow",
    "outbound.relay",
    "outbound.relay_tls",
    "outbound.relay_user",
    "outbound.relay_password_file",
    "outbound.relay_password_env",
    "outbound.relay_ca_file",
    "outbound.tls.\"domain\".mode",
    "outbound.tls.\"domain\".ca_file",
    "queue.retry_first",
    "queue.retry_max",
    "queue.max_lifetime",
    "queue.delay_warning",
    "queue.min_free_space",
    "queue.min_free_inodes",
    "aliases",
    "senders",
    "metrics.listen",
    "inbound.checks",
    "inbound.dmarc_reject",
    "inbound.spf_reject",
    "inbound.spoofed_from",
    "inbound.milter.address",
    "inbound.milter.listeners",
    "inbound.milter.timeout",
    "inbound.milter.on_failure",
    "inbound.dnsbl_threshold",
    "inbound.dnsbl_action",
    "inbound.dnsbl.zone",
    "inbound.dnsbl.weight",
    "inbound.dnsbl.returns",
    "dkim.\"domain\".selector",
    "dkim.\"domain\".key",
    "dkim.\"domain\".algorithm",
    "dkim.\"domain\".expire",
    "local.delivery",
    "local.lmtp",
    "local.recipient_delimiter",
    "local.mail_group",
    "srs.enabled",
    "srs.domain",
    "srs.max_age",
    "local.line_endings",
    "dmarc_reports.address",
    "dmarc_reports.max_size",
    "dmarc_reports.max_records",
    "dmarc_reports.max_per_day",
    "auth.backend",
    "auth.socket",
    "acme.directory",
    "acme.contact",
    "acme.names",
    "acme.challenge",
    "acme.http_listen",
    "acme.tls_alpn_listen",
    "acme.ca_root",
    "acme.renew_before",
    "dmarc_reports.send.enabled",
    "dmarc_reports.send.allow",
    "dmarc_reports.send.org_name",
    "dmarc_reports.send.contact",
    "dmarc_reports.send.interval",
    "dmarc_reports.send.max_records",
];
const TABLES: &[&str] = &[
    "listen",
    "tls",
    "limits",
    "dns",
    "outbound",
    "queue",
    "inbound",
    "metrics",
    "local",
    "srs",
    "dmarc_reports",
    "auth",
    "acme",
];
/// Keys that hold one table per name (a domain), and how the docs write such a table.
const NAMED_TABLES: &[(&str, &str)] = &[
    ("outbound.tls", "outbound.tls.\"domain\""),
    ("dkim", "dkim.\"domain\""),
    ("inbound.milter", "inbound.milter"),
    ("limits.sending", "limits.sending"),
    ("inbound.dnsbl", "inbound.dnsbl"),
    ("dmarc_reports.send", "dmarc_reports.send"),
];

/// The first ```toml block after `heading` in the docs.
pub(super) fn doc_block(heading: &str) -> &'static str {
    let after = &DOC[DOC.find(heading).expect("heading in docs/config.md")..];
    let start = after.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = after[start..].find("```").expect("closing fence");
    &after[start..start + len]
}

#[test]
fn docs_list_every_key() {
    // What RawConfig accepts, read from serde's own list in the unknown-field error, so
    // a key added to the code but not to KEYS (and so the docs) fails here.
    let accepted = |table: &str| -> Vec<String> {
        let text = match table {
            "" => "zzz = 1".to_string(),
            t => format!("[{t}]\nzzz = 1"),
        };
        let e = parse(&text)
            .unwrap_err()
            .0
            .into_iter()
            .find(|e| e.message.contains("unknown field"))
            .expect("an unknown field error")
            .message;
        let expected = e.split_once("expected").expect("serde lists the fields").1;
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let mut found = Vec::new();
    let named = |key: &str| {
        NAMED_TABLES
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| *t)
    };
    for name in accepted("") {
        if let Some(table) = named(&name) {
            found.extend(accepted(table).into_iter().map(|k| format!("{table}.{k}")));
            continue;
        }
        if !TABLES.contains(&name.as_str()) {
            found.push(name);
            continue;
        }
        if name == "tls" {
            // `[tls]` is read by hand (its keys and its `[tls."NAME"]` tables share one
            // level), so serde has no list of fields for it: these are what it takes.
            let keys = ["cert", "key", "\"NAME\".cert", "\"NAME\".key"];
            found.extend(keys.iter().map(|k| format!("tls.{k}")));
            continue;
        }
        for key in accepted(&name).into_iter().map(|k| format!("{name}.{k}")) {
            match named(&key) {
                Some(table) => {
                    found.extend(accepted(table).into_iter().map(|k| format!("{table}.{k}")))
                }
                None => found.push(key),
            }
        }
    }
    found.sort();
    let mut keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
    keys.sort();
    assert_eq!(found, keys, "KEYS must list exactly what RawConfig accepts");
    for key in KEYS {
        assert!(
            DOC.contains(&format!("`{key}`")),
            "docs/config.md does not document `{key}`"
        );
    }
    // Each key has one row in the table: two rows would say two things about one key.
    let mut rows: Vec<&str> = DOC
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |").map(|(key, _)| key))
        .collect();
    rows.sort_unstable();
    let twice: Vec<&&str> = rows
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| &w[0])
        .collect();
    assert!(
        twice.is_empty(),
        "docs/config.md has two rows for {twice:?}"
    );
}

#[test]
fn docs_examples_parse() {
    let c = parse(doc_block("## Full example")).unwrap();
    assert_eq!(c.hostname, domain("mx.example.org"));
    assert_eq!(c.listen.smtp, vec![sock("0.0.0.0:25")]);
    assert_eq!(c.listen.submission, vec![sock("0.0.0.0:587")]);
    assert_eq!(c.listen.submissions, vec![sock("0.0.0.0:465")]);
    assert_eq!(
        c.tls.cert,
        Some(PathBuf::from("/etc/mta/tls/fullchain.pem"))
    );
    assert_eq!(
        c.outbound.tls_for(&domain("partner.example")).mode,
        TlsMode::Required
    );
    assert_eq!(c.queue, Config::defaults("buildhost").unwrap().queue);
    let postmaster = addr("postmaster@mx.example.org");
    assert_eq!(
        c.expand_alias(&postmaster),
        Some(addrs(&["alice@example.org"]))
    );
    // The aliases snippet parses as written.
    let snippet = format!(
        "local_domains = [\"example.org\"]\n{}",
        doc_block("### `[aliases]`")
    );
    let c = parse(&snippet).unwrap();
    assert_eq!(
        c.expand_alias(&addr("abuse@example.org")),
        Some(addrs(&["alice@example.org"]))
    );
    // The catch-all and [local] snippets parse as written.
    let snippet = format!(
        "local_domains = [\"example.org\"]\n{}",
        doc_block("**Catch-all.**")
    );
    let c = parse(&snippet).unwrap();
    assert_eq!(
        c.expand_catch_all(&domain("example.org")),
        Some(addrs(&["alice@example.org"]))
    );
    let c = parse(doc_block("### Local delivery")).unwrap();
    let socket = LmtpAddress::Unix(PathBuf::from("/run/dovecot/lmtp"));
    assert_eq!(c.local.delivery, LocalDelivery::Lmtp(socket));
    // The snippets of [outbound] and [queue] parse as written.
    let c = parse(doc_block("### TLS per domain")).unwrap();
    let partner = c.outbound.tls_for(&domain("partner.example"));
    assert_eq!(
        partner.ca_file,
        Some(PathBuf::from("/etc/mta/partner-ca.pem"))
    );
    let old = c.outbound.tls_for(&domain("old-appliance.example"));
    assert_eq!(old.mode, TlsMode::None);
    let c = parse(doc_block("### Smarthost")).unwrap();
    let relay = c.outbound.relay.expect("the snippet sets a relay");
    assert_eq!(
        (relay.host.as_str(), relay.port),
        ("smtp.provider.example", 587)
    );
    let file = PasswordSource::File(PathBuf::from("/etc/mta/relay.pass"));
    assert_eq!(relay.password, Some(file));
    let c = parse(doc_block("### `[queue]`")).unwrap();
    assert_eq!(c.queue, Config::defaults("buildhost").unwrap().queue);
    // The printed defaults are what `to_toml` prints.
    let defaults = Config::defaults("buildhost").unwrap().to_toml();
    assert_eq!(doc_block("## Defaults"), defaults);
}
