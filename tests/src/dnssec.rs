//! [`SignedDns`]: nsd on a free `127.0.0.1` port (UDP and TCP), authoritative for a
//! DNSSEC-signed root zone and for unsigned child zones delegated from it, so that a
//! validating resolver whose only trust anchor is [`SignedDns::trust_anchor`] sees Secure,
//! Insecure and Bogus answers (DANE, RFC 7672 §2.1). Killed when the test ends.
//!
//! The root zone `.` holds an SOA, `. NS ns.root-servers.test.` (with its A record,
//! 127.0.0.1), the test's `signed` records, an NS record per unsigned child zone and the
//! `bogus` records. It is signed by `ldns-signzone` with NSEC (RFC 4034 §4), so absent names
//! and types are provably absent, with one key generated per server by `ldns-keygen`: an
//! ECDSA P-256 key (algorithm 13) with the SEP flag (257) that signs the DNSKEY RRset and
//! every other RRset (a combined signing key; no separate ZSK is needed). Signatures are
//! valid from a day ago to a week ahead.
//!
//! Each unsigned zone gets its own SOA and `NS ns.root-servers.test.` and is served by the
//! same nsd. The root delegates to it with an NS record and no DS record; since the NS
//! target lies outside the child zone no glue is needed. The root's signed NSEC at the
//! delegation (types NS, RRSIG, NSEC: no DS) proves the child insecure (RFC 4035 §5.2).
//!
//! A `bogus` record is signed with the rest of the root zone; then the signature of the
//! RRSIG covering its RRset (same owner and type) is damaged in the signed file (the last
//! octet of the signature flipped). The record's data is served exactly as the test wrote
//! it, but no signature over it verifies, so a validator must call its RRset Bogus (RFC 4035
//! §5.5). Any `signed` record with the same owner and type shares that fate, being in the
//! same RRset.
//!
//! nsd runs in the foreground (`-d`) as the current user (no privilege drop, no chroot, no
//! database, no nsd-control), with its pidfile, xfrd state and zone list in the temp dir and
//! its log on stderr, which this module keeps.
//!
//! # What hickory-resolver 0.26.3 (`validate = true`) makes of it
//!
//! Asserted by `tests/it/dnssec_server.rs`, with a resolver whose only name server is this
//! nsd and whose only trust anchor is [`SignedDns::trust_anchor`] (`lookup(name, type)`;
//! `mx_lookup` and `tlsa_lookup` are the same call), the second (cached) lookup giving the
//! same result as the first:
//!
//! - Signed RRset: `Ok(lookup)`, every record of the asked type in `lookup.answers()` has
//!   `proof == Proof::Secure`. The answers also hold the RRSIGs (filter on the type).
//! - RRset in an unsigned child zone: `Ok(lookup)`, every record `Proof::Insecure`.
//! - Bogus RRset: `Err(NetError::Dns(DnsError::DnssecBogus))`. Neither the records nor a
//!   proof are reachable, and the error is not cached (asked again, it is asked again).
//!   hickory's caching client turns the whole answer into this error as soon as one answer
//!   record is Bogus (`DnssecSummary::from_records`).
//! - Negative answers, in the signed zone and in an unsigned one alike:
//!   `Err(NetError::Dns(DnsError::NoRecordsFound(nr)))`, `nr.response_code` is `NXDomain`
//!   (no such name) or `NoError` (NODATA: the name exists, or is an empty non-terminal, with
//!   no record of that type). The proof is on the SOA: `nr.soa.as_ref().map(|s| s.proof)`
//!   is `Some(Proof::Secure)` in the signed zone (`nr.authorities` then holds the NSEC
//!   records, also Secure) and `Some(Proof::Insecure)` in an unsigned zone.
//!
//! Read in hickory's code, not exercised here: a signed negative answer whose NSEC proof
//! fails validation comes back as `DnssecBogus` when its proof is Bogus, or else as
//! `DnsError::Nsec { proof, .. }` with that (non-Secure) proof.

use std::fmt::Write as _;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::KeptDir;
use crate::dns::free_udp_tcp_port;
use crate::run;

/// The nsd binary (Debian package `nsd`).
const NSD: &str = "/usr/sbin/nsd";
/// nsd's zone file checker, from the same package.
const CHECKZONE: &str = "/usr/sbin/nsd-checkzone";
/// How long nsd may take to answer its first query.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `ldns-keygen`, `ldns-signzone` or `nsd-checkzone` may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long nsd may take to stop on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a port that turns out to be taken is replaced.
const PORT_TRIES: usize = 5;
/// The root zone's name server, whose A record (127.0.0.1) is in the root zone.
const NS_NAME: &str = "ns.root-servers.test.";
/// The SOA of every zone: name server, mailbox, serial, refresh, retry, expire, negative TTL.
const SOA_RDATA: &str = "ns.root-servers.test. hostmaster.root-servers.test. 1 3600 600 86400 300";
/// How far before now the signatures become valid (clock skew between tools and test).
const INCEPTION_BEFORE: Duration = Duration::from_secs(24 * 3600);
/// How far after now the signatures expire.
const EXPIRATION_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

