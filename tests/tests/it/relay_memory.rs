//! Downgrade memory: remote.test took a message over verified TLS (its MX's certificate is
//! trusted through `ca_file`); when that MX is gone and the next one offers no STARTTLS (an
//! attacker stripping it looks the same), the message is deferred with 4.7.5, not sent in
//! plaintext, until `mta tls forget remote.test`; a message whose sender wrote
//! `TLS-Required: No` (RFC 8689 §5) goes anyway.

use std::net::SocketAddr;

use mta_tests::fake_smtp::{FakeSmtp, Script};
use mta_tests::relay::{REMOTE_BOB, message, sender, start_sender, submit, try_remote_receiver};
use mta_tests::{TestDns, on_shared_port, secs, wait_for};

#[test]
fn verified_tls_is_remembered_and_a_stripped_starttls_defers() {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--mx-host=remote.test,mx2.remote.test,20",
        "--host-record=mx1.remote.test,127.0.0.2",
        "--host-record=mx2.remote.test,127.0.0.3",
    ]);
    let (port, (mut rx, plain)) = on_shared_port("the receivers", |p| {
        let rx = try_remote_receiver("mx1.remote.test", "127.0.0.2", p)?;
        let plain = FakeSmtp::start(SocketAddr::from(([127, 0, 0, 3], p)), Script::default())?;
        Ok((rx, plain))
    });
    let policy = format!(
        "[outbound.tls.\"remote.test\"]\nmode = \"opportunistic\"\nca_file = {:?}\n",
        rx.cert_path().display().to_string()
    );
    let tx = start_sender(sender(&dns, port, "").toml(&policy));
    assert!(
        tx.mta(&["tls", "list"], b"")
            .stdout
            .contains("no domain is remembered")
    );

    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "first"));
    rx.wait_for_mail(REMOTE_BOB, 1, 10);
    wait_for(secs(10), "the memory to be logged", || {
        tx.log().contains("verified TLS remembered")
    });
    let listed = tx.mta(&["tls", "list"], b"");
    assert!(
        listed.stdout.contains("remote.test verified TLS at"),
        "{}",
        listed.all()
    );
    assert!(tx.log().contains("policy=opportunistic"), "{}", tx.log());

    // mx1 is gone; mx2 offers no STARTTLS.
    rx.kill9();
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "second"));
    let entry = tx.wait_for_deferral(&id, REMOTE_BOB, 1, secs(20));
    let last = entry["last_result"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(last.starts_with("4.7.5 "), "{last}");
    assert!(
        last.contains("policy=memory") && last.contains("mta tls forget remote.test"),
        "{last}"
    );
    assert!(
        plain.transactions().is_empty(),
        "nothing went out in plaintext: {}",
        plain.transcript()
    );

    let forgot = tx.mta(&["tls", "forget", "remote.test"], b"");
    forgot.assert_success("mta tls forget");
    assert!(
        forgot.stdout.contains("forgot remote.test"),
        "{}",
        forgot.all()
    );
    tx.mta(&["queue", "flush"], b"")
        .assert_success("mta queue flush");
    wait_for(secs(20), "the message at the plaintext MX", || {
        plain.transactions().len() == 1
    });
    tx.wait_for_empty_queue(secs(10));
    // Stopped server: the file is read directly and is empty of remote.test.
    let mut tx = tx;
    tx.stop();
    let offline = tx.mta(&["tls", "list"], b"");
    assert!(
        offline.stdout.contains("no domain is remembered"),
        "{}",
        offline.all()
    );
}
