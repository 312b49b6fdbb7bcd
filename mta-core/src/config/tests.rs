//! Unit tests of the config: defaults, a full file, the round trip through `to_toml`, the
//! exact text of errors, and alias expansion. `[outbound]` and `[queue]` in detail are in
//! `outbound_tests.rs`, the checks of `docs/config.md` in `docs_tests.rs`.

use super::docs_tests::doc_block;
use super::*;

pub(super) const FULL: &str = r#"
hostname = "MX.Example.ORG"
data_dir = "/var/lib/mta"
local_domains = ["example.org", "mx.example.org", "bücher.example"]
shutdown_grace = "1m"

[listen]
smtp = ["0.0.0.0:25", "[::1]:25"]
submission = ["127.0.0.1:587"]
submissions = []

[tls]
cert = "/etc/mta/cert.pem"
key = "/etc/mta/key.pem"

[limits]
max_message_size = 1048576
max_recipients = 200
max_sessions = 50
max_errors = 3
command_timeout = "2m"
data_timeout = "1h"
max_sessions_per_ip = 5
session_timeout = "2h"
auth_failures = 3
auth_failure_window = "1h"
max_headers = 200
max_header_size = 65536
max_received = 30

[dns]
nameservers = ["127.0.0.1:5353", "192.0.2.53", "[::1]"]

[outbound]
port = 2525
ip = "ipv4"
max_connections = 10
max_per_domain = 2
connect_timeout = "1m"
allow_internal = ["127.0.0.1/8"]
refuse_private = true
relay = "Smtp.Provider.example:465"
relay_tls = "implicit"
relay_user = "mx@example.org"
relay_password_env = "MTA_RELAY_PASSWORD"
relay_ca_file = "/etc/mta/relay-ca.pem"

[outbound.tls."Partner.example"]
mode = "required"
ca_file = "/etc/mta/partner-ca.pem"

[outbound.tls."broken.example"]
mode = "none"

[queue]
retry_first = "1m"
retry_max = "2h"
max_lifetime = "3d"
delay_warning = "1h"
min_free_space = 0
min_free_inodes = 50

[aliases]
"postmaster@example.org" = ["alice@example.org"]
"Info@bücher.example" = ["alice@example.org", "bob@remote.test"]

[metrics]
listen = "127.0.0.1:9725"

[inbound]
dmarc_reject = false
spf_reject = true
spoofed_from = "reject"

[dkim."example.org"]
selector = "s2026"
key = "/etc/mta/dkim/example.org.key"

[[dkim."bücher.example"]]
selector = "RSA"
key = "/etc/mta/dkim/buecher-rsa.key"
algorithm = "rsa"
expire = "2d"

[[dkim."bücher.example"]]
selector = "ed.2026"
key = "/etc/mta/dkim/buecher-ed.key"
algorithm = "ed25519"
"#;

