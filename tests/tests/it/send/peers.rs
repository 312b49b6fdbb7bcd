//! `mta send` against other peers: a hostile server whose replies carry terminal escapes,
//! Python's aiosmtpd (the null sender, several recipients, a data file), swaks (the same
//! commands for the same server and steps), and bad options, each refused in words.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mta_tests::{ALICE, ALICE_PASSWORD, run, secs};

use super::{BOB, commands, send, server};

/// A server that answers each command with text full of terminal escapes (an OSC window
/// title, a screen clear, BEL), and refuses every recipient; for `connections` sessions.
fn hostile_server(connections: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((conn, _)) = listener.accept() else {
                return;
            };
            hostile_session(conn);
        }
    });
    addr
}

fn hostile_session(conn: TcpStream) {
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let _ = writer.write_all(b"220 evil.test \x1b]0;pwned\x07\x1b[31mred\r\n");
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { break };
        let reply: &[u8] = match line.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
            "EHLO" => b"250-evil.test \x1b[5m\r\n250 8BITMIME\r\n",
            "MAIL" => b"250 ok\x07\r\n",
            "RCPT" => b"550 5.1.1 \x1b[2Jgone \x1b]8;;http://evil.test\x07link\r\n",
            "QUIT" => b"221 bye\x1b[0m\r\n",
            _ => b"500 what\r\n",
        };
        let _ = writer.write_all(reply);
        if line.eq_ignore_ascii_case("QUIT") {
            break;
        }
    }
}

#[test]
fn a_hostile_servers_escapes_come_out_escaped() {
    let addr = hostile_server(3).to_string();
    // The last run also shows that --quit-after rcpt still fails when no one was accepted.
    for verbose in [&[][..], &["-v"], &["--quit-after", "rcpt"]] {
        let base = [
            "--server", &addr, "--tls", "none", "--from", ALICE, "--to", BOB,
        ];
        let out = send(&[&base[..], verbose].concat(), &[], b"");
        let all = out.all();
        assert!(
            !all.contains(['\u{1b}', '\u{7}']),
            "a raw escape reached the terminal: {all:?}"
        );
        assert_eq!(out.code(), 24, "{out}");
        assert!(
            out.stdout.contains(&format!(
                "refused  <{BOB}>: 550 5.1.1 \\u{{1b}}[2Jgone \\u{{1b}}]8;;http://evil.test\\u{{7}}link"
            )),
            "{out}"
        );
        if verbose == ["-v"] {
            assert!(
                all.contains("220 evil.test \\u{1b}]0;pwned\\u{7}\\u{1b}[31mred"),
                "{all}"
            );
        }
    }
}

const AIOSMTPD: &str = r#"
import asyncio, json, os, sys
from aiosmtpd.smtp import SMTP

