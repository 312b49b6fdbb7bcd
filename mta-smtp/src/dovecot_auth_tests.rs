use std::net::Ipv4Addr;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use super::*;

/// The model of one field's unescaping, by splitting at `\x01`: the first piece as it is,
/// each later piece must start with one of the five escape letters.
fn model_unescape(field: &str) -> Option<String> {
    let mut pieces = field.split('\x01');
    let mut out = pieces.next().unwrap_or("").to_string();
    for piece in pieces {
        let mut chars = piece.chars();
        let c = match chars.next()? {
            '0' => '\0',
            '1' => '\x01',
            't' => '\t',
            'r' => '\r',
            'n' => '\n',
            _ => return None,
        };
        out.push(c);
        out.push_str(chars.as_str());
    }
    Some(out)
}

fn model_parse(line: &[u8]) -> Option<Line> {
    let text = String::from_utf8(line.to_vec()).ok()?;
    let fields: Vec<&str> = text.split('\t').collect();
    let mut unescaped = Vec::new();
    for f in &fields {
        unescaped.push(model_unescape(f)?);
    }
    let command = unescaped.remove(0);
    if command.is_empty() {
        return None;
    }
    Some(Line {
        command,
        args: unescaped,
    })
}

/// Lines mostly of the protocol's own pieces, so escapes and tabs are common.
fn line() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            Just(b"\t".to_vec()),
            Just(b"\x01".to_vec()),
            Just(b"\x01t".to_vec()),
            Just(b"\x010".to_vec()),
            Just(b"\x01x".to_vec()),
            Just(b"OK".to_vec()),
            Just(b"user=a@b.test".to_vec()),
            Just("é".as_bytes().to_vec()),
            Just(vec![0xff]),
            any::<u8>().prop_map(|b| vec![b]),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn parse_line_matches_the_model(line in line()) {
        prop_assert_eq!(parse_line(&line), model_parse(&line));
    }

    #[test]
    fn escaped_fields_read_back(fields in proptest::collection::vec(".{0,8}", 0..5)) {
        let mut text = "OK".to_string();
        for f in &fields {
            text.push('\t');
            text.push_str(&escape(f));
        }
        let line = parse_line(text.as_bytes()).unwrap();
        prop_assert_eq!(line.args, fields);
    }
}

const HANDSHAKE: &str = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n\
                         SPID\t12\nCUID\t1\nCOOKIE\t0123abcd\nDONE\n";

/// A fake auth service that reads what we send and answers `script` (after the handshake
/// when `handshake`); returns what it read.
async fn fake(
    script: Vec<u8>,
    handshake: bool,
) -> (tempfile::TempDir, tokio::task::JoinHandle<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth-client");
    let listener = UnixListener::bind(&path).unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        if handshake {
            s.write_all(HANDSHAKE.as_bytes()).await.unwrap();
        }
        let mut seen = vec![0u8; 4096];
        let mut got = Vec::new();
        // Read until our AUTH line has come (or the client goes), then answer.
        while !got.windows(5).any(|w| w == b"AUTH\t") || !got.ends_with(b"\n") {
            let n = s.read(&mut seen).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&seen[..n]);
            if !handshake {
                break;
            }
        }
        let _ = s.write_all(&script).await;
        // Hold the connection until the client gives up.
        let _ = s.read(&mut seen).await;
        got
    });
    (dir, task)
}

const CLIENT: Client = Client {
    ip: std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
    secured: true,
};

async fn ask(script: &str) -> (Result<Verified, DovecotError>, String) {
    let (dir, task) = fake(script.as_bytes().to_vec(), true).await;
    let result = verify(
        &dir.path().join("auth-client"),
        "alice@example.test",
        "pw",
        CLIENT,
    )
    .await;
    let sent = String::from_utf8(task.await.unwrap()).unwrap();
    (result, sent)
}

#[tokio::test]
async fn ok_fail_and_temp() {
    let (r, sent) = ask("OK\t1\tuser=Alice@Example.test\n").await;
    assert!(
        matches!(r, Ok(Verified::User(ref a)) if a.to_string() == "Alice@example.test"),
        "{r:?}"
    );
    assert!(sent.starts_with("VERSION\t1\t2\nCPID\t"), "{sent}");
    let resp = B64.encode("\0alice@example.test\0pw");
    assert!(
        sent.ends_with(&format!(
            "AUTH\t1\tPLAIN\tservice=smtp\tno-penalty\tsecured\trip=192.0.2.7\tresp={resp}\n"
        )),
        "{sent}"
    );
    let (r, _) = ask("FAIL\t1\tuser=alice@example.test\n").await;
    assert!(matches!(r, Ok(Verified::Rejected)), "{r:?}");
    let (r, _) = ask("FAIL\t1\ttemp\n").await;
    assert!(matches!(r, Err(DovecotError::Temporary)), "{r:?}");
}