pub(super) fn domain(s: &str) -> Domain {
    Domain::parse(s).unwrap()
}
pub(super) fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}
pub(super) fn addrs(list: &[&str]) -> Vec<Address> {
    list.iter().map(|a| addr(a)).collect()
}
pub(super) fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
pub(super) fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml("mta.toml", text, "buildhost")
}
pub(super) fn errors(text: &str) -> String {
    parse(text).expect_err("should be refused").to_string()
}
#[test]
fn defaults() {
    let c = Config::defaults("buildhost").unwrap();
    let want = Config {
        hostname: domain("buildhost"),
        data_dir: PathBuf::from("./mta-data"),
        local_domains: vec![domain("localhost"), domain("buildhost")],
        listen: Listen {
            smtp: vec![sock("127.0.0.1:2525")],
            submission: vec![sock("127.0.0.1:2587")],
            submissions: vec![sock("127.0.0.1:2465")],
        },
        tls: Tls {
            cert: None,
            key: None,
            names: Default::default(),
        },
        limits: Limits {
            max_message_size: 26_214_400,
            max_recipients: 1000,
            max_sessions: 1000,
            max_errors: 10,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            max_sessions_per_ip: 20,
            max_sessions_per_network: 50,
            max_commands_without_progress: 20,
            session_timeout: Duration::from_secs(1800),
            auth_failures: 5,
            auth_failure_window: Duration::from_secs(600),
            max_headers: 1000,
            max_header_size: 1_048_576,
            max_received: 50,
            message_memory: 64 * 1024 * 1024,
            sending: Default::default(),
        },
        dns: Dns {
            nameservers: vec![],
        },
        outbound: Outbound {
            port: 25,
            ip: IpFamily::Any,
            max_connections: 32,
            max_per_domain: 4,
            connect_timeout: Duration::from_secs(30),
            connection_timeout: Duration::from_secs(600),
            attempt_timeout: Duration::from_secs(900),
            allow_internal: vec![],
            refuse_private: false,
            tls_memory: Duration::from_secs(30 * 86_400),
            mta_sts: true,
            mta_sts_port: 443,
            mta_sts_ca_file: None,
            dane: true,
            dnssec: DnssecSource::Validate,
            dane_trust_anchor: None,
            tls_reports: true,
            tls_report_interval: Duration::from_secs(86_400),
            tls_report_allow: Vec::new(),
            relay: None,
            tls: BTreeMap::new(),
        },
        queue: Queue {
            retry_first: Duration::from_secs(300),
            retry_max: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(5 * 86_400),
            delay_warning: Duration::from_secs(4 * 3600),
            min_free_space: 100 * 1024 * 1024,
            min_free_inodes: 1000,
        },
        aliases: BTreeMap::new(),
        catch_all: BTreeMap::new(),
        senders: BTreeMap::new(),
        local: Local {
            delivery: LocalDelivery::Maildir,
            recipient_delimiter: Some('+'),
            mail_group: None,
            line_endings: LineEndings::Lf,
        },
        shutdown_grace: Duration::from_secs(10),
        dkim: vec![],
        metrics_listen: None,
        inbound: Inbound {
            checks: true,
            dmarc_reject: true,
            spf_reject: false,
            spoofed_from: SpoofedFrom::Mark,
            milters: vec![],
            dnsbl: Dnsbl::default(),
        },
        process: Process {
            user: None,
            group: None,
            allow_root: false,
            sandbox: true,
        },
        srs: Srs {
            enabled: true,
            domain: domain("buildhost"),
            max_age: Duration::from_secs(21 * 86_400),
            keys: None,
        },
        dmarc_reports: DmarcReports {
            address: None,
            max_size: 4 * 1024 * 1024,
            max_records: 10_000,
            max_per_day: 1_000,
            send: DmarcSend {
                enabled: false,
                allow: Vec::new(),
                org_name: "buildhost".into(),
                contact: Address::parse("postmaster@buildhost").ok(),
                interval: Duration::from_secs(86_400),
                max_records: 1_000,
            },
        },
        auth: Auth::default(),
        acme: None,
    };
    assert_eq!(c, want);
    assert_eq!(parse("").unwrap(), want, "an empty file is the defaults");
    // The system hostname is a default, never a reason to fail.
    let hosts = [
        ("buildhost", "buildhost", vec!["localhost", "buildhost"]),
        (
            "Mail.Example.ORG\n",
            "mail.example.org",
            vec!["localhost", "mail.example.org"],
        ),
        (
            "mail.example.org.",
            "mail.example.org",
            vec!["localhost", "mail.example.org"],
        ),
        ("localhost", "localhost", vec!["localhost"]),
        ("my_host", "localhost", vec!["localhost"]),
        ("", "localhost", vec!["localhost"]),
        ("[127.0.0.1]", "localhost", vec!["localhost"]),
    ];
    for (system, host, locals) in hosts {
        let c = Config::defaults(system).unwrap();
        assert_eq!(c.hostname, domain(host), "{system:?}");
        assert_eq!(
            c.local_domains,
            locals.iter().map(|d| domain(d)).collect::<Vec<_>>()
        );
        assert!(c.is_local_domain(&domain(host)));
        assert!(!c.is_local_domain(&domain("example.org")));
    }
    // A file that sets no hostname takes the system's; one that does takes its own.
    let c = Config::from_toml("mta.toml", "", "my_host").unwrap();
    assert_eq!(c.hostname, domain("localhost"));
    let c = Config::from_toml("mta.toml", "hostname = \"mx.test\"", "my_host").unwrap();
    assert_eq!(
        c.local_domains,
        vec![domain("localhost"), domain("mx.test")]
    );
}

