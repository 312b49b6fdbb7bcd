//! Bad input at start-up: a clear error and a non-zero exit, never a panic or a half-started
//! server. And `mta check-config` on a good file.

use std::net::TcpListener;

use mta_tests::{KeptDir, Output, base_config, mta_with_config, serve_expecting_failure};

#[track_caller]
fn assert_clean_failure(out: &Output) {
    assert!(!out.status.success(), "mta serve should have failed: {out}");
    assert!(out.status.code().is_some(), "killed by a signal: {out}");
    assert!(
        !out.stderr.contains("panicked"),
        "panic instead of an error: {out}"
    );
    assert!(!out.stdout.contains("mta ready"), "it got ready: {out}");
}

#[test]
fn unknown_key_is_reported_with_its_position() {
    let dir = KeptDir::new();
    let text = base_config(dir.path(), "hostnmae = \"typo.example.test\"");
    let line = text
        .lines()
        .position(|l| l.starts_with("hostnmae"))
        .expect("the typo is in the config")
        + 1;
    let (config, out) = serve_expecting_failure(dir.path(), &text);
    assert_clean_failure(&out);
    assert_eq!(out.status.code(), Some(2), "{out}");
    let position = format!("{}:{line}:", config.display());
    assert!(
        out.stderr.contains(&position),
        "expected {position:?} in: {out}"
    );
    assert!(out.stderr.contains("hostnmae"), "{out}");

    let check = mta_with_config(&config, &["check-config"], b"");
    assert_eq!(check.status.code(), Some(2), "{check}");
    assert!(check.stderr.contains(&position), "{check}");
}

/// `mta serve` on a config whose smtp listener is a port another socket holds.
fn serve_on_a_taken_port() -> (std::net::SocketAddr, Output) {
    let dir = KeptDir::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = format!(
        "hostname = \"mx.example.test\"\ndata_dir = {:?}\nlocal_domains = [\"example.test\"]\n\
         [listen]\nsmtp = [\"{addr}\"]\nsubmission = [\"127.0.0.1:0\"]\nsubmissions = []\n",
        dir.path().join("data").display().to_string()
    );
    let (_, out) = serve_expecting_failure(dir.path(), &text);
    drop(taken);
    (addr, out)
}

#[test]
fn taken_port_fails_cleanly() {
    let (addr, out) = serve_on_a_taken_port();
    assert_clean_failure(&out);
    assert!(
        out.stderr.contains(&addr.to_string()),
        "expected {addr} in: {out}"
    );
    assert!(
        out.stderr.contains("listen.smtp"),
        "expected the config key in: {out}"
    );
}

#[test]
fn taken_port_error_states_the_cause_once() {
    // Errors are printed as a chain with {:#}, so a message must not repeat its
    // #[source] (`…: Address already in use (os error 98): Address already in use …`).
    let (_, out) = serve_on_a_taken_port();
    assert_clean_failure(&out);
    assert_eq!(
        out.stderr.matches("Address already in use").count(),
        1,
        "the cause is repeated: {out}"
    );
}

#[test]
fn data_dir_under_a_regular_file_fails_cleanly() {
    let dir = KeptDir::new();
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"a file, not a directory").unwrap();
    let data_dir = blocker.join("data");
    let text = base_config(dir.path(), "").replace(
        &format!("{:?}", dir.path().join("data").display().to_string()),
        &format!("{:?}", data_dir.display().to_string()),
    );
    assert!(text.contains("blocker"), "{text}");
    let (_, out) = serve_expecting_failure(dir.path(), &text);
    assert_clean_failure(&out);
    assert!(
        out.stderr.contains(&data_dir.display().to_string()),
        "{out}"
    );
    assert!(out.stderr.contains("data dir"), "{out}");
}

#[test]
fn missing_certificate_fails_naming_the_file() {
    let dir = KeptDir::new();
    let cert = dir.path().join("missing-cert.pem");
    let key = dir.path().join("missing-key.pem");
    let text = base_config(
        dir.path(),
        &format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    );
    let (_, out) = serve_expecting_failure(dir.path(), &text);
    assert_clean_failure(&out);
    assert!(out.stderr.contains("missing-cert.pem"), "{out}");
}

#[test]
fn check_config_prints_the_effective_config() {
    let dir = KeptDir::new();
    let config = dir.path().join("mta.toml");
    std::fs::write(&config, base_config(dir.path(), "")).unwrap();
    let out = mta_with_config(&config, &["check-config"], b"");
    out.assert_success("mta check-config");
    assert!(
        out.stdout.contains("hostname = \"mx.example.test\""),
        "{out}"
    );
    assert!(
        out.stdout.contains("local_domains = [\"example.test\"]"),
        "{out}"
    );
    // Keys left out show their defaults.
    assert!(out.stdout.contains("max_errors = 10"), "{out}");
}

#[test]
fn built_in_defaults_run_as_whoever_starts_them() {
    // The README's first command: no config file. As root it serves (loopback only) with a
    // warning; a config file would have to say `user` or `allow_root`.
    let dir = mta_tests::KeptDir::new();
    let mut child = std::process::Command::new(mta_tests::mta_bin())
        .arg("serve")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start mta serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    let read = std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(stdout);
        let _ = std::io::BufRead::read_line(&mut r, &mut first);
        first
    });
    let deadline = std::time::Instant::now() + mta_tests::secs(20);
    while !read.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let first = read.join().expect("reader");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The default ports may be taken by another program here: then the test cannot test
    // what it is for, and fails saying so.
    assert!(
        !stderr.contains("cannot listen on"),
        "a default port (2525, 2587, 2465) is taken on this machine; free it to run this test: {stderr}"
    );
    assert!(
        first.starts_with("mta ready smtp=127.0.0.1:2525"),
        "{first}\n{stderr}"
    );
    if nix_is_root() {
        assert!(stderr.contains("serving as root"), "{stderr}");
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