#[tokio::test]
async fn nonsense_is_never_a_login() {
    for script in [
        "OK\t2\tuser=alice@example.test\n".to_string(),
        "CONT\t1\t\n".to_string(),
        "OK\t1\tuser=not an address\n".to_string(),
        "hello there\n".to_string(),
        "\x01x\n".to_string(),
        format!("OK\t1\tuser={}\n", "a".repeat(MAX_LINE)),
    ] {
        let (r, _) = ask(&script).await;
        assert!(
            matches!(r, Err(DovecotError::Protocol(_))),
            "{script:.40}: {r:?}"
        );
    }
}

#[tokio::test]
async fn a_bad_handshake_is_refused() {
    for script in [
        "VERSION\t2\t0\nDONE\n".to_string(),
        "VERSION\t1\t2\nMECH\tLOGIN\nDONE\n".to_string(),
        "MECH\tPLAIN\n".repeat(MAX_HANDSHAKE_LINES + 1),
    ] {
        let (dir, _task) = fake(script.clone().into_bytes(), false).await;
        let r = verify(&dir.path().join("auth-client"), "a@b.test", "pw", CLIENT).await;
        assert!(
            matches!(r, Err(DovecotError::Protocol(_))),
            "{script:.40}: {r:?}"
        );
    }
}

#[tokio::test]
async fn a_missing_socket_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = verify(&dir.path().join("nothing"), "a@b.test", "pw", CLIENT).await;
    assert!(matches!(r, Err(DovecotError::Io { .. })), "{r:?}");
}

#[tokio::test]
async fn a_service_that_hangs_times_out() {
    // It takes the connection and says nothing.
    let (dir, _task) = fake(Vec::new(), false).await;
    let r = verify(&dir.path().join("auth-client"), "a@b.test", "pw", CLIENT).await;
    assert!(matches!(r, Err(DovecotError::Timeout(_))), "{r:?}");
}

#[tokio::test]
async fn a_nul_never_reaches_the_service() {
    // The socket does not exist: asking would be an error, not a refusal.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing");
    for (login, password) in [("a@b.test\0pw", "x"), ("a@b.test", "p\0w"), ("", "pw")] {
        let r = verify(&socket, login, password, CLIENT).await;
        assert!(matches!(r, Ok(Verified::Rejected)), "{login:?}: {r:?}");
    }
}

#[tokio::test]
async fn a_verdict_sent_before_our_auth_is_not_a_login() {
    // The handshake and an `OK` in one write, before our AUTH was sent: that `OK` answers
    // nothing we asked.
    for verdict in ["OK\t1\tuser=a@b.test\n", "FAIL\t1\n"] {
        let script = format!("{HANDSHAKE}{verdict}");
        let (dir, _task) = fake(script.into_bytes(), false).await;
        let r = verify(&dir.path().join("auth-client"), "a@b.test", "pw", CLIENT).await;
        assert!(
            matches!(r, Err(DovecotError::Protocol(_))),
            "{verdict:?}: {r:?}"
        );
    }
}

#[tokio::test]
async fn a_temporary_failure_by_its_code_is_not_a_refusal() {
    // Newer Dovecot marks an internal failure (its passdb unreachable, say) with
    // `code=temp_fail`, not the older `temp` flag: not the client's wrong password.
    let (r, _) = ask("FAIL\t1\tuser=alice@example.test\tcode=temp_fail\n").await;
    assert!(matches!(r, Err(DovecotError::Temporary)), "{r:?}");
    let (r, _) = ask("FAIL\t1\tuser=alice@example.test\tcode=user_disabled\n").await;
    assert!(matches!(r, Ok(Verified::Rejected)), "{r:?}");
}

#[tokio::test]
async fn an_ok_that_is_no_login_here_is_not_a_login() {
    // `nologin`: the password matched but the user may not log in. `proxy`: the login is
    // for another server (which may check the password itself: `nopassword` in the passdb).
    for (script, want_temp) in [
        ("OK\t1\tuser=a@b.test\tnologin\treason=maintenance\n", false),
        ("OK\t1\tuser=a@b.test\tnologin\ttemp\n", true),
        ("OK\t1\tuser=a@b.test\tproxy\thost=192.0.2.9\n", true),
        ("OK\t1\tuser=a@b.test\tproxy=y\thost=192.0.2.9\n", true),
        ("OK\t1\tuser=a@b.test\tproxy_maybe\thost=192.0.2.9\n", true),
    ] {
        let (r, _) = ask(script).await;
        let ok = match r {
            Ok(Verified::Rejected) => !want_temp,
            Err(_) => want_temp,
            Ok(Verified::User(_)) => false,
        };
        assert!(ok, "{script:?}: {r:?}");
    }
}