#[test]
fn full_example() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.hostname, domain("mx.example.org"));
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/mta"));
    let locals = ["example.org", "mx.example.org", "xn--bcher-kva.example"];
    assert_eq!(c.local_domains, locals.map(domain).to_vec());
    assert_eq!(c.shutdown_grace, Duration::from_secs(60));
    assert_eq!(c.listen.smtp, vec![sock("0.0.0.0:25"), sock("[::1]:25")]);
    assert_eq!(c.listen.submission, vec![sock("127.0.0.1:587")]);
    assert_eq!(c.listen.submissions, vec![]);
    assert_eq!(c.tls.cert, Some(PathBuf::from("/etc/mta/cert.pem")));
    assert_eq!(c.tls.key, Some(PathBuf::from("/etc/mta/key.pem")));
    let limits = Limits {
        max_message_size: 1_048_576,
        max_recipients: 200,
        max_sessions: 50,
        max_errors: 3,
        command_timeout: Duration::from_secs(120),
        data_timeout: Duration::from_secs(3600),
        max_sessions_per_ip: 5,
        max_sessions_per_network: 50,
        max_commands_without_progress: 20,
        session_timeout: Duration::from_secs(7200),
        auth_failures: 3,
        auth_failure_window: Duration::from_secs(3600),
        max_headers: 200,
        max_header_size: 65536,
        max_received: 30,
        message_memory: 64 * 1024 * 1024,
        sending: Default::default(),
    };
    assert_eq!(c.limits, limits);
    let ns = ["127.0.0.1:5353", "192.0.2.53:53", "[::1]:53"];
    assert_eq!(c.dns.nameservers, ns.map(sock).to_vec());
    let relay = Smarthost {
        host: "smtp.provider.example".to_string(),
        port: 465,
        tls: SmarthostTls::Implicit,
        user: Some("mx@example.org".to_string()),
        password: Some(PasswordSource::Env("MTA_RELAY_PASSWORD".to_string())),
        ca_file: Some(PathBuf::from("/etc/mta/relay-ca.pem")),
    };
    let mut tls = BTreeMap::new();
    let partner = DomainTls {
        mode: TlsMode::Required,
        ca_file: Some(PathBuf::from("/etc/mta/partner-ca.pem")),
    };
    tls.insert(domain("partner.example"), partner);
    let broken = DomainTls {
        mode: TlsMode::None,
        ca_file: None,
    };
    tls.insert(domain("broken.example"), broken);
    let outbound = Outbound {
        port: 2525,
        ip: IpFamily::Ipv4,
        max_connections: 10,
        max_per_domain: 2,
        connect_timeout: Duration::from_secs(60),
        connection_timeout: Duration::from_secs(600),
        attempt_timeout: Duration::from_secs(900),
        allow_internal: vec!["127.0.0.0/8".parse().unwrap()],
        refuse_private: true,
        tls_memory: Duration::from_secs(30 * 86_400),
        mta_sts: true,
        mta_sts_port: 443,
        mta_sts_ca_file: None,
        dane: true,
        dnssec: DnssecSource::Validate,
        dane_trust_anchor: None,
        tls_reports: true,
        tls_report_interval: Duration::from_secs(86_400),
        tls_report_allow: Vec::new(),
        relay: Some(relay),
        tls,
    };
    assert_eq!(c.outbound, outbound);
    let queue = Queue {
        retry_first: Duration::from_secs(60),
        retry_max: Duration::from_secs(7200),
        max_lifetime: Duration::from_secs(3 * 86_400),
        delay_warning: Duration::from_secs(3600),
        min_free_space: 0,
        min_free_inodes: 50,
    };
    assert_eq!(c.queue, queue);
    let mut aliases = BTreeMap::new();
    aliases.insert(
        addr("postmaster@example.org"),
        addrs(&["alice@example.org"]),
    );
    let info = addrs(&["alice@example.org", "bob@remote.test"]);
    aliases.insert(addr("Info@xn--bcher-kva.example"), info);
    assert_eq!(c.aliases, aliases);
    assert!(c.is_local_domain(&domain("Bücher.example")));
}

