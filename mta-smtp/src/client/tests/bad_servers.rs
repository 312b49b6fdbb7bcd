//! Servers that refuse, misbehave or go silent: RFC 5321 §3.1 (refused greeting), §4.2
//! (malformed replies), §4.5.3.1.5 (reply-line limit), §4.5.3.2 (timeouts), and replies to
//! nothing. None of it may panic or hang; each gives the error that names it.

use std::time::Duration;

use mta_core::address::ReversePath;

use super::super::{ClientError, Connection, OutgoingMessage, Phase, TlsPolicy};
use super::{Bytes, C, Close, FakeServer, ReadSome, S, Sleep, addr, sender, settings};

const GREETING: &str = "220 mx.example.test ESMTP\r\n";

async fn open_err(server: &FakeServer) -> ClientError {
    open_err_with(server, settings(TlsPolicy::Plaintext)).await
}

async fn open_err_with(server: &FakeServer, s: super::super::ClientSettings) -> ClientError {
    match Connection::open(&server.target("mx.example.test"), &s).await {
        Ok(_) => panic!("the connection should have failed"),
        Err(e) => e,
    }
}

fn protocol_reason(e: &ClientError) -> &str {
    match e {
        ClientError::Protocol { reason, .. } => reason,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn temporary_greeting_is_an_error_and_we_quit() {
    let server = FakeServer::start(
        vec![
            S("421 4.3.2 busy, try later\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let e = open_err(&server).await;
    assert!(
        matches!(&e, ClientError::Greeting(r) if r.code == 421),
        "{e:?}"
    );
    assert!(!e.is_permanent());
    assert_eq!(e.phase(), Phase::Greeting);
    assert_eq!(server.transcript().await, "QUIT\r\n");
}

#[tokio::test]
async fn garbage_instead_of_a_reply() {
    let server = FakeServer::start(vec![S("hello there\r\n")], None).await;
    let e = open_err(&server).await;
    assert!(protocol_reason(&e).contains("malformed"), "{e}");
    assert_eq!(e.phase(), Phase::Greeting);
}

#[tokio::test]
async fn code_out_of_range() {
    let server = FakeServer::start(
        vec![S(GREETING), C("EHLO client.test"), S("600 what\r\n")],
        None,
    )
    .await;
    let e = open_err(&server).await;
    assert!(protocol_reason(&e).contains("600"), "{e}");
    assert_eq!(e.phase(), Phase::Ehlo);
}

#[tokio::test]
async fn over_long_reply_line() {
    let mut line = b"220 ".to_vec();
    line.extend(std::iter::repeat_n(b'a', 600));
    line.extend_from_slice(b"\r\n");
    let server = FakeServer::start(vec![Bytes(line)], None).await;
    let e = open_err(&server).await;
    assert!(protocol_reason(&e).contains("512"), "{e}");
}

#[tokio::test]
async fn never_ending_multiline_reply() {
    let lines = "250-x\r\n".repeat(150).into_bytes();
    let server =
        FakeServer::start(vec![S(GREETING), C("EHLO client.test"), Bytes(lines)], None).await;
    let e = open_err(&server).await;
    assert!(protocol_reason(&e).contains("100 lines"), "{e}");
}

#[tokio::test]
async fn reply_to_nothing() {
    // A second reply right behind the greeting answers nothing we said.
    let server = FakeServer::start(vec![S("220 mx ESMTP\r\n250 surprise\r\n")], None).await;
    let e = open_err(&server).await;
    assert!(protocol_reason(&e).contains("answer no command"), "{e}");
}

#[tokio::test]
async fn nonsense_reply_to_data() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S("250 mx\r\n"),
            C("MAIL FROM:<a@example.org>"),
            S("250 ok\r\n"),
            C("RCPT TO:<b@example.test>"),
            S("250 ok\r\n"),
            C("DATA"),
            S("250 that is not how DATA works\r\n"),
        ],
        None,
    )
    .await;
    let mut conn = Connection::open(&server.target("mx"), &settings(TlsPolicy::Plaintext))
        .await
        .expect("open");
    let from = sender();
    let rcpts = [addr("b@example.test")];
    let msg = OutgoingMessage {
        from: &from,
        rcpts: &rcpts,
        prefix: b"",
        body: b"x\r\n",
        eight_bit: false,
        smtputf8: false,
        require_tls: false,
        dsn: None,
    };
    let e = conn.send(&msg).await.expect_err("DATA got 250");
    assert_eq!(e.phase(), Phase::Data);
    protocol_reason(&e);
}

#[tokio::test]
async fn server_closes_mid_data() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S("250 mx\r\n"),
            C("MAIL FROM:<>"),
            S("250 ok\r\n"),
            C("RCPT TO:<b@example.test>"),
            S("250 ok\r\n"),
            C("DATA"),
            S("354 go ahead\r\n"),
            ReadSome(100),
            Close,
        ],
        None,
    )
    .await;
    let mut conn = Connection::open(&server.target("mx"), &settings(TlsPolicy::Plaintext))
        .await
        .expect("open");
    let body = "a line of text that goes on for a while\r\n".repeat(50_000);
    let rcpts = [addr("b@example.test")];
    let msg = OutgoingMessage {
        from: &ReversePath::Null,
        rcpts: &rcpts,
        prefix: b"",
        body: body.as_bytes(),
        eight_bit: false,
        smtputf8: false,
        require_tls: false,
        dsn: None,
    };
    let e = conn.send(&msg).await.expect_err("the server hung up");
    assert!(
        matches!(
            &e,
            ClientError::Closed {
                phase: Phase::Body | Phase::FinalDot
            } | ClientError::Io {
                phase: Phase::Body | Phase::FinalDot,
                ..
            }
        ),
        "{e:?}"
    );
    conn.quit().await;
}

