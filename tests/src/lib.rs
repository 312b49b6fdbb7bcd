//! The end-to-end test harness: a real `mta serve` on `127.0.0.1:0` in a temp dir
//! ([`TestMta`]), bounded waits ([`wait_for`]), external commands with a deadline
//! ([`run`]), a small raw SMTP client over TCP or TLS ([`SmtpClient`]) and the dialog-file
//! runner ([`dialog`]). For relaying: dnsmasq ([`TestDns`]), servers with their own names and
//! addresses ([`MtaBuilder`], [`relay`]), a shared port on `127.0.0.2`, `127.0.0.3`…
//! ([`on_shared_port`]), a scripted receiver ([`fake_smtp`]) and DSN parsing ([`dsn`]). For
//! local delivery over LMTP: a real LMTP server, Python's aiosmtpd ([`LmtpServer`]). For
//! durability: concurrent submitters ([`load`]), a receiver that counts and misbehaves
//! ([`counting_smtp`]), a DNS server that never answers ([`silent_dns`]) and `mta serve`
//! under strace ([`strace`]). The scenarios live in `tests/it/`, one binary (one link is
//! cheap on two cores).
//!
//! Everything here panics with a message naming what went wrong: these are test helpers,
//! and a panic is how a test fails.

// Functions stay under the line limit in clippy.toml (test code is exempt).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod builder;
pub mod certs;
pub mod counting_smtp;
pub mod dialog;
mod dns;
pub mod dnssec;
pub mod dovecot;
pub mod dsn;
pub mod fake_smtp;
pub mod faults;
mod lmtp;
pub mod load;
mod maildir;
pub mod milter;
mod net;
pub mod pebble;
pub mod postfix;
mod process;
pub mod relay;
pub mod rspamd;
mod server;
pub mod silent_dns;
mod smtp;
pub mod strace;
pub mod system;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use builder::MtaBuilder;
pub use dns::{ServfailDns, TestDns, qtype, rcode};
pub use dnssec::SignedDns;
pub use lmtp::LmtpServer;
pub use maildir::{
    Delivered, assert_same_bytes, crlf, parse_delivered, queue_id, read_crlf, read_delivered,
};
pub use net::{MX_ADDRS, Trap, on_shared_port, shared_port};
pub use process::{Output, run};
pub use server::{
    KeptDir, TestMta, base_config, mta_with_config, serve_expecting_failure, with_inbound_default,
};
pub use smtp::{Reply, SmtpClient, tls_config};

/// The user every harness server knows (dialog files log in as alice).
pub const ALICE: &str = "alice@example.test";
/// Alice's password.
pub const ALICE_PASSWORD: &str = "alice-password-1";

/// `n` seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The `mta` binary under test: `$MTA_BIN`, or `target/debug/mta` found from this test
/// binary's own path (`target/debug/deps/it-…`).
///
/// # Panics
/// When the binary does not exist: the tests never build it themselves.
pub fn mta_bin() -> PathBuf {
    let path = match std::env::var_os("MTA_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe().expect("the test binary knows its own path");
            // target/debug/deps/it-HASH → target/debug/mta
            let deps = exe.parent().expect("the test binary is in a directory");
            let profile = if deps.ends_with("deps") {
                deps.parent().expect("deps/ has a parent")
            } else {
                deps
            };
            profile.join("mta")
        }
    };
    assert!(
        path.is_file(),
        "the mta binary {} does not exist: build it with cargo build -p mta-bin \
         (scripts/test.sh does), or point MTA_BIN at it",
        path.display()
    );
    path
}

/// Polls `cond` every 25 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
