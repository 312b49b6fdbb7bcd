//! `mta user`: add, list, del; only local domains; a user added while the server runs can
//! log in at once.

use mta_tests::{KeptDir, SmtpClient, TestMta, base_config, mta_with_config};

#[test]
fn add_list_del() {
    let dir = KeptDir::new();
    let config = dir.path().join("mta.toml");
    std::fs::write(&config, base_config(dir.path(), "")).unwrap();
    let mta = |args: &[&str], stdin: &[u8]| mta_with_config(&config, args, stdin);

    let list = mta(&["user", "list"], b"");
    list.assert_success("mta user list");
    assert_eq!(list.stdout, "", "{list}");

    mta(
        &["user", "add", "Carol@Example.test", "--password-stdin"],
        b"carol-password-1\n",
    )
    .assert_success("mta user add");
    let list = mta(&["user", "list"], b"");
    list.assert_success("mta user list");
    assert_eq!(
        list.stdout.trim().to_lowercase(),
        "carol@example.test",
        "{list}"
    );

    let again = mta(
        &["user", "add", "carol@example.test", "--password-stdin"],
        b"other-password-2\n",
    );
    assert!(!again.status.success(), "a second add must fail: {again}");
    assert!(again.stderr.contains("already exists"), "{again}");

    mta(&["user", "del", "carol@example.test"], b"").assert_success("mta user del");
    let list = mta(&["user", "list"], b"");
    list.assert_success("mta user list");
    assert_eq!(list.stdout, "", "{list}");

    let gone = mta(&["user", "del", "carol@example.test"], b"");
    assert!(
        !gone.status.success(),
        "deleting a missing user must fail: {gone}"
    );
}

#[test]
fn add_in_a_non_local_domain_is_refused() {
    let dir = KeptDir::new();
    let config = dir.path().join("mta.toml");
    std::fs::write(&config, base_config(dir.path(), "")).unwrap();
    let out = mta_with_config(
        &config,
        &["user", "add", "dave@elsewhere.test", "--password-stdin"],
        b"dave-password-1\n",
    );
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("not a local domain"), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    let list = mta_with_config(&config, &["user", "list"], b"");
    assert_eq!(list.stdout, "", "{list}");
}

#[test]
fn user_added_while_running_can_log_in() {
    let mta = TestMta::start("");
    let login = |password: &str| {
        let mut c = SmtpClient::connect_tls(mta.submissions_addr(), &mta.cert_path());
        c.reply("the greeting");
        c.expect("EHLO client.test", 250);
        let plain = format!("\0erin@example.test\0{password}");
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(plain);
        c.command(&format!("AUTH PLAIN {b64}"))
    };
    assert_eq!(login("erin-password-1").code, 535);
    mta.add_user("erin@example.test", "erin-password-1");
    let reply = login("erin-password-1");
    assert!(reply.matches(235, Some("2.7.0")), "{reply}\n{}", mta.log());
    mta.mta(&["user", "del", "erin@example.test"], b"")
        .assert_success("mta user del");
    assert_eq!(login("erin-password-1").code, 535);
}
