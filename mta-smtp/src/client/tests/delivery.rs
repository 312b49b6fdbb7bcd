//! Transactions against well-behaved fake servers: RFC 5321 §4.1.1 with and without RFC 2920
//! pipelining, per-recipient results, dot-stuffing on the wire (§4.5.2), and the RFC 1870 /
//! RFC 6531 refusals made before MAIL.

use mta_core::address::{Address, ReversePath};

use super::super::{Connection, OutgoingMessage, RcptResult, ServerReply, TlsPolicy};
use super::{C, Data, FakeServer, S, addr, sender, settings};

const GREETING: &str = "220 mx.example.test ESMTP ready\r\n";
const EHLO_PIPELINING: &str =
    "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250 8BITMIME\r\n";
const EHLO_PLAIN: &str = "250-mx.example.test greets client.test\r\n250 SIZE\r\n";

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

fn reply(code: u16, enhanced: &str, text: &str) -> ServerReply {
    ServerReply::local(code, enhanced, text)
}

async fn open(server: &FakeServer) -> Connection {
    Connection::open(
        &server.target("mx.example.test"),
        &settings(TlsPolicy::Plaintext),
    )
    .await
    .expect("connection opens")
}

#[tokio::test]
async fn pipelined_delivery_arrives_byte_for_byte() {
    // The server reads MAIL, both RCPTs and DATA before it answers anything: a client that
    // waited for the MAIL reply would hang here.
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S(EHLO_PIPELINING),
            C("MAIL FROM:<a@example.org> SIZE=30"),
            C("RCPT TO:<b@example.test>"),
            C("RCPT TO:<c@example.test>"),
            C("DATA"),
            S("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n"),
            Data,
            S("250 2.0.0 queued as X\r\n"),
            C("QUIT"),
            S("221 2.0.0 bye\r\n"),
        ],
        None,
    )
    .await;
    let mut conn = open(&server).await;
    assert!(conn.extensions().pipelining);
    assert_eq!(conn.extensions().size, Some(1_000_000));
    assert!(conn.tls().is_none());
    let from = sender();
    let rcpts = [addr("b@example.test"), addr("c@example.test")];
    let body = b"Subject: t\r\n\r\n.\r\n..\r\n.x\r\nend";
    let results = conn.send(&msg(&from, &rcpts, body)).await.expect("send");
    conn.quit().await;
    let delivered = RcptResult::Delivered(reply(250, "2.0.0", "queued as X"));
    assert_eq!(results, vec![delivered.clone(), delivered]);
    assert_eq!(
        server.transcript().await,
        "EHLO client.test\r\n\
         MAIL FROM:<a@example.org> SIZE=30\r\n\
         RCPT TO:<b@example.test>\r\n\
         RCPT TO:<c@example.test>\r\n\
         DATA\r\n\
         Subject: t\r\n\r\n..\r\n...\r\n..x\r\nend\r\n.\r\n\
         QUIT\r\n"
    );
}