#[test]
fn round_trip() {
    let odd = r#"
data_dir = 'relative dir/with "quotes" and \back\slashes/ünï'
local_domains = ["buildhost"]
shutdown_grace = "90s"
[listen]
smtp = ["127.0.0.1:0", "127.0.0.1:0", "[::]:25"]
submission = []
[limits]
command_timeout = "2d"
data_timeout = "25h"
session_timeout = "25h"
[outbound]
relay = "[2001:DB8::1]:587"
relay_user = 'relay "user"'
relay_password_file = "/etc/mta/relay pass"
[outbound.tls."[192.0.2.1]"]
mode = "opportunistic"
ca_file = "ca.pem"
[queue]
retry_first = "1h"
retry_max = "60m"
max_lifetime = "90s"
delay_warning = "89s"
[limits.sending]
messages_per_day = 0
[limits.sending.users."\"a b\"@buildhost"]
first_time_recipients_per_day = 7
[aliases]
"\"a b\"@buildhost" = ["\"c\\\"d\"@remote.test", "x@buildhost"]
"#;
    let configs = [
        Config::defaults("buildhost").unwrap(),
        Config::defaults("my_host").unwrap(),
        parse(FULL).unwrap(),
        parse(doc_block("## Full example")).unwrap(),
        parse(odd).unwrap(),
        parse("local_domains = []\n[listen]\nsmtp = []\nsubmission = []").unwrap(),
        parse("[outbound]\nrelay = \"192.0.2.25:25\"\nrelay_tls = \"starttls\"").unwrap(),
    ];
    for c in configs {
        let text = c.to_toml();
        let back = parse(&text).unwrap_or_else(|e| panic!("{e}\nin:\n{text}"));
        assert_eq!(back, c, "{text}");
        // Writing again gives the same text: the output is canonical.
        assert_eq!(back.to_toml(), text);
    }
}