#[tokio::test]
async fn silent_server_times_out() {
    let server = FakeServer::start(vec![Sleep(Duration::from_secs(3))], None).await;
    let mut s = settings(TlsPolicy::Plaintext);
    s.timeouts.greeting = Duration::from_millis(200);
    let e = open_err_with(&server, s).await;
    assert!(
        matches!(
            e,
            ClientError::Timeout {
                phase: Phase::Greeting
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn slow_rcpt_reply_times_out() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S("250 mx\r\n"),
            C("MAIL FROM:<a@example.org>"),
            S("250 ok\r\n"),
            C("RCPT TO:<b@example.test>"),
            Sleep(Duration::from_secs(3)),
        ],
        None,
    )
    .await;
    let mut s = settings(TlsPolicy::Plaintext);
    s.timeouts.rcpt = Duration::from_millis(200);
    let mut conn = Connection::open(&server.target("mx"), &s)
        .await
        .expect("open");
    let from = sender();
    let rcpts = [addr("b@example.test")];
    let msg = OutgoingMessage {
        from: &from,
        rcpts: &rcpts,
        prefix: b"",
        body: b"x\r\n",
        eight_bit: false,
        smtputf8: false,
        require_tls: false,
        dsn: None,
    };
    let e = conn.send(&msg).await.expect_err("RCPT never answered");
    assert!(
        matches!(e, ClientError::Timeout { phase: Phase::Rcpt }),
        "{e:?}"
    );
}

#[tokio::test]
async fn connection_refused() {
    // Bind, learn the port, close: nothing listens there any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let target = super::super::Target {
        addr: listener.local_addr().expect("addr"),
        name: "mx".into(),
    };
    drop(listener);
    let e = match Connection::open(&target, &settings(TlsPolicy::Plaintext)).await {
        Ok(_) => panic!("nothing listens"),
        Err(e) => e,
    };
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert_eq!(e.phase(), Phase::Connect);
}