type Shared = Arc<Mutex<Vec<u8>>>;

/// A running nsd serving a signed root zone and unsigned child zones.
pub struct SignedDns {
    child: Option<Child>,
    port: u16,
    anchor: PathBuf,
    log: Shared,
    dir: KeptDir,
}

impl SignedDns {
    /// Starts nsd with `signed` records in the signed root zone, `unsigned` child zones
    /// (zone name, its records) delegated insecurely from it, and `bogus` records whose
    /// signatures are broken after signing. Every record is one zone-file line with
    /// absolute names (`remote.test. 300 IN MX 10 mx1.remote.test.`), every zone name ends
    /// with a dot (`plain.test.`). Names at or below an unsigned zone belong in its records,
    /// not in `signed` (in the root zone they would be hidden by the delegation).
    ///
    /// Panics (with nsd's log) when it cannot start or answer within 10 s, or when a tool
    /// fails (a record nsd or ldns cannot parse, a bogus record with nothing to break).
    pub fn start(signed: &[&str], unsigned: &[(&str, &[&str])], bogus: &[&str]) -> SignedDns {
        let dir = KeptDir::new();
        let anchor = sign_root(dir.path(), signed, unsigned, bogus);
        check_zone(dir.path(), ".", SIGNED_ROOT);
        for (zone, records) in unsigned {
            let file = zone_file(zone);
            write(&dir.path().join(&file), &zone_text(zone, records));
            check_zone(dir.path(), zone, &file);
        }
        let mut dns = SignedDns {
            child: None,
            port: 0,
            anchor,
            log: Shared::default(),
            dir,
        };
        let mut last = String::new();
        for _ in 0..PORT_TRIES {
            let port = free_udp_tcp_port();
            match dns.try_start(port, unsigned) {
                Ok(()) => return dns,
                Err(e) if e.contains("in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("nsd: the port was taken {PORT_TRIES} times; last log:\n{last}");
    }

    fn try_start(&mut self, port: u16, unsigned: &[(&str, &[&str])]) -> Result<(), String> {
        let conf = self.dir.path().join("nsd.conf");
        write(&conf, &nsd_conf(self.dir.path(), port, unsigned));
        self.port = port;
        self.log = Shared::default();
        let mut child = Command::new(NSD)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            // nsd forks a transfer process and a server process: in a group of their own,
            // they are all stopped together (Drop).
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {NSD} (apt-get install nsd): {e}"));
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let keep = self.log.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut chunk) {
                keep.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(&chunk[..n]);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let _ = reader.join();
                return Err(format!(
                    "nsd exited at start-up ({status}), config {}:\n{}",
                    conf.display(),
                    self.log()
                ));
            }
            if self.answers() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                panic!(
                    "nsd did not answer on 127.0.0.1:{port} within {READY_TIMEOUT:?}, config {}:\n{}",
                    conf.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when it answers the root SOA over UDP and accepts TCP connections.
    fn answers(&self) -> bool {
        root_soa_answered(self.addr())
            && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The `[dns]` table pointing a server at it.
    pub fn config_toml(&self) -> String {
        format!("[dns]\nnameservers = [\"{}\"]\n", self.addr())
    }

    /// A file holding the root zone's key as one DNSKEY record in zone-file format
    /// (`. 3600 IN DNSKEY 257 3 13 <base64>`): the trust anchor for a validating resolver
    /// (`TrustAnchors::from_file`).
    pub fn trust_anchor(&self) -> &Path {
        &self.anchor
    }

    /// The root key's DS (SHA-256) as dnsmasq's `--trust-anchor` wants it:
    /// `.,KEYTAG,ALGORITHM,2,DIGEST`.
    pub fn root_ds(&self) -> String {
        let out = run(
            "ldns-key2ds",
            Command::new("ldns-key2ds")
                .args(["-n", "-2"])
                .arg(&self.anchor),
            b"",
            TOOL_TIMEOUT,
        );
        out.assert_success("ldns-key2ds");
        // `.	3600	IN	DS	43374 13 2 75b6…`
        let fields: Vec<&str> = out.stdout.split_whitespace().collect();
        match fields.as_slice() {
            [_, _, _, "DS", tag, alg, digest_type, digest] => {
                format!(".,{tag},{alg},{digest_type},{digest}")
            }
            _ => panic!("ldns-key2ds printed {:?}", out.stdout),
        }
    }

    /// What nsd logged so far (start-up, zone loading, errors).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }

    /// The signed root zone as nsd serves it (for assertion messages).
    pub fn root_zone(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(SIGNED_ROOT)).unwrap_or_default()
    }
}

impl Drop for SignedDns {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The whole group: nsd's main process exits without waiting for its server and
            // transfer processes. `kill` the command since the crate forbids unsafe code
            // (no libc::kill); the group's id is nsd's pid (`process_group(0)`).
            let group = format!("-{}", child.id());
            signal_group("-TERM", &group);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            // Whatever is left of the group (usually nothing).
            signal_group("-KILL", &group);
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- nsd on {} (zones in {}) ---\n{}",
                self.addr(),
                self.dir.path().display(),
                self.log()
            );
        }
    }
}

/// Sends `signal` to the process group `group` (`-PGID`); an empty group is no error here.
fn signal_group(signal: &str, group: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", group])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The root zone as written, before signing.
const ROOT: &str = "root.zone";
/// The root zone as signed (and with the bogus signatures broken): what nsd serves.
const SIGNED_ROOT: &str = "root.signed";

/// Writes and signs the root zone in `dir`, breaks the bogus records' signatures, and
/// writes the trust anchor; returns the anchor's path.
fn sign_root(dir: &Path, signed: &[&str], unsigned: &[(&str, &[&str])], bogus: &[&str]) -> PathBuf {
    let mut zone = zone_text(".", &[&format!("{NS_NAME} 3600 IN A 127.0.0.1")]);
    for (child, _) in unsigned {
        assert!(
            child.ends_with('.'),
            "zone name {child:?} must end with a dot"
        );
        writeln!(zone, "{child} 3600 IN NS {NS_NAME}").expect("writing to a String");
    }
    for record in signed.iter().chain(bogus) {
        writeln!(zone, "{record}").expect("writing to a String");
    }
    write(&dir.join(ROOT), &zone);

    let keygen = run(
        "ldns-keygen",
        Command::new("ldns-keygen")
            .args(["-a", "ECDSAP256SHA256", "-k", "."])
            .current_dir(dir),
        b"",
        TOOL_TIMEOUT,
    );
    keygen.assert_success("ldns-keygen (apt-get install ldnsutils)");
    let key = keygen.stdout.trim().to_string();

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    let inception = (now - INCEPTION_BEFORE).as_secs().to_string();
    let expiration = (now + EXPIRATION_AFTER).as_secs().to_string();
    run(
        "ldns-signzone",
        Command::new("ldns-signzone")
            .args([
                "-i",
                &inception,
                "-e",
                &expiration,
                "-f",
                SIGNED_ROOT,
                ROOT,
                &key,
            ])
            .current_dir(dir),
        b"",
        TOOL_TIMEOUT,
    )
    .assert_success(&format!("ldns-signzone of {}", dir.join(ROOT).display()));

    if !bogus.is_empty() {
        let path = dir.join(SIGNED_ROOT);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        write(&path, &break_signatures(&text, bogus));
    }

    let anchor = dir.join("root.anchor");
    let public = dir.join(format!("{key}.key"));
    let public = std::fs::read_to_string(&public)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", public.display()));
    write(&anchor, &anchor_record(&public));
    anchor
}

/// Panics with nsd's complaint unless `file` in `dir` is a valid zone file for `zone`: nsd
/// itself would only log the error and serve the other zones.
fn check_zone(dir: &Path, zone: &str, file: &str) {
    run(
        "nsd-checkzone",
        Command::new(CHECKZONE).args([zone, file]).current_dir(dir),
        b"",
        TOOL_TIMEOUT,
    )
    .assert_success(&format!(
        "nsd-checkzone {zone} {}",
        dir.join(file).display()
    ));
}

/// `text` (a signed zone file) with the signature of every RRSIG covering a `bogus`
/// record's owner and type damaged.
fn break_signatures(text: &str, bogus: &[&str]) -> String {
    let targets: Vec<(String, String)> = bogus.iter().map(|r| owner_and_type(r)).collect();
    let mut broken = vec![false; targets.len()];
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // owner ttl class RRSIG covered algorithm labels ttl expiration inception tag signer
        // signature…
        let hit = (fields.len() > 12 && fields[3] == "RRSIG")
            .then(|| {
                let owner = fields[0].to_ascii_lowercase();
                let covered = fields[4].to_ascii_uppercase();
                targets
                    .iter()
                    .position(|(o, t)| *o == owner && *t == covered)
            })
            .flatten();
        match hit {
            Some(i) => {
                broken[i] = true;
                let mut signature = BASE64.decode(fields[12..].concat()).unwrap_or_else(|e| {
                    panic!("ldns-signzone wrote a bad signature ({e}): {line}")
                });
                let last = signature.last_mut().expect("a signature is not empty");
                *last ^= 0x01;
                writeln!(
                    out,
                    "{} {}",
                    fields[..12].join(" "),
                    BASE64.encode(signature)
                )
                .expect("writing to a String");
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (record, done) in bogus.iter().zip(broken) {
        assert!(
            done,
            "bogus record {record:?} got no signature to break (is it below a delegation?):\n{text}"
        );
    }
    out
}

/// The owner (lower case, absolute) and type (upper case) of a zone-file record line.
fn owner_and_type(record: &str) -> (String, String) {
    let mut fields = record.split_whitespace();
    let owner = fields.next().unwrap_or_default().to_ascii_lowercase();
    assert!(
        owner.ends_with('.'),
        "record {record:?} must start with an absolute owner name"
    );
    // [TTL] [class] type, in either order (RFC 1035 §5.1).
    let rtype = fields
        .find(|f| {
            !f.bytes().all(|b| b.is_ascii_digit())
                && !["IN", "CH", "HS"].contains(&f.to_ascii_uppercase().as_str())
        })
        .unwrap_or_else(|| panic!("record {record:?} has no type"))
        .to_ascii_uppercase();
    (owner, rtype)
}

/// The trust anchor line from `ldns-keygen`'s public key file
/// (`.\tIN\tDNSKEY\t257 3 13 <base64> ;{id = …}`): the record alone, with a TTL, in the
/// usual `TTL class type` order (`. 3600 IN DNSKEY 257 3 13 <base64>`).
fn anchor_record(public: &str) -> String {
    let record = public.split(';').next().unwrap_or_default();
    let fields: Vec<&str> = record.split_whitespace().collect();
    let rdata = fields
        .iter()
        .position(|f| *f == "DNSKEY")
        .filter(|&at| fields[0] == "." && fields.len() >= at + 5)
        .map(|at| fields[at + 1..].join(" "))
        .unwrap_or_else(|| panic!("ldns-keygen wrote an unexpected public key: {public}"));
    format!(". 3600 IN DNSKEY {rdata}\n")
}

/// A zone file for `zone`: its SOA and NS, then `records`.
fn zone_text(zone: &str, records: &[&str]) -> String {
    let mut text = format!(
        "$ORIGIN {zone}\n$TTL 300\n{zone} 3600 IN SOA {SOA_RDATA}\n{zone} 3600 IN NS {NS_NAME}\n"
    );
    for record in records {
        writeln!(text, "{record}").expect("writing to a String");
    }
    text
}

/// The file an unsigned zone is kept in (`plain.test.` → `plain.test.zone`).
fn zone_file(zone: &str) -> String {
    format!("{}.zone", zone.trim_end_matches('.'))
}

/// nsd's configuration: every file in `dir`, listening on 127.0.0.1@`port` only.
fn nsd_conf(dir: &Path, port: u16, unsigned: &[(&str, &[&str])]) -> String {
    let dir = dir.display();
    let mut conf = format!(
        "server:
    ip-address: 127.0.0.1@{port}
    do-ip6: no
    reuseport: no
    server-count: 1
    username: \"\"
    chroot: \"\"
    database: \"\"
    zonesdir: \"{dir}\"
    zonelistfile: \"{dir}/zone.list\"
    xfrdfile: \"{dir}/xfrd.state\"
    xfrdir: \"{dir}\"
    pidfile: \"{dir}/nsd.pid\"
    verbosity: 2
remote-control:
    control-enable: no
zone:
    name: \".\"
    zonefile: \"{SIGNED_ROOT}\"
"
    );
    for (zone, _) in unsigned {
        let file = zone_file(zone);
        write!(
            conf,
            "zone:\n    name: \"{zone}\"\n    zonefile: \"{file}\"\n"
        )
        .expect("writing to a String");
    }
    conf
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// True when `addr` answers a query for the root SOA over UDP within 200 ms, NOERROR with
/// at least one answer.
fn root_soa_answered(addr: SocketAddr) -> bool {
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    if socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_err()
    {
        return false;
    }
    let id: u16 = 0x4d55;
    // Header (RD set, one question), the root name, type SOA (6), class IN.
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1]);
    if socket.send_to(&query, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    let Ok(n) = socket.recv(&mut buf) else {
        return false;
    };
    // Our id, QR set, RCODE 0, ANCOUNT > 0.
    n >= 12
        && buf[..2] == id.to_be_bytes()
        && buf[2] & 0x80 != 0
        && buf[3] & 0x0f == 0
        && buf[6..8] != [0, 0]
}