#[tokio::test]
async fn lockstep_delivery_without_pipelining() {
    let server = FakeServer::start(
        vec![
            S("220-mx.example.test ESMTP\r\n220 second greeting line\r\n"),
            C("EHLO client.test"),
            S(EHLO_PLAIN),
            C("MAIL FROM:<> SIZE=7"),
            S("250 ok\r\n"),
            C("RCPT TO:<b@example.test>"),
            S("250 ok\r\n"),
            C("DATA"),
            S("354 go ahead\r\n"),
            Data,
            S("250 queued\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let mut conn = open(&server).await;
    assert!(!conn.extensions().pipelining);
    let rcpts = [addr("b@example.test")];
    let results = conn
        .send(&msg(&ReversePath::Null, &rcpts, b"hello\r\n"))
        .await
        .expect("send");
    conn.quit().await;
    assert!(matches!(&results[..], [RcptResult::Delivered(r)] if r.code == 250));
    assert_eq!(
        server.transcript().await,
        "EHLO client.test\r\nMAIL FROM:<> SIZE=7\r\nRCPT TO:<b@example.test>\r\nDATA\r\n\
         hello\r\n.\r\nQUIT\r\n"
    );
}

#[tokio::test]
async fn one_recipient_refused_another_accepted() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S(EHLO_PLAIN),
            C("MAIL FROM:<a@example.org> SIZE=4"),
            S("250 ok\r\n"),
            C("RCPT TO:<nobody@example.test>"),
            S("550 5.1.1 no such user\r\n"),
            C("RCPT TO:<b@example.test>"),
            S("250 2.1.5 ok\r\n"),
            C("RCPT TO:<full@example.test>"),
            S("452 4.2.2 mailbox full\r\n"),
            C("DATA"),
            S("354 go ahead\r\n"),
            Data,
            S("250 2.0.0 queued\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let mut conn = open(&server).await;
    let from = sender();
    let rcpts = [
        addr("nobody@example.test"),
        addr("b@example.test"),
        addr("full@example.test"),
    ];
    let results = conn
        .send(&msg(&from, &rcpts, b"hi\r\n"))
        .await
        .expect("send");
    conn.quit().await;
    assert_eq!(
        results,
        vec![
            RcptResult::Permanent(reply(550, "5.1.1", "no such user")),
            RcptResult::Delivered(reply(250, "2.0.0", "queued")),
            RcptResult::Temporary(reply(452, "4.2.2", "mailbox full")),
        ]
    );
    server.transcript().await;
}

#[tokio::test]
async fn all_refused_sends_no_data() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S(EHLO_PLAIN),
            C("MAIL FROM:<a@example.org> SIZE=4"),
            S("250 ok\r\n"),
            C("RCPT TO:<x@example.test>"),
            S("550 5.1.1 no\r\n"),
            C("RCPT TO:<y@example.test>"),
            S("450 4.7.1 later\r\n"),
            C("RSET"),
            S("250 2.0.0 reset\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let mut conn = open(&server).await;
    let from = sender();
    let rcpts = [addr("x@example.test"), addr("y@example.test")];
    let results = conn
        .send(&msg(&from, &rcpts, b"hi\r\n"))
        .await
        .expect("send");
    conn.reset().await.expect("RSET");
    conn.quit().await;
    assert_eq!(
        results,
        vec![
            RcptResult::Permanent(reply(550, "5.1.1", "no")),
            RcptResult::Temporary(reply(450, "4.7.1", "later")),
        ]
    );
    let transcript = server.transcript().await;
    assert!(!transcript.contains("DATA"), "{transcript}");
}

#[tokio::test]
async fn all_refused_when_pipelining_sends_no_body() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S(EHLO_PIPELINING),
            C("MAIL FROM:<a@example.org> SIZE=4"),
            C("RCPT TO:<x@example.test>"),
            C("DATA"),
            S("250 ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let mut conn = open(&server).await;
    let from = sender();
    let rcpts = [addr("x@example.test")];
    let results = conn
        .send(&msg(&from, &rcpts, b"hi\r\n"))
        .await
        .expect("send");
    conn.quit().await;
    assert_eq!(
        results,
        vec![RcptResult::Permanent(reply(550, "5.1.1", "no"))]
    );
    assert!(server.transcript().await.ends_with("DATA\r\nQUIT\r\n"));
}

#[tokio::test]
async fn mail_refused_decides_every_recipient() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S(EHLO_PIPELINING),
            C("MAIL FROM:<a@example.org> SIZE=4"),
            C("RCPT TO:<x@example.test>"),
            C("RCPT TO:<y@example.test>"),
            C("DATA"),
            S("553 5.7.1 sender refused\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let mut conn = open(&server).await;
    let from = sender();
    let rcpts = [addr("x@example.test"), addr("y@example.test")];
    let results = conn
        .send(&msg(&from, &rcpts, b"hi\r\n"))
        .await
        .expect("send");
    conn.quit().await;
    let refused = RcptResult::Permanent(reply(553, "5.7.1", "sender refused"));
    assert_eq!(results, vec![refused.clone(), refused]);
    server.transcript().await;
}

#[tokio::test]
async fn ehlo_refused_falls_back_to_helo() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S("502 5.5.2 command not recognised\r\n"),
            C("HELO client.test"),
            S("250 mx.example.test\r\n"),
            C("MAIL FROM:<a@example.org>"),
            S("250 ok\r\n"),
            C("RCPT TO:<b@example.test>"),
            S("250 ok\r\n"),
            C("DATA"),
            S("354 go ahead\r\n"),
            Data,
            S("250 queued\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let mut conn = open(&server).await;
    assert_eq!(conn.extensions(), &super::super::Extensions::default());
    let from = sender();
    let rcpts = [addr("b@example.test")];
    // 8-bit without 8BITMIME: sent without BODY=, as is.
    let mut m = msg(&from, &rcpts, "caf\u{e9}\r\n".as_bytes());
    m.eight_bit = true;
    let results = conn.send(&m).await.expect("send");
    conn.quit().await;
    assert!(matches!(&results[..], [RcptResult::Delivered(_)]));
    assert!(
        server
            .transcript()
            .await
            .contains("DATA\r\ncaf\u{e9}\r\n.\r\n")
    );
}

#[tokio::test]
async fn two_messages_on_one_connection_with_parameters() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S("250-mx.example.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"),
            C("MAIL FROM:<a@example.org> BODY=8BITMIME SMTPUTF8"),
            S("250 ok\r\n"),
            C("RCPT TO:<j\u{f6}rg@example.test>"),
            S("250 ok\r\n"),
            C("DATA"),
            S("354 go ahead\r\n"),
            Data,
            S("250 first\r\n"),
            C("RSET"),
            S("250 ok\r\n"),
            C("MAIL FROM:<a@example.org>"),
            S("250 ok\r\n"),
            C("RCPT TO:<b@example.test>"),
            S("250 ok\r\n"),
            C("DATA"),
            S("354 go ahead\r\n"),
            Data,
            S("250 second\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let mut conn = open(&server).await;
    let from = sender();
    let first = [addr("j\u{f6}rg@example.test")];
    let mut m = msg(&from, &first, "\u{e9}\r\n".as_bytes());
    m.eight_bit = true;
    m.smtputf8 = true;
    let results = conn.send(&m).await.expect("first");
    assert!(matches!(&results[..], [RcptResult::Delivered(r)] if r.text == "first"));
    conn.reset().await.expect("RSET");
    let second = [addr("b@example.test")];
    let results = conn
        .send(&msg(&from, &second, b"x\r\n"))
        .await
        .expect("second");
    assert!(matches!(&results[..], [RcptResult::Delivered(r)] if r.text == "second"));
    conn.quit().await;
    server.transcript().await;
}

#[tokio::test]
async fn too_big_for_the_server_is_refused_before_sending() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S("250-mx.example.test\r\n250 SIZE 10\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let mut conn = open(&server).await;
    let from = sender();
    let rcpts = [addr("b@example.test"), addr("c@example.test")];
    let results = conn
        .send(&msg(&from, &rcpts, b"eleven octets\r\n"))
        .await
        .expect("send");
    conn.quit().await;
    for r in &results {
        assert!(
            matches!(r, RcptResult::Permanent(reply) if reply.code == 552
                && reply.enhanced.as_deref() == Some("5.3.4")),
            "{r:?}"
        );
    }
    assert_eq!(results.len(), 2);
    assert_eq!(server.transcript().await, "EHLO client.test\r\nQUIT\r\n");
}

#[tokio::test]
async fn smtputf8_needed_but_not_offered_is_permanent() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S(EHLO_PIPELINING),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let mut conn = open(&server).await;
    let from = sender();
    let rcpts = [addr("j\u{f6}rg@example.test")];
    let mut m = msg(&from, &rcpts, b"x\r\n");
    m.smtputf8 = true;
    let results = conn.send(&m).await.expect("send");
    conn.quit().await;
    assert!(
        matches!(&results[..], [RcptResult::Permanent(r)]
            if r.code == 553 && r.enhanced.as_deref() == Some("5.6.7")),
        "{results:?}"
    );
    assert_eq!(server.transcript().await, "EHLO client.test\r\nQUIT\r\n");
}

#[tokio::test]
async fn a_pipelined_421_leaves_the_connection_unfit_for_another_message() {
    // RFC 5321 §3.8 / RFC 2920 §3.1: the server answers MAIL with 421; the replies to the
    // RCPT and DATA that followed in the same write come later, or never.
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S(EHLO_PIPELINING),
            C("MAIL FROM:<a@example.org> SIZE=14"),
            C("RCPT TO:<b@example.test>"),
            C("DATA"),
            S("421 4.3.2 closing\r\n"),
            super::ReadSome(64),
        ],
        None,
    )
    .await;
    let mut conn = open(&server).await;
    assert!(conn.reusable());
    let from = sender();
    let rcpts = [addr("b@example.test")];
    let results = conn
        .send(&msg(&from, &rcpts, b"Subject: t\r\n\r\n"))
        .await
        .expect("a 421 is a result");
    assert!(matches!(&results[..], [RcptResult::Temporary(r)] if r.code == 421));
    assert!(
        !conn.reusable(),
        "a connection that got 421 must not be pooled"
    );
    drop(conn);
    let _ = server.finish().await;
}

