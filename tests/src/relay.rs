//! The cast of the relay scenarios: a sender (`mx.example.test`, alice is its user) that
//! resolves through a [`TestDns`] and connects to every MX host on one shared port, and
//! receivers (`mx1.remote.test` on `127.0.0.2:P`, …) that only listen for port-25 mail.

use crate::{ALICE, ALICE_PASSWORD, MtaBuilder, SmtpClient, TestDns, TestMta, queue_id};

/// The user every receiver knows.
pub const REMOTE_BOB: &str = "bob@remote.test";
/// Bob's password at the receiver (only `mta user add` needs one).
pub const REMOTE_BOB_PASSWORD: &str = "bob-password-1";

/// A receiving MX: `hostname` (also its certificate's name), local domain `domains`, the
/// smtp listener on `ip:port` only.
pub fn receiver(hostname: &str, domains: &[&str], ip: &str, port: u16) -> MtaBuilder {
    let listen = format!("{ip}:{port}");
    MtaBuilder::new()
        .hostname(hostname)
        .local_domains(domains)
        .smtp(&[&listen])
        .submission(&[])
        .submissions(&[])
}

/// Starts a receiver for `remote.test` (see [`receiver`]) with bob as its user; `Err` when
/// it cannot listen (for [`crate::on_shared_port`]).
pub fn try_remote_receiver(hostname: &str, ip: &str, port: u16) -> Result<TestMta, String> {
    receiver(hostname, &["remote.test"], ip, port)
        .user(REMOTE_BOB, REMOTE_BOB_PASSWORD)
        .try_start()
}

/// The sender's config: `mx.example.test`, resolving through `dns`, MX hosts on `port`,
/// retries after 1 s then every 2 s; `outbound` are more keys for its `[outbound]` table.
/// More tables (`[outbound.tls."remote.test"]`) can be added with [`MtaBuilder::toml`].
pub fn sender(dns: &TestDns, port: u16, outbound: &str) -> MtaBuilder {
    sender_with_queue(dns, port, outbound, "")
}

/// [`sender`] with more keys for its `[queue]` table (`delay_warning`, `max_lifetime`).
pub fn sender_with_queue(dns: &TestDns, port: u16, outbound: &str, queue: &str) -> MtaBuilder {
    MtaBuilder::new().toml(&format!(
        "{}[outbound]\nport = {port}\n{outbound}\n\
         [queue]\nretry_first = \"1s\"\nretry_max = \"2s\"\n{queue}\n",
        dns.config_toml()
    ))
}

/// Starts `builder` and adds alice, who submits the test mail.
pub fn start_sender(builder: MtaBuilder) -> TestMta {
    let mta = builder.start();
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta
}

/// A session on `mta`'s submission port, after STARTTLS, EHLO and alice's AUTH PLAIN.
pub fn login(mta: &TestMta) -> SmtpClient {
    let mut c = SmtpClient::connect(mta.submission_addr());
    c.reply("the greeting");
    c.expect("EHLO client.example.test", 250);
    c.expect("STARTTLS", 220);
    c.upgrade_tls(&mta.cert_path());
    c.expect("EHLO client.example.test", 250);
    let auth = c.auth_plain(ALICE, ALICE_PASSWORD);
    assert_eq!(auth.code, 235, "AUTH as alice\n{}", c.transcript());
    c
}

/// Submits `message` from alice to `to` on `mta`'s submission port (STARTTLS, AUTH PLAIN);
/// panics unless it is queued; returns the queue id.
pub fn submit(mta: &TestMta, to: &[&str], message: &[u8]) -> String {
    let mut c = login(mta);
    let reply = c.send_message(ALICE, to, message);
    assert_eq!(
        reply.code,
        250,
        "the message was not queued\n{}",
        c.transcript()
    );
    let _ = c.send_line("QUIT");
    queue_id(&reply.to_string())
}

/// A small message from alice to `to` with `subject`.
pub fn message(to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: Alice <{ALICE}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Message-ID: <{}@example.test>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n\
         Hello from the relay tests.\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

/// Splits the first header field (with its continuation lines) off `bytes`: the field and
/// the rest. Panics when `bytes` does not start with `name:`.
#[track_caller]
pub fn split_first_field<'a>(bytes: &'a [u8], name: &str) -> (String, &'a [u8]) {
    assert!(
        bytes.starts_with(format!("{name}: ").as_bytes()),
        "expected a {name} field first: {:?}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
    );
    let mut end = 0;
    loop {
        let line_end = bytes[end..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| end + i + 2)
            .unwrap_or_else(|| panic!("no CRLF after the {name} field"));
        end = line_end;
        if !matches!(bytes.get(end), Some(b' ' | b'\t')) {
            break;
        }
    }
    (
        String::from_utf8_lossy(&bytes[..end]).into_owned(),
        &bytes[end..],
    )
}