#[test]
fn error_texts() {
    let table = [
        // Syntax and shape: serde stops at the first, with its position and key.
        (
            "[limits]\nmax_message_sise = 5\n",
            "mta.toml:2:1: limits.max_message_sise: unknown field `max_message_sise`, expected \
             one of `max_message_size`, `max_recipients`, `max_sessions`, `max_errors`, \
             `command_timeout`, `data_timeout`, `max_sessions_per_ip`, \
             `max_sessions_per_network`, `max_commands_without_progress`, `session_timeout`, \
             `auth_failures`, `auth_failure_window`, `max_headers`, `max_header_size`, \
             `max_received`, `message_memory`, `sending`",
        ),
        (
            "hostname = \"a.test\"\nsmtp = [\"127.0.0.1:25\"]\n",
            "mta.toml:2:1: smtp: unknown field `smtp`, expected one of `hostname`, `data_dir`, \
             `local_domains`, `shutdown_grace`, `user`, `group`, `allow_root`, `sandbox`, `listen`, `tls`, `limits`, `dns`, `outbound`, \
             `queue`, `aliases`, `dkim`, `inbound`, `metrics`, `local`, `srs`, `senders`, `dmarc_reports`, `auth`, `acme`",
        ),
        (
            "[outbound]\nport = \"25\"\n",
            "mta.toml:2:8: outbound.port: invalid type: string \"25\", expected i64",
        ),
        (
            "[listen]\nsmtp = [\n  \"127.0.0.1:25\",\n  25,\n]\n",
            "mta.toml:4:3: listen.smtp: invalid type: integer `25`, expected a string",
        ),
        (
            "hostname = \n",
            "mta.toml:1:12: hostname: string values must be quoted, expected literal string",
        ),
        (
            "[aliases]\n\"a@buildhost\" = \"b@buildhost\"\n",
            "mta.toml:2:17: aliases.\"a@buildhost\": invalid type: string \"b@buildhost\", \
             expected a sequence",
        ),
        (
            "limits = { max_errors = 1, max_error = 2 }\n",
            "mta.toml:1:28: limits: unknown field `max_error`, expected one of \
             `max_message_size`, `max_recipients`, `max_sessions`, `max_errors`, \
             `command_timeout`, `data_timeout`, `max_sessions_per_ip`, \
             `max_sessions_per_network`, `max_commands_without_progress`, `session_timeout`, \
             `auth_failures`, `auth_failure_window`, `max_headers`, `max_header_size`, \
             `max_received`, `message_memory`, `sending`",
        ),
        // Values: each with its key and the position of the value.
        (
            "hostname = \"exa mple.org\"",
            "mta.toml:1:12: hostname: \"exa mple.org\" is not a domain name",
        ),
        (
            "local_domains = [\"example.org\", \"a_b.test\"]",
            "mta.toml:1:33: local_domains: \"a_b.test\" is not a domain name",
        ),
        (
            "local_domains = [\"[192.0.2.1]\"]",
            "mta.toml:1:18: local_domains: \"[192.0.2.1]\" is an address literal, not a domain name",
        ),
        (
            "local_domains = [\"example.org\", \"EXAMPLE.org\"]",
            "mta.toml:1:33: local_domains: example.org is listed twice",
        ),
        (
            "data_dir = \"\"",
            "mta.toml:1:12: data_dir: must not be empty",
        ),
        (
            "[listen]\nsmtp = [\"127.0.0.1:25\"]\nsubmission = [\"127.0.0.1:25\"]\n",
            "mta.toml:3:15: listen.submission: 127.0.0.1:25 is already used by listen.smtp",
        ),
        (
            "[listen]\nsmtp = [\"0.0.0.0:25\"]\nsubmissions = [\"127.0.0.1:25\"]\n",
            "mta.toml:3:16: listen.submissions: 127.0.0.1:25 is already used by listen.smtp \
             (as 0.0.0.0:25)",
        ),
        (
            "[listen]\nsubmission = [\"127.0.0.1:2525\"]\n",
            "mta.toml:2:15: listen.submission: 127.0.0.1:2525 is already used by listen.smtp",
        ),
        (
            "[listen]\nsmtp = [\"localhost:25\"]\n",
            "mta.toml:2:9: listen.smtp: \"localhost:25\" is not an IP address and port, such as \
             \"0.0.0.0:25\" or \"[::]:25\"",
        ),
        (
            "[listen]\nsmtp = []\nsubmission = []\nsubmissions = []\n",
            "mta.toml:4:15: listen: no listener: listen.smtp, listen.submission and \
             listen.submissions are all empty",
        ),
        (
            "[tls]\ncert = \"/etc/mta/cert.pem\"\n",
            "mta.toml:2:8: tls.cert: set without tls.key: give both, or neither for a \
             self-signed certificate",
        ),
        (
            "[tls]\nkey = \"/etc/mta/key.pem\"\n",
            "mta.toml:2:7: tls.key: set without tls.cert: give both, or neither for a \
             self-signed certificate",
        ),
        (
            "shutdown_grace = \"10\"",
            "mta.toml:1:18: shutdown_grace: \"10\" is not a duration: write a positive whole \
             number and a unit s, m, h or d, such as \"30s\" or \"5m\"",
        ),
        (
            "[limits]\nmax_recipients = 50\n",
            "mta.toml:2:18: limits.max_recipients: 50 is below the minimum of 100 \
             (RFC 5321 §4.5.3.1.8)",
        ),
        (
            "[limits]\nmax_message_size = -1\n",
            "mta.toml:2:20: limits.max_message_size: -1 is below the minimum of 1024",
        ),
        (
            "[limits]\nmax_errors = 4294967296\n",
            "mta.toml:2:14: limits.max_errors: 4294967296 is above the maximum of 4294967295",
        ),
        (
            "[outbound]\nport = 0\n",
            "mta.toml:2:8: outbound.port: 0 is below the minimum of 1",
        ),
        (
            "[outbound.tls.\"example.com\"]\nmode = \"strict\"\n",
            "mta.toml:2:8: outbound.tls.\"example.com\".mode: \"strict\" is not one of \
             opportunistic, required, none",
        ),
        (
            "[outbound]\nrelay = \"smtp.example\"\n",
            "mta.toml:2:9: outbound.relay: \"smtp.example\" needs a port (host:port)",
        ),
        (
            "[outbound]\nrelay = \"smtp.example:587\"\nrelay_user = \"me\"\n",
            "mta.toml:3:14: outbound.relay_user: needs relay_password_file or \
             relay_password_env",
        ),
        (
            "[queue]\nretry_first = \"2h\"\nretry_max = \"1h\"\n",
            "mta.toml:3:13: queue.retry_max: must not be shorter than queue.retry_first",
        ),
        (
            "[dns]\nnameservers = [\"ns.example\"]\n",
            "mta.toml:2:16: dns.nameservers: \"ns.example\" is not an IP address with an \
             optional port, such as \"192.0.2.53\" or \"127.0.0.1:5353\"",
        ),
        (
            "[dns]\nnameservers = [\"127.0.0.1:0\"]\n",
            "mta.toml:2:16: dns.nameservers: \"127.0.0.1:0\" has port 0, which no DNS server \
             listens on",
        ),
        (
            "[tls]\ncert = \"\"\nkey = \"/etc/mta/key.pem\"\n",
            "mta.toml:2:8: tls.cert: must not be empty",
        ),
        (
            "[dns]\nnameservers = [\"::1\", \"[::1]:53\"]\n",
            "mta.toml:2:23: dns.nameservers: [::1]:53 is listed twice",
        ),
        (
            "[aliases]\n\"postmaster@other.test\" = [\"a@buildhost\"]\n",
            "mta.toml:2:1: aliases.\"postmaster@other.test\": other.test is not one of \
             local_domains",
        ),
        (
            "[aliases]\n\"postmaster@buildhost\" = []\n",
            "mta.toml:2:26: aliases.\"postmaster@buildhost\": must list at least one target \
             address",
        ),
        (
            "[aliases]\n\"postmaster@buildhost\" = [\"alice\"]\n",
            "mta.toml:2:27: aliases.\"postmaster@buildhost\": \"alice\" is not a mail address: \
             invalid local part",
        ),
        (
            "[aliases]\n\"a@buildhost\" = [\"x@buildhost\"]\n\"A@BUILDHOST\" = [\"y@buildhost\"]\n",
            "mta.toml:2:1: aliases.\"a@buildhost\": the same alias as \"A@buildhost\" (case does \
             not matter)",
        ),
    ];
    for (text, want) in table {
        assert_eq!(errors(text), want, "for:\n{text}");
    }
    let e = parse("hostname = \"exa mple.org\"").unwrap_err();
    let want = ConfigError {
        origin: "mta.toml".to_string(),
        line: 1,
        column: 12,
        key: "hostname".to_string(),
        message: "\"exa mple.org\" is not a domain name".to_string(),
    };
    assert_eq!(e.0, vec![want]);
    let nowhere = ConfigError {
        line: 0,
        column: 0,
        ..e.0[0].clone()
    };
    assert_eq!(
        nowhere.to_string(),
        "mta.toml: hostname: \"exa mple.org\" is not a domain name"
    );
}