#[tokio::test]
async fn a_clean_transaction_leaves_the_connection_reusable() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S(EHLO_PLAIN),
            C("MAIL FROM:<a@example.org> SIZE=14"),
            S("250 ok\r\n"),
            C("RCPT TO:<b@example.test>"),
            S("250 ok\r\n"),
            C("DATA"),
            S("354 go\r\n"),
            Data,
            S("250 ok\r\n"),
            super::ReadSome(64),
        ],
        None,
    )
    .await;
    let mut conn = open(&server).await;
    let from = sender();
    let rcpts = [addr("b@example.test")];
    conn.send(&msg(&from, &rcpts, b"Subject: t\r\n\r\n"))
        .await
        .expect("send");
    assert!(conn.reusable());
    drop(conn);
    let _ = server.finish().await;
}

/// RFC 3030 §4.2 with RFC 2920: one reply per pipelined chunk. A server that sends an extra
/// reply shifts the rest: here `250 extra` would be read as the answer to LAST and the `554`
/// left unread, a false delivery. Reply octets still waiting after the group's last reply
/// are a protocol error: the transaction fails for now and the connection is not kept.
#[tokio::test]
async fn an_extra_reply_to_pipelined_chunks_is_a_protocol_error() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S("250-mx.example.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n"),
            C("MAIL FROM:<a@example.org>"),
            C("RCPT TO:<b@example.test>"),
            S("250 2.1.0 ok\r\n250 2.1.5 ok\r\n"),
            C("BDAT 11"),
            C("X-Test: 1"),
            C("BDAT 18 LAST"),
            C("Subject: t"),
            C(""),
            C("hi"),
            S("250 2.0.0 chunk\r\n250 2.0.0 extra\r\n554 5.7.1 refused\r\n"),
            super::ReadSome(64),
        ],
        None,
    )
    .await;
    let mut conn = open(&server).await;
    assert!(conn.extensions().chunking && conn.extensions().pipelining);
    let from = sender();
    let rcpts = [addr("b@example.test")];
    let mut m = msg(&from, &rcpts, b"Subject: t\r\n\r\nhi\r\n");
    m.prefix = b"X-Test: 1\r\n";
    let result = conn.send(&m).await;
    assert!(
        matches!(result, Err(super::super::ClientError::Protocol { .. })),
        "{result:?}"
    );
    assert!(!conn.reusable());
    drop(conn);
    let _ = server.finish().await;
}
