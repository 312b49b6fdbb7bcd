//! REQUIRETLS (RFC 8689): a message submitted with `MAIL FROM:<…> REQUIRETLS` is relayed only
//! over TLS with a verified certificate to a server that offers REQUIRETLS (and passes the
//! parameter on); else it is returned with `5.7.30`, never sent with less. `TLS-Required: No`
//! waives the downgrade memory.

use std::net::SocketAddr;

use mta_tests::dsn::read_dsn;
use mta_tests::fake_smtp::{FakeSmtp, Script};
use mta_tests::relay::{REMOTE_BOB, login, sender, start_sender, try_remote_receiver};
use mta_tests::{ALICE, TestDns, TestMta, on_shared_port, read_delivered, secs, wait_for};

fn dns() -> TestDns {
    TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ])
}

/// Submits from alice with `MAIL FROM:<alice> REQUIRETLS`; panics unless it is queued.
pub(crate) fn submit_requiretls(tx: &TestMta, subject: &str) {
    let mut c = login(tx);
    c.expect(&format!("MAIL FROM:<{ALICE}> REQUIRETLS"), 250);
    c.expect(&format!("RCPT TO:<{REMOTE_BOB}>"), 250);
    c.expect("DATA", 354);
    let msg = format!(
        "From: <{ALICE}>\r\nTo: <{REMOTE_BOB}>\r\nSubject: {subject}\r\n\r\nsecret\r\n.\r\n"
    );
    c.send_raw(msg.as_bytes()).unwrap();
    assert_eq!(
        c.reply("the reply to the dot").code,
        250,
        "{}",
        c.transcript()
    );
}

#[test]
fn requiretls_goes_over_verified_tls_to_a_requiretls_server() {
    let dns = dns();
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let trusted = format!(
        "[outbound.tls.\"remote.test\"]\nmode = \"opportunistic\"\nca_file = {:?}\n",
        rx.cert_path().display().to_string()
    );
    let tx = start_sender(sender(&dns, port, "").toml(&trusted));
    submit_requiretls(&tx, "over verified TLS");
    let files = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    let d = read_delivered(&files[0]);
    assert!(d.received.contains("ESMTPS"), "{}", d.received);
    wait_for(secs(10), "the delivery to be logged", || {
        tx.log().contains("policy=requiretls")
    });
    // Verified TLS to a receiver that offers REQUIRETLS over TLS (MAIL FROM carries the
    // parameter: client::transaction's unit tests show the line).
    assert!(
        tx.log().contains(" verified policy=requiretls"),
        "{}",
        tx.log()
    );
}

#[test]
fn requiretls_without_a_verified_certificate_is_returned_with_5_7_30() {
    let dns = dns();
    let (port, _rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    // No ca_file: the receiver's self-signed certificate does not verify.
    let tx = start_sender(sender(&dns, port, ""));
    submit_requiretls(&tx, "must not leak");
    let bounces = tx.wait_for_mail(ALICE, 1, 20);
    let bounce = mta_tests::read_crlf(&bounces[0]);
    let dsn = read_dsn(&bounces[0]);
    let bob = dsn.recipient(REMOTE_BOB);
    assert_eq!(
        bob.expect("Status"),
        "5.7.30",
        "{}",
        String::from_utf8_lossy(&bounce)
    );
    assert!(
        !String::from_utf8_lossy(&bounce).contains("secret"),
        "the DSN returns headers only"
    );
}

#[test]
fn requiretls_to_a_server_without_it_is_returned() {
    // A plaintext-only server (no STARTTLS, no REQUIRETLS).
    let dns = dns();
    let (port, fake) = on_shared_port("the fake receiver", |p| {
        FakeSmtp::start(SocketAddr::from(([127, 0, 0, 2], p)), Script::default())
    });
    let tx = start_sender(sender(&dns, port, ""));
    submit_requiretls(&tx, "nowhere to go");
    let bounces = tx.wait_for_mail(ALICE, 1, 20);
    let dsn = read_dsn(&bounces[0]);
    assert_eq!(dsn.recipient(REMOTE_BOB).expect("Status"), "5.7.30");
    assert!(fake.transactions().is_empty(), "{}", fake.transcript());
}