#[test]
fn all_errors_at_once() {
    let text = r#"hostname = "exa mple.org"
shutdown_grace = "soon"
[listen]
smtp = ["127.0.0.1:25"]
submission = ["127.0.0.1:25"]
[tls]
cert = "cert.pem"
[limits]
max_recipients = 50
max_sessions = 0
[aliases]
"postmaster@other.test" = ["root@buildhost"]
"#;
    let want = [
        "mta.toml:1:12: hostname: \"exa mple.org\" is not a domain name",
        "mta.toml:2:18: shutdown_grace: \"soon\" is not a duration: write a positive whole \
         number and a unit s, m, h or d, such as \"30s\" or \"5m\"",
        "mta.toml:5:15: listen.submission: 127.0.0.1:25 is already used by listen.smtp",
        "mta.toml:7:8: tls.cert: set without tls.key: give both, or neither for a self-signed \
         certificate",
        "mta.toml:9:18: limits.max_recipients: 50 is below the minimum of 100 (RFC 5321 \
         §4.5.3.1.8)",
        "mta.toml:10:16: limits.max_sessions: 0 is below the minimum of 1",
        "mta.toml:12:1: aliases.\"postmaster@other.test\": other.test is not one of \
         local_domains",
    ];
    assert_eq!(errors(text), want.join("\n"));
}

