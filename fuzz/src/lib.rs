//! Fuzz targets: one function per input surface that the network or the disk can reach.
//! Each takes arbitrary bytes and must neither panic nor hang; each also checks an
//! invariant (a parsed address prints and parses back the same, the DATA reader gives the
//! same answer however the input is chunked, a queue record re-encodes to itself).
//!
//! The framing targets (`line`, `data`, `bdat`, `client_reply`) run the real readers and the
//! reference models of [`model`] over the same bytes cut at read boundaries the input
//! chooses ([`framing`]), and require the same decisions, byte for byte.
//!
//! Two drivers run these functions: coverage-guided libFuzzer targets on the nightly
//! toolchain (`libfuzzer/`, a crate outside the workspace so that stable builds never see
//! it), and `src/main.rs`, a seeded mutation loop on stable for machines without nightly and
//! for the short CI run. `scripts/fuzz.sh` runs either; the unit test at the end replays the
//! committed corpus in CI.

// Functions stay under the line limit in clippy.toml (test code is exempt).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod framing;
pub mod model;

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use mta_core::address::{
    Address, Domain, ForwardPath, ReversePath, parse_forward_path, parse_reverse_path,
};
use mta_core::auth::{UserDb, Verified};
use mta_core::config::Config;
use mta_core::envelope::ListenerKind;
use mta_core::seams::UserDirectory;
use mta_smtp::client::reply::{ReplyParser, take_line};
use mta_smtp::server::command::{self, Command};
use mta_smtp::server::session::{Action, Context, Session};

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// The targets by name, as `main.rs` and the corpus directories call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("command", command),
    ("line", line),
    ("data", data),
    ("bdat", bdat),
    ("address", address),
    ("auth", auth),
    ("record", record),
    ("session", session),
    ("client_reply", client_reply),
    ("conn", conn),
    ("mta_sts_policy", mta_sts_policy),
    ("headers", headers),
    ("milter_reply", milter_reply),
    ("dmarc_report", dmarc_report),
];

/// The SMTP command parser; a parsed path prints and parses back to the same address.
pub fn command(input: &[u8]) {
    match command::parse(input) {
        Ok(Command::Mail(mail)) => {
            if let ReversePath::Address(a) = &mail.from {
                round_trip(a);
            }
        }
        Ok(Command::Rcpt {
            to: ForwardPath::Address(a),
            ..
        }) => round_trip(&a),
        _ => {}
    }
}

fn round_trip(a: &Address) {
    let text = a.to_string();
    assert!(
        !text.chars().any(char::is_control),
        "control character in {text:?}"
    );
    let again = Address::parse(&text).expect("a printed address parses");
    assert_eq!(&again, a, "{text}");
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
}

/// The command-line reader against its model, with the limits the server uses; the first
/// four octets choose the read boundaries.
pub fn line(input: &[u8]) {
    let (cuts, stream) = framing::Cuts::from_fuzz(input);
    framing::check_lines(stream, &cuts);
}

/// The DATA reader against its model, message after message, with a small size limit so
/// that both sides of it are reached; the first four octets choose the read boundaries.
pub fn data(input: &[u8]) {
    let (cuts, stream) = framing::Cuts::from_fuzz(input);
    framing::check_data(stream, &cuts, 4096);
}

/// The BDAT chunk reader against its model: after the first four octets (the read
/// boundaries), one octet gives the number of chunks (0 to 7) and two octets each their
/// size (below 2048); the rest is the stream the chunks are read from.
pub fn bdat(input: &[u8]) {
    let (cuts, rest) = framing::Cuts::from_fuzz(input);
    let count = rest.first().map_or(0, |b| usize::from(b % 8));
    let head = (1 + 2 * count).min(rest.len());
    let sizes: Vec<usize> = rest[1.min(rest.len())..head]
        .chunks_exact(2)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]]) % 2048))
        .collect();
    framing::check_bdat(&rest[head..], &sizes, &cuts, 4096);
}

/// Addresses, domains and paths: what parses prints and parses back the same.
pub fn address(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(a) = Address::parse(text) {
        round_trip(&a);
    }
    if let Ok(d) = Domain::parse(text) {
        let again = Domain::parse(d.as_str()).expect("a domain in routable form parses");
        assert_eq!(again, d);
    }
    if let Ok(ForwardPath::Address(a)) = parse_forward_path(text) {
        round_trip(&a);
    }
    if let Ok(ReversePath::Address(a)) = parse_reverse_path(text) {
        round_trip(&a);
    }
}

struct Users(Arc<UserDb>);

impl UserDirectory for Users {
    fn current(&self) -> Arc<UserDb> {
        self.0.clone()
    }
}

fn context(listener: ListenerKind, tls: bool) -> Context {
    static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
    let config = CONFIG
        .get_or_init(|| {
            Arc::new(
                Config::from_toml(
                    "fuzz.toml",
                    "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n\
                     [aliases]\n\"sales@example.org\" = [\"alice@example.org\"]\n",
                    "x",
                )
                .expect("the fuzz config is valid"),
            )
        })
        .clone();
    Context {
        config,
        users: Arc::new(Users(Arc::new(UserDb::default()))),
        listener,
        peer: "127.0.0.1:40000".parse().expect("an address"),
        tls: tls.then(|| "TLSv1.3 TLS13_AES_128_GCM_SHA256".to_string()),
        starttls_available: !tls,
        sending: Default::default(),
    }
}

