//! SIGTERM: a clean stop with exit code 0, and a polite 421 to idle sessions.

use mta_tests::{SmtpClient, TestMta, secs};

#[test]
fn sigterm_stops_cleanly_and_idle_sessions_get_421() {
    let mut mta = TestMta::start("shutdown_grace = \"3s\"\n");
    let mut idle = SmtpClient::connect(mta.smtp_addr());
    idle.reply("the greeting");
    idle.expect("EHLO client.test", 250);
    let mut tls = SmtpClient::connect(mta.submissions_addr());
    tls.upgrade_tls(&mta.cert_path());
    tls.reply("the greeting over TLS");
    tls.expect("EHLO client.test", 250);

    // Bounded by the grace period (3 s), the server's extra second and some slack.
    let status = mta.stop_within(secs(8));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}\n{}",
        mta.log()
    );

    for (name, client) in [("smtp", &mut idle), ("submissions", &mut tls)] {
        let reply = client.reply("421 on shutdown");
        assert!(
            reply.matches(421, Some("4.3.2")),
            "{name}: expected 421 4.3.2, got {reply}\n{}",
            client.transcript()
        );
        assert!(client.is_closed(), "{name}: still open after 421");
    }
    let log = mta.log();
    assert!(!log.contains("panicked"), "{log}");
}