#[test]
fn alias_expansion() {
    let mut text = String::from(
        r#"local_domains = ["example.org"]
[aliases]
"a@example.org" = ["b@example.org", "x@example.org"]
"b@example.org" = ["a@example.org", "y@example.org", "X@example.org"]
"root@example.org" = ["root@example.org", "bob@example.org", "Bob@Example.org"]
"list@example.org" = ["a@example.org", "b@example.org", "bob@example.org", "root@example.org"]
"ext@example.org" = ["someone@remote.test"]
"#,
    );
    // chain0 → chain1 → … → chain11 → end: longer than the depth limit of 10.
    for i in 0..11 {
        text.push_str(&format!(
            "\"chain{i}@example.org\" = [\"chain{}@example.org\"]\n",
            i + 1
        ));
    }
    text.push_str("\"chain11@example.org\" = [\"end@example.org\"]\n");
    let c = parse(&text).unwrap();
    let table: &[(&str, Option<&[&str]>)] = &[
        // a → b → (a: a cycle, its own mailbox), y, X; then x is X again.
        (
            "a@example.org",
            Some(&["a@example.org", "y@example.org", "X@example.org"]),
        ),
        (
            "A@EXAMPLE.ORG",
            Some(&["a@example.org", "y@example.org", "X@example.org"]),
        ),
        (
            "b@example.org",
            Some(&["b@example.org", "x@example.org", "y@example.org"]),
        ),
        (
            "root@example.org",
            Some(&["root@example.org", "bob@example.org"]),
        ),
        (
            "list@example.org",
            Some(&[
                "a@example.org",
                "y@example.org",
                "X@example.org",
                "b@example.org",
                "bob@example.org",
                "root@example.org",
            ]),
        ),
        ("ext@example.org", Some(&["someone@remote.test"])),
        ("chain2@example.org", Some(&["end@example.org"])),
        ("chain1@example.org", Some(&["chain11@example.org"])),
        ("chain0@example.org", Some(&["chain10@example.org"])),
        ("bob@example.org", None),
        ("a@remote.test", None),
    ];
    for (alias, want) in table {
        let want = want.map(addrs);
        assert_eq!(c.expand_alias(&addr(alias)), want, "{alias}");
    }
}

