//! LMTP (RFC 2033) against scripted servers over TCP and a Unix socket: LHLO, pipelined and
//! lockstep transactions, one reply per accepted recipient after the dot, and what a server
//! that hangs up half-way through those replies leaves decided.

use std::path::PathBuf;

use mta_core::address::{Address, ReversePath};
use mta_core::config::LmtpAddress;
use tokio::net::UnixListener;

use super::super::TlsPolicy;
use super::super::lmtp::{deliver, results};
use super::super::{ClientError, OutgoingMessage, RcptResult, ServerReply};
use super::{C, Close, Data, FakeServer, S, Step, addr, run, sender, settings};

const GREETING: &str = "220 lmtp.test LMTP ready\r\n";
const LHLO_PIPELINING: &str =
    "250-lmtp.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n";

fn msg<'a>(from: &'a ReversePath, rcpts: &'a [Address], body: &'a [u8]) -> OutgoingMessage<'a> {
    OutgoingMessage {
        from,
        rcpts,
        prefix: b"",
        body,
        eight_bit: false,
        smtputf8: false,
        require_tls: false,
        dsn: None,
    }
}

fn codes(results: &[RcptResult]) -> Vec<(char, u16)> {
    results
        .iter()
        .map(|r| match r {
            RcptResult::Delivered(x) => ('D', x.code),
            RcptResult::Temporary(x) => ('T', x.code),
            RcptResult::Permanent(x) => ('P', x.code),
        })
        .collect()
}

async fn lmtp_to(
    at: &LmtpAddress,
    rcpts: &[Address],
    body: &[u8],
) -> Result<Vec<RcptResult>, ClientError> {
    let s = settings(TlsPolicy::Plaintext);
    let from = sender();
    deliver(
        at,
        "client.test",
        s.connect_timeout,
        &s.timeouts,
        &msg(&from, rcpts, body),
    )
    .await
}

#[tokio::test]
async fn pipelined_with_one_reply_per_accepted_recipient() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("LHLO client.test"),
            S(LHLO_PIPELINING),
            C("MAIL FROM:<a@example.org>"),
            C("RCPT TO:<ok@example.test>"),
            C("RCPT TO:<gone@example.test>"),
            C("RCPT TO:<full@example.test>"),
            C("RCPT TO:<later@example.test>"),
            C("DATA"),
            S("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n"),
            Data,
            // One reply per accepted recipient, in RCPT order: ok, full, later.
            S("250 2.0.0 <ok@example.test> saved\r\n452 4.2.2 mailbox full\r\n250 2.0.0 saved\r\n"),
            C("QUIT"),
            S("221 2.0.0 bye\r\n"),
        ],
        None,
    )
    .await;
    let rcpts: Vec<Address> = ["ok", "gone", "full", "later"]
        .iter()
        .map(|u| addr(&format!("{u}@example.test")))
        .collect();
    let got = lmtp_to(
        &LmtpAddress::Tcp(server.addr),
        &rcpts,
        b"Subject: x\r\n\r\n.dot\r\n",
    )
    .await
    .expect("transaction");
    assert_eq!(
        codes(&got),
        vec![('D', 250), ('P', 550), ('T', 452), ('D', 250)]
    );
    let transcript = server.transcript().await;
    assert!(
        transcript.contains("\r\n\r\n..dot\r\n.\r\n"),
        "dot-stuffed: {transcript}"
    );
}

#[tokio::test]
async fn lockstep_over_a_unix_socket_and_a_hang_up_after_the_first_reply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path: PathBuf = dir.path().join("lmtp.sock");
    let listener = UnixListener::bind(&path).expect("bind unix socket");
    let script: Vec<Step> = vec![
        S(GREETING),
        C("LHLO client.test"),
        S("250 lmtp.test\r\n"),
        C("MAIL FROM:<a@example.org>"),
        S("250 2.1.0 ok\r\n"),
        C("RCPT TO:<one@example.test>"),
        S("250 2.1.5 ok\r\n"),
        C("RCPT TO:<two@example.test>"),
        S("250 2.1.5 ok\r\n"),
        C("DATA"),
        S("354 go\r\n"),
        Data,
        S("250 2.0.0 one saved\r\n"),
        Close,
    ];
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        run(Box::new(stream), script, None).await
    });
    let rcpts = [addr("one@example.test"), addr("two@example.test")];
    let got = lmtp_to(&LmtpAddress::Unix(path), &rcpts, b"hi\r\n")
        .await
        .expect("the first recipient is decided");
    // The delivered one stays delivered; the other is retried, never bounced.
    assert_eq!(codes(&got), vec![('D', 250), ('T', 451)]);
    server.await.expect("server task").expect("script");
}

#[tokio::test]
async fn nothing_listening_is_an_error_not_a_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = LmtpAddress::Unix(dir.path().join("none.sock"));
    let e = lmtp_to(&missing, &[addr("x@example.test")], b"x\r\n")
        .await
        .expect_err("no socket");
    assert!(e.to_string().contains("none.sock"), "{e}");
    let refused = FakeServer::start(
        vec![
            S("421 4.3.2 shutting down\r\n"),
            C("QUIT"),
            S("221 2.0.0 bye\r\n"),
        ],
        None,
    )
    .await;
    let e = lmtp_to(
        &LmtpAddress::Tcp(refused.addr),
        &[addr("x@example.test")],
        b"x\r\n",
    )
    .await
    .expect_err("421 greeting");
    assert!(
        matches!(e, ClientError::Greeting(ref r) if r.code == 421),
        "{e}"
    );
}

/// MAIL, RCPT replies, replies after the dot, the reply that ended it early → results.
type Row = (u16, Vec<u16>, Vec<u16>, Option<u16>, Vec<RcptResult>);

#[test]
fn result_mapping() {
    let r = |code: u16| ServerReply::local(code, "x.0.0", "t");
    use RcptResult::{Delivered as D, Permanent as P, Temporary as T};
    let table: Vec<Row> = vec![
        (
            250,
            vec![250, 550, 250],
            vec![250, 451],
            None,
            vec![D(r(250)), P(r(550)), T(r(451))],
        ),
        (550, vec![], vec![], None, vec![P(r(550)), P(r(550))]),
        (
            250,
            vec![550, 450],
            vec![],
            Some(503),
            vec![P(r(550)), T(r(450))],
        ),
        // 421 at the second RCPT decides it and the rest.
        (
            250,
            vec![250],
            vec![],
            Some(421),
            vec![T(r(421)), T(r(421)), T(r(421))],
        ),
        // DATA refused: the accepted get its reply.
        (
            250,
            vec![250, 550],
            vec![],
            Some(554),
            vec![P(r(554)), P(r(550))],
        ),
    ];
    for (mail, rcpts, finals, ended, want) in table {
        let rcpts: Vec<ServerReply> = rcpts.into_iter().map(r).collect();
        let finals: Vec<ServerReply> = finals.into_iter().map(r).collect();
        let ended = ended.map(r);
        let got = results(want.len(), &r(mail), &rcpts, &finals, ended.as_ref());
        assert_eq!(got, want, "MAIL {mail} RCPT {rcpts:?} finals {finals:?}");
    }
    // Missing final replies with nothing to say why: temporary, never delivered.
    let got = results(2, &r(250), &[r(250), r(250)], &[r(250)], None);
    assert!(matches!(&got[..], [D(_), T(x)] if x.code == 451));
}