/// Carries out one action as the connection loop would (passwords are always wrong here).
fn step(session: &mut Session, line: &[u8]) {
    if let Action::CheckPassword { .. } = session.handle(line) {
        session.auth_checked(Verified::Rejected);
    }
}

/// SASL responses: `AUTH PLAIN` / `AUTH LOGIN` then the input as the client's answers.
pub fn auth(input: &[u8]) {
    for start in [&b"AUTH PLAIN"[..], b"AUTH LOGIN"] {
        let mut s = Session::new(context(ListenerKind::Submission, true));
        step(&mut s, b"EHLO fuzz.test");
        step(&mut s, start);
        for line in input.split(|&b| b == b'\n').take(16) {
            step(&mut s, line);
        }
    }
}

/// A whole dialogue, one line per `\n`, on every kind of listener.
pub fn session(input: &[u8]) {
    for (listener, tls) in [
        (ListenerKind::Smtp, false),
        (ListenerKind::Submission, false),
        (ListenerKind::Submissions, true),
    ] {
        let mut s = Session::new(context(listener, tls));
        for line in input.split(|&b| b == b'\n').take(256) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            step(&mut s, line);
            s.take_transaction();
        }
    }
}

/// A queue that takes everything and keeps nothing, for [`conn`].
struct Discard;

impl mta_core::seams::Enqueue for Discard {
    fn enqueue(
        &self,
        _envelope: mta_core::envelope::Envelope,
        _body: Vec<u8>,
    ) -> mta_core::seams::BoxFuture<'_, Result<(), mta_core::seams::EnqueueError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A whole connection over an in-memory stream: the input is everything the client sends
/// (then it closes its side); framing, DATA, the header checks and the replies all run.
/// Every reply line the server writes must be well-formed.
pub fn conn(input: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let shared = mta_smtp::server::Shared::new(
        context(ListenerKind::Smtp, false).config,
        Arc::new(Users(Arc::new(UserDb::default()))),
        Arc::new(Discard),
        tokio::sync::watch::channel(false).1,
    );
    let output = RUNTIME.with(|rt| {
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let peer = "127.0.0.1:40000".parse().expect("an address");
            let serving =
                mta_smtp::server::conn::serve_stream(&shared, server, peer, ListenerKind::Smtp);
            let talking = async {
                let _ = client.write_all(input).await;
                let _ = client.shutdown().await;
                let mut out = Vec::new();
                let _ = client.read_to_end(&mut out).await;
                out
            };
            let ((), out) = tokio::join!(serving, talking);
            out
        })
    });
    assert!(output.starts_with(b"220 "), "no greeting: {output:?}");
    for line in output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.ends_with(b"\r"), "reply line without CRLF: {line:?}");
        let code = std::str::from_utf8(&line[..3.min(line.len())]).unwrap_or("");
        assert!(
            matches!(code.parse::<u16>(), Ok(200..=599)),
            "bad reply line {line:?}"
        );
    }
}

/// The queue's record decoder: what decodes re-encodes to something that decodes equal.
pub fn record(input: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<mta_queue::Record>(input) {
        let bytes = serde_json::to_vec(&r).expect("a record encodes");
        let again: mta_queue::Record = serde_json::from_slice(&bytes).expect("re-decodes");
        assert_eq!(again, r);
    }
}