#[test]
fn every_problem_in_one_run_unknown_keys_included() {
    let text = "hostnme = \"a.test\"\n\
                shutdown_grace = \"10\"\n\
                [limits]\n\
                max_message_size = \"25MB\"\n\
                max_header_size = \"64XB\"\n\
                max_recipients = 5\n\
                colour = \"blue\"\n\
                [outbound]\n\
                port = \"25\"\n";
    let e = parse(text).expect_err("five problems");
    let lines: Vec<String> = e.0.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let want = [
        "mta.toml:1:1: hostnme: unknown field `hostnme`",
        "mta.toml:2:18: shutdown_grace: \"10\" is not a duration",
        "mta.toml:5:19: limits.max_header_size: \"64XB\" is not a size",
        "mta.toml:6:18: limits.max_recipients: 5 is below the minimum of 100",
        "mta.toml:7:1: limits.colour: unknown field `colour`",
        "mta.toml:9:8: outbound.port: invalid type: string \"25\", expected i64",
    ];
    for (line, want) in lines.iter().zip(want) {
        assert!(line.starts_with(want), "{line}\nwant {want}");
    }
    let c = parse(
        "[limits]\nmax_message_size = \"25MB\"\nmax_header_size = \"64KiB\"\n\
                   [queue]\nmin_free_space = \"1GB\"\n",
    )
    .expect("sizes with units");
    assert_eq!(c.limits.max_message_size, 25_000_000);
    assert_eq!(c.limits.max_header_size, 65_536);
    assert_eq!(c.queue.min_free_space, 1_000_000_000);
}

mod unknown_keys_model {
    use proptest::prelude::*;

    use super::parse;

    /// Keys the file accepts, each with a value that is valid alone.
    const KNOWN: [(&str, &str, &str); 6] = [
        ("", "hostname", "\"a.test\""),
        ("", "shutdown_grace", "\"10s\""),
        ("limits", "max_errors", "5"),
        ("limits", "max_message_size", "\"10MB\""),
        ("queue", "retry_first", "\"5m\""),
        ("inbound", "checks", "false"),
    ];
    const UNKNOWN: [&str; 4] = ["colour", "hostnme", "max_mesage_size", "zzz"];

    proptest! {
        /// The model: a file made of known keys and unknown keys in any tables is refused
        /// with exactly one error per unknown key, and is accepted when there is none.
        #[test]
        fn each_unknown_key_is_reported_once(
            known in proptest::sample::subsequence(KNOWN.to_vec(), 0..=KNOWN.len()),
            unknown in proptest::collection::vec((0..4usize, 0..4usize), 0..6),
        ) {
            let tables = ["", "limits", "queue", "inbound"];
            let mut text = String::new();
            let mut want = Vec::new();
            for table in tables {
                if !table.is_empty() {
                    text += &format!("[{table}]\n");
                }
                for (t, key, value) in &known {
                    if *t == table {
                        text += &format!("{key} = {value}\n");
                    }
                }
                let mut used = Vec::new();
                for (t, k) in &unknown {
                    if tables[*t] == table && !used.contains(k) {
                        used.push(*k);
                        text += &format!("{} = 1\n", UNKNOWN[*k]);
                        want.push(if table.is_empty() {
                            UNKNOWN[*k].to_string()
                        } else {
                            format!("{table}.{}", UNKNOWN[*k])
                        });
                    }
                }
            }
            match parse(&text) {
                Ok(_) => prop_assert!(want.is_empty(), "{text}"),
                Err(e) => {
                    let mut got: Vec<String> = e.0.iter().map(|e| e.key.clone()).collect();
                    prop_assert!(e.0.iter().all(|e| e.message.contains("unknown field")), "{e}");
                    got.sort();
                    want.sort();
                    prop_assert_eq!(got, want, "{}", text);
                }
            }
        }
    }
}

#[test]
fn metrics_on_a_mail_listener_is_refused() {
    let e = errors("[listen]\nsmtp = [\"0.0.0.0:2525\"]\n[metrics]\nlisten = \"127.0.0.1:2525\"\n");
    assert_eq!(
        e,
        "mta.toml:4:10: metrics.listen: 127.0.0.1:2525 is already used by listen.smtp (as \
         0.0.0.0:2525): give the metrics their own port"
    );
    parse("[metrics]\nlisten = \"127.0.0.1:9100\"\n").expect("its own port");
}