out = sys.argv[1]

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith('nobody@'):
            return '550 5.1.1 no such user'
        envelope.rcpt_tos.append(address)
        return '250 2.1.5 OK'

    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith('.json')])
        record = {'from': envelope.mail_from, 'to': envelope.rcpt_tos,
                  'data': envelope.original_content.decode('latin-1')}
        with open(os.path.join(out, f'.{n}.tmp'), 'w') as f:
            json.dump(record, f)
        os.rename(os.path.join(out, f'.{n}.tmp'), os.path.join(out, f'{n}.json'))
        return '250 2.0.0 saved as %d' % n

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Handler()), '127.0.0.1', 0)
    print('port', server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(300)  # a bound, should the test fail to kill it

asyncio.run(main())
"#;

/// Python's aiosmtpd on `127.0.0.1:0`, plaintext, refusing `nobody@…`, saving each message
/// as `DIR/N.json` (sender, recipients, data); killed when dropped.
struct Aiosmtpd {
    child: Child,
    addr: SocketAddr,
}

impl Aiosmtpd {
    fn start(dir: &Path) -> Aiosmtpd {
        let mut child = Command::new("python3")
            .args(["-c", AIOSMTPD])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 (aiosmtpd): {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.strip_prefix("port ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        let port = match rx.recv_timeout(secs(20)) {
            Ok(Some(p)) => p,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("aiosmtpd did not print its port within 20 s");
            }
        };
        Aiosmtpd {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for Aiosmtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn saved(dir: &Path, n: usize) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!("{n}.json")))
        .unwrap_or_else(|e| panic!("no message {n} saved by aiosmtpd: {e}"));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn aiosmtpd_gets_the_null_sender_several_recipients_and_a_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let smtpd = Aiosmtpd::start(dir.path());
    let addr = smtpd.addr.to_string();
    let base = ["--server", addr.as_str(), "--tls", "none"];

    let out = send(
        &[
            &base[..],
            &["--from", "<>", "--to", BOB, "--subject", "bounce"],
        ]
        .concat(),
        &[],
        b"",
    );
    out.assert_success("mta send --from '<>'");
    let m = saved(dir.path(), 0);
    assert_eq!(m["from"], "<>", "{m}");
    let data = m["data"].as_str().unwrap();
    assert!(
        data.contains("From: MAILER-DAEMON@mta-send.localhost\r\n"),
        "{data}"
    );

    let out = send(
        &[
            &base[..],
            &["--from", ALICE, "--to", BOB, "--to", "nobody@example.test"],
        ]
        .concat(),
        &[],
        b"",
    );
    assert_eq!(out.code(), 30, "{out}");
    assert!(
        out.stdout
            .contains("refused  <nobody@example.test>: 550 5.1.1 no such user"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("sent to 1 of 2 recipients: 250 2.0.0 saved as 1"),
        "{out}"
    );
    assert_eq!(saved(dir.path(), 1)["to"], serde_json::json!([BOB]));

    // No STARTTLS offered: 29; no AUTH offered: 28; both say what the server offers.
    let out = send(
        &[
            "--server",
            &addr,
            "--insecure",
            "--from",
            ALICE,
            "--to",
            BOB,
        ],
        &[],
        b"",
    );
    assert_eq!(out.code(), 29, "{out}");
    assert!(
        out.stderr
            .contains("the server does not offer STARTTLS here"),
        "{out}"
    );
    let out = send(
        &[&base[..], &["--user", ALICE, "--from", ALICE, "--to", BOB]].concat(),
        &[("MTA_PASSWORD", "x")],
        b"",
    );
    assert_eq!(out.code(), 28, "{out}");
    assert!(
        out.stderr.contains("the server offers no AUTH at all here"),
        "{out}"
    );

    let file = dir.path().join("message.txt");
    std::fs::write(
        &file,
        "Subject: file\r\nX-Mixed: lf\n\n..two dots\rcr only\n",
    )
    .unwrap();
    let out = send(
        &[
            &base[..],
            &[
                "--from",
                ALICE,
                "--to",
                BOB,
                "--data",
                &format!("@{}", file.display()),
            ],
        ]
        .concat(),
        &[],
        b"",
    );
    out.assert_success("mta send --data @FILE");
    assert_eq!(
        saved(dir.path(), 2)["data"],
        "Subject: file\r\nX-Mixed: lf\r\n\r\n..two dots\r\ncr only\r\n"
    );
}

/// swaks and `mta send -v` against the same server send the same commands, in full and for
/// each `--quit-after` both know.
#[test]
fn the_same_commands_as_swaks() {
    let mta = server();
    let addr = mta.submission_addr().to_string();
    let cert = mta.cert_path();
    let table: &[(Option<&str>, Option<&str>)] = &[
        (None, None),
        (Some("connect"), Some("CONNECT")),
        (Some("ehlo"), Some("FIRST-HELO")),
        (Some("starttls"), Some("TLS")),
        (Some("auth"), Some("AUTH")),
        (Some("mail"), Some("MAIL")),
        (Some("rcpt"), Some("RCPT")),
    ];
    for auth in ["PLAIN", "LOGIN"] {
        for (ours, theirs) in table {
            let mut swaks = Command::new("swaks");
            swaks
                .args([
                    "--server",
                    &addr,
                    "--tls",
                    "--auth",
                    auth,
                    "--auth-user",
                    ALICE,
                ])
                .args([
                    "--auth-password",
                    ALICE_PASSWORD,
                    "--from",
                    ALICE,
                    "--to",
                    BOB,
                ])
                .args(["--helo", "mta-send.localhost"]);
            if let Some(q) = theirs {
                swaks.args(["--quit-after", q]);
            }
            let swaks_out = run("swaks", &mut swaks, b"", secs(60));
            assert!(swaks_out.status.success(), "swaks: {swaks_out}");
            let mut args = vec![
                "-v",
                "--server",
                &addr,
                "--cafile",
                cert.to_str().unwrap(),
                "--tls-name",
                "localhost",
                "--user",
                ALICE,
                "--auth",
                if auth == "PLAIN" { "plain" } else { "login" },
                "--from",
                ALICE,
                "--to",
                BOB,
            ];
            if let Some(q) = ours {
                args.extend(["--quit-after", q]);
            }
            let out = send(&args, &[("MTA_PASSWORD", ALICE_PASSWORD)], b"");
            out.assert_success("mta send -v");
            assert_eq!(
                commands(&out.stderr),
                commands(&swaks_out.stdout),
                "AUTH {auth}, quit after {ours:?}\n--- ours ---\n{}\n--- swaks ---\n{}",
                out.stderr,
                swaks_out.stdout
            );
        }
    }
}

#[test]
fn bad_options_name_the_thing_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let m = missing.to_str().unwrap();
    let at_missing = format!("@{m}");
    let base = ["--from", ALICE, "--to", BOB];
    let table: &[(&[&str], &str)] = &[
        (&["--tls", "tls"], "invalid value 'tls' for '--tls <TLS>'"),
        (
            &["--server", "host:0"],
            "port \"0\" is not a number from 1 to 65535",
        ),
        (
            &["--server", "mail.example.org:25:1"],
            "more than one `:`: write HOST:PORT, or an IPv6 address",
        ),
        (&["--header", "no colon"], "expected 'Name: value'"),
        (&["--header", "X-A: b\nBcc: c@d.test"], "must be one line"),
        (&["--attach", m], "--attach"),
        (&["--body", &at_missing], "--body"),
        (&["--data", "Subject: x"], "give @FILE or - (stdin)"),
        (&["--data", &at_missing], "--data"),
        (
            &["--to", "not-an-address"],
            "is not an address like user@example.org",
        ),
        (&["--cafile", m], "--cafile"),
        (&["--user", ALICE, "--password-file", m], "--password-file"),
        (&["--quit-after", "auth"], "--quit-after auth needs --user"),
        (
            &["--tls", "none", "--insecure"],
            "--insecure has no effect with --tls none",
        ),
        (
            &["--tls", "none", "--quit-after", "starttls"],
            "--quit-after starttls needs TLS",
        ),
        (&["--timeout", "0"], "--timeout"),
        (
            &["--tls-name", "a b"],
            "--tls-name \"a b\" is not a host name",
        ),
        (&["--helo=-bad-"], "--helo \"-bad-\" is not a host name"),
        (
            &["--auth", "cram-md5", "--user", ALICE],
            "invalid value 'cram-md5' for '--auth",
        ),
    ];
    for (extra, want) in table {
        let mut args: Vec<&str> = base.to_vec();
        if !extra.contains(&"--server") {
            // Port 9 (discard): nothing must get as far as connecting anyway.
            args.extend(["--server", "127.0.0.1:9"]);
        }
        args.extend_from_slice(extra);
        let out = send(&args, &[("MTA_PASSWORD", "x")], b"");
        assert_eq!(out.code(), 2, "{extra:?}: {out}");
        assert!(
            out.stderr.contains(want),
            "{extra:?}: want {want:?} in {out}"
        );
        if extra.iter().any(|a| a.contains(m)) {
            assert!(
                out.stderr.contains(m),
                "{extra:?}: the path is not named: {out}"
            );
        }
    }
}

/// RFC 3207 §4.2: a server that sends more after its STARTTLS reply, before the handshake
/// (here a forged EHLO reply), is refused instead of having it read as if it came over TLS.
#[test]
fn text_sent_ahead_of_the_tls_handshake_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let Ok((conn, _)) = listener.accept() else {
            return;
        };
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut writer = conn.try_clone().unwrap();
        let _ = writer.write_all(b"220 injector.test ESMTP\r\n");
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { break };
            let reply: &[u8] = match line.to_ascii_uppercase().as_str() {
                l if l.starts_with("EHLO") => b"250-injector.test\r\n250 STARTTLS\r\n",
                "STARTTLS" => b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n",
                _ => b"221 bye\r\n",
            };
            if writer.write_all(reply).is_err() {
                break;
            }
        }
    });
    let out = send(
        &[
            "-v",
            "--server",
            &addr,
            "--insecure",
            "--from",
            ALICE,
            "--to",
            BOB,
        ],
        &[],
        b"",
    );
    assert_eq!(out.code(), 29, "{out}");
    assert!(out.stderr.contains("STARTTLS command injection"), "{out}");
    assert!(!out.stderr.contains("=== TLS started"), "{out}");
}