/// The outbound client's reply framing and parser, on what a hostile server might send: the
/// framing against its model (the first four octets choose the read boundaries), then the
/// parser on the lines.
pub fn client_reply(input: &[u8]) {
    let (cuts, stream) = framing::Cuts::from_fuzz(input);
    framing::check_reply_lines(stream, &cuts);
    thread_local! {
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        buf.extend_from_slice(input);
        let mut parser = ReplyParser::new();
        while let Ok(Some(line)) = take_line(&mut buf) {
            match parser.push(&line) {
                Ok(Some(reply)) => {
                    assert!((200..=599).contains(&reply.code), "{reply:?}");
                    parser = ReplyParser::new();
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
    });
}

/// An MTA-STS policy file, as a hostile HTTPS server serves it: what parses writes out and
/// parses back equal, and an MX name matches at most what its patterns allow.
pub fn mta_sts_policy(input: &[u8]) {
    use mta_smtp::relay::mta_sts::Policy;
    let text = String::from_utf8_lossy(input);
    if let Ok(p) = Policy::parse(&text, "1", 0) {
        let again = Policy::parse(&p.lines().join("\n"), "1", 0).expect("its own lines parse");
        assert_eq!(again, p);
        for host in text.lines().take(4) {
            let _ = p.allows(host.trim());
        }
    }
}

/// A DMARC aggregate report message as it arrives at the report address: read under a small
/// budget (as a whole message, and as the body of an XML part); a report read is stored in
/// a form that reads back the same, under a name made of hex digits only.
pub fn dmarc_report(input: &[u8]) {
    use mta_smtp::dmarc_reports::{extract, store::StoredReport};
    let mut wrapped = b"Content-Type: text/xml\r\n\r\n".to_vec();
    wrapped.extend_from_slice(input);
    for message in [input, &wrapped[..]] {
        let Ok((report, dropped)) = extract::report(message, 64 * 1024, 50) else {
            continue;
        };
        assert!(
            report.records().len() <= 50,
            "{} records",
            report.records().len()
        );
        let stored = StoredReport::new(&report, 1_765_100_000, dropped, 50);
        let json = serde_json::to_vec(&stored).expect("a stored report serialises");
        let again: StoredReport = serde_json::from_slice(&json).expect("and reads back");
        assert_eq!(again, stored);
        let name = stored.file_name();
        let stem = name.strip_suffix(".json").expect("a .json file");
        assert!(
            stem.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
            "{name}"
        );
    }
}

/// The header fields of a received message, and removing `Authentication-Results` that claim
/// our name: fields lie inside the data in order, and stripping removes exactly the claiming
/// fields, never grows the message, leaves nothing for a second pass, and leaves no field
/// (as a lenient reader finds them) whose authserv-id is ours or unreadable.
pub fn headers(input: &[u8]) {
    use mta_smtp::headers::{fields, unfold};
    use mta_smtp::server::authres::strip_forged;
    let found = fields(input);
    let mut end = 0;
    for f in &found {
        assert!(f.range.start >= end && f.range.end <= input.len(), "{f:?}");
        end = f.range.end;
        let _ = unfold(f.value);
    }
    let (out, n) = strip_forged(input, &["mx.example.test"]);
    if n == 0 {
        assert_eq!(out, input);
    } else {
        assert!(out.len() < input.len());
    }
    // Removing whole fields exposes nothing new: a second pass finds none.
    let (again, m) = strip_forged(&out, &["mx.example.test"]);
    assert_eq!((m, again.len()), (0, out.len()));
    // Whatever a lenient reader takes for a field, none left speaks for us.
    for f in mta_smtp::headers::all_fields(&out) {
        if f.name.eq_ignore_ascii_case("Authentication-Results") {
            let id = mta_smtp::server::authres::authserv_id(f.value).expect("unreadable: removed");
            let id = id.strip_suffix(b".").unwrap_or(&id);
            assert!(!id.eq_ignore_ascii_case(b"mx.example.test"), "{f:?}");
        }
    }
}

/// What a milter sends back: each reply the decoder takes encodes to a frame that decodes to
/// it again (what is ignored, the data of `+` and `-` and what follows the options, aside), it
/// never takes more than it was given nor a frame above the cap, and the text a filter
/// chose (its reply line, a header field) passes our checks or is refused, never panics.
pub fn milter_reply(input: &[u8]) {
    use mta_smtp::server::filters::milter::{client, codec, edits};
    let mut rest = input;
    while let Ok(Some((reply, used))) = codec::decode(rest) {
        assert!(used <= rest.len() && used <= codec::MAX_FRAME + 4);
        let again = codec::encode_reply(&reply);
        assert_eq!(
            codec::decode(&again),
            Ok(Some((reply.clone(), again.len())))
        );
        if !matches!(
            reply,
            codec::Reply::Recipient(_) | codec::Reply::OptNeg { .. }
        ) {
            assert_eq!(again, rest[..used], "{reply:?}");
        }
        match &reply {
            codec::Reply::ReplyCode(text) => {
                if let Some(r) = client::reply_code(text) {
                    assert!((400..600).contains(&r.code), "{r:?}");
                    assert!(!r.text.contains(['\r', '\n']), "{r:?}");
                }
            }
            codec::Reply::AddHeader { name, value }
            | codec::Reply::ChangeHeader { name, value, .. }
            | codec::Reply::InsertHeader { name, value, .. } => {
                if let Ok(name) = edits::field_name(name)
                    && let Ok(value) = edits::field_value(&name, value)
                {
                    // One field, however the value was folded.
                    let field = format!("{name}: {value}\r\n");
                    let found = mta_smtp::headers::fields(field.as_bytes());
                    assert_eq!(found.len(), 1, "{field:?}");
                    assert_eq!(found[0].range.end, field.len(), "{field:?}");
                }
            }
            codec::Reply::ReplaceBody(body) => {
                if let Ok(b) = edits::body(body) {
                    assert!(!b.windows(2).any(|w| w[0] != b'\r' && w[1] == b'\n'));
                }
            }
            _ => {}
        }
        rest = &rest[used..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI: every committed corpus input (and every saved crash) runs through its target.
    #[test]
    fn corpus_replays() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let mut total = 0;
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let mut n = 0;
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                let bytes = std::fs::read(&path).expect("a corpus file");
                target(&bytes);
                n += 1;
            }
            assert!(n > 0, "corpus for {name} is empty");
            total += n;
        }
        assert!(total > 50, "only {total} corpus inputs");
    }
}
