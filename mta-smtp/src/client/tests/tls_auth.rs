//! TLS policies and AUTH against fake servers with rcgen certificates: RFC 3207 STARTTLS
//! (opportunistic, required, refused, not offered, bytes injected before the handshake),
//! RFC 8314 implicit TLS, RFC 4954 AUTH PLAIN and LOGIN, never without TLS.

use std::sync::Arc;

use super::super::{
    ClientError, ClientSettings, Connection, OutgoingMessage, RcptResult, TlsPolicy, Verification,
    webpki_roots,
};
use super::{C, Data, FakeServer, S, ServerCert, Tls, addr, sender, settings};

const GREETING: &str = "220 mx.example.test ESMTP\r\n";
const EHLO_TLS: &str = "250-mx.example.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
const NAME: &str = "mx.example.test";

/// The script of a STARTTLS dialogue with one message delivered over TLS.
fn starttls_delivery() -> Vec<super::Step> {
    vec![
        S(GREETING),
        C("EHLO client.test"),
        S(EHLO_TLS),
        C("STARTTLS"),
        S("220 2.0.0 ready\r\n"),
        Tls,
        C("EHLO client.test"),
        S("250-mx.example.test\r\n250 SIZE 1000\r\n"),
        C("MAIL FROM:<a@example.org> SIZE=3"),
        S("250 ok\r\n"),
        C("RCPT TO:<b@example.test>"),
        S("250 ok\r\n"),
        C("DATA"),
        S("354 go\r\n"),
        Data,
        S("250 2.0.0 queued\r\n"),
        C("QUIT"),
        S("221 bye\r\n"),
    ]
}

async fn deliver_one(conn: &mut Connection) {
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
    let results = conn.send(&msg).await.expect("send");
    assert!(
        matches!(&results[..], [RcptResult::Delivered(r)] if r.code == 250),
        "{results:?}"
    );
}

async fn open(
    server: &FakeServer,
    name: &str,
    s: &ClientSettings,
) -> Result<Connection, ClientError> {
    Connection::open(&server.target(name), s).await
}

#[tokio::test]
async fn opportunistic_accepts_a_self_signed_certificate_and_records_why() {
    let cert = ServerCert::self_signed(NAME);
    let server = FakeServer::start(starttls_delivery(), Some(cert.acceptor())).await;
    let s = settings(TlsPolicy::Opportunistic {
        roots: Arc::new(webpki_roots()),
    });
    let mut conn = open(&server, NAME, &s).await.expect("open");
    let tls = conn.tls().expect("TLS is up").clone();
    assert_eq!(tls.version, "TLSv1.3");
    assert!(tls.cipher.starts_with("TLS13_"), "{}", tls.cipher);
    assert!(
        matches!(&tls.verified, Verification::Failed(why) if why.contains("UnknownIssuer")),
        "{:?}",
        tls.verified
    );
    // Only the list given over TLS counts: no PIPELINING, no STARTTLS, a SIZE.
    assert!(!conn.extensions().pipelining);
    assert!(!conn.extensions().starttls);
    assert_eq!(conn.extensions().size, Some(1000));
    deliver_one(&mut conn).await;
    conn.quit().await;
    assert_eq!(
        server.transcript().await,
        "EHLO client.test\r\nSTARTTLS\r\nEHLO client.test\r\nMAIL FROM:<a@example.org> SIZE=3\r\n\
         RCPT TO:<b@example.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n"
    );
}

#[tokio::test]
async fn opportunistic_records_a_name_mismatch() {
    let cert = ServerCert::from_ca("other.example.test");
    let server = FakeServer::start(starttls_delivery(), Some(cert.acceptor())).await;
    let s = settings(TlsPolicy::Opportunistic {
        roots: cert.roots(),
    });
    let mut conn = open(&server, NAME, &s).await.expect("open");
    let verified = conn.tls().map(|t| t.verified.clone());
    assert!(
        matches!(&verified, Some(Verification::Failed(why)) if why.contains("not valid for name")),
        "{verified:?}"
    );
    deliver_one(&mut conn).await;
    conn.quit().await;
    server.transcript().await;
}

#[tokio::test]
async fn required_with_the_ca_in_roots_verifies() {
    let cert = ServerCert::from_ca(NAME);
    let server = FakeServer::start(starttls_delivery(), Some(cert.acceptor())).await;
    let s = settings(TlsPolicy::Required {
        roots: cert.roots(),
    });
    // A trailing dot on the name is not part of what is verified.
    let mut conn = open(&server, "mx.example.test.", &s).await.expect("open");
    assert_eq!(
        conn.tls().map(|t| &t.verified),
        Some(&Verification::Verified)
    );
    deliver_one(&mut conn).await;
    conn.quit().await;
    server.transcript().await;
}

#[tokio::test]
async fn required_without_the_ca_fails() {
    let cert = ServerCert::from_ca(NAME);
    let server = FakeServer::start(starttls_delivery(), Some(cert.acceptor())).await;
    let s = settings(TlsPolicy::Required {
        roots: Arc::new(webpki_roots()),
    });
    let e = open(&server, NAME, &s).await.err().expect("unknown CA");
    assert!(
        matches!(&e, ClientError::TlsRequiredButFailed(why) if why.contains("UnknownIssuer")),
        "{e:?}"
    );
}

#[tokio::test]
async fn required_with_the_wrong_name_fails() {
    let cert = ServerCert::from_ca(NAME);
    let server = FakeServer::start(starttls_delivery(), Some(cert.acceptor())).await;
    let s = settings(TlsPolicy::Required {
        roots: cert.roots(),
    });
    let e = open(&server, "mx2.example.test", &s)
        .await
        .err()
        .expect("wrong name");
    assert!(
        matches!(&e, ClientError::TlsRequiredButFailed(why) if why.contains("not valid for name")),
        "{e:?}"
    );
}

#[tokio::test]
async fn required_but_not_offered() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S("250-mx\r\n250 PIPELINING\r\n"),
        ],
        None,
    )
    .await;
    let cert = ServerCert::self_signed(NAME);
    let s = settings(TlsPolicy::Required {
        roots: cert.roots(),
    });
    let e = open(&server, NAME, &s).await.err().expect("no STARTTLS");
    assert!(matches!(e, ClientError::StartTlsNotOffered), "{e:?}");
    assert!(!e.is_permanent());
}

#[tokio::test]
async fn required_but_refused() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S(EHLO_TLS),
            C("STARTTLS"),
            S("454 4.7.0 TLS not available\r\n"),
        ],
        None,
    )
    .await;
    let s = settings(TlsPolicy::Required {
        roots: Arc::new(webpki_roots()),
    });
    let e = open(&server, NAME, &s)
        .await
        .err()
        .expect("STARTTLS refused");
    assert!(
        matches!(&e, ClientError::TlsRequiredButFailed(why) if why.contains("454")),
        "{e:?}"
    );
}

#[tokio::test]
async fn opportunistic_without_starttls_delivers_in_plaintext() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S("250 mx.example.test\r\n"),
            C("MAIL FROM:<a@example.org>"),
            S("250 ok\r\n"),
            C("RCPT TO:<b@example.test>"),
            S("250 ok\r\n"),
            C("DATA"),
            S("354 go\r\n"),
            Data,
            S("250 queued\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let s = settings(TlsPolicy::Opportunistic {
        roots: Arc::new(webpki_roots()),
    });
    let mut conn = open(&server, NAME, &s).await.expect("open");
    assert!(conn.tls().is_none());
    deliver_one(&mut conn).await;
    conn.quit().await;
    server.transcript().await;
}

#[tokio::test]
async fn opportunistic_starttls_refused_goes_on_in_plaintext() {
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S(EHLO_TLS),
            C("STARTTLS"),
            S("454 4.7.0 not now\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        None,
    )
    .await;
    let s = settings(TlsPolicy::Opportunistic {
        roots: Arc::new(webpki_roots()),
    });
    let conn = open(&server, NAME, &s).await.expect("open");
    assert!(conn.tls().is_none());
    conn.quit().await;
    server.transcript().await;
}

#[tokio::test]
async fn bytes_injected_after_the_starttls_reply_are_discarded() {
    let cert = ServerCert::self_signed(NAME);
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S(EHLO_TLS),
            C("STARTTLS"),
            // One write: the injected "EHLO reply" arrives with the 220.
            S("220 2.0.0 ready\r\n250-evil.example\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n"),
            Tls,
            C("EHLO client.test"),
            S("250-mx.example.test\r\n250 SIZE 100\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        Some(cert.acceptor()),
    )
    .await;
    let s = settings(TlsPolicy::Opportunistic {
        roots: cert.roots(),
    });
    let conn = open(&server, NAME, &s).await.expect("open");
    assert_eq!(
        conn.tls().map(|t| &t.verified),
        Some(&Verification::Verified)
    );
    assert!(!conn.extensions().pipelining);
    assert!(conn.extensions().auth.is_empty());
    assert_eq!(conn.extensions().size, Some(100));
    conn.quit().await;
    assert_eq!(
        server.transcript().await,
        "EHLO client.test\r\nSTARTTLS\r\nEHLO client.test\r\nQUIT\r\n"
    );
}

#[tokio::test]
async fn auth_plain_after_starttls() {
    let cert = ServerCert::from_ca(NAME);
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S("250-mx.example.test\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n"),
            C("STARTTLS"),
            S("220 ready\r\n"),
            Tls,
            C("EHLO client.test"),
            S("250-mx.example.test\r\n250 AUTH LOGIN PLAIN\r\n"),
            C("AUTH PLAIN AHVzZXIAc2VjcmV0"),
            S("235 2.7.0 ok\r\n"),
            C("MAIL FROM:<a@example.org>"),
            S("250 ok\r\n"),
            C("RCPT TO:<b@example.test>"),
            S("250 ok\r\n"),
            C("DATA"),
            S("354 go\r\n"),
            Data,
            S("250 queued\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        Some(cert.acceptor()),
    )
    .await;
    let mut s = settings(TlsPolicy::Required {
        roots: cert.roots(),
    });
    s.auth = Some(("user".into(), "secret".into()));
    let mut conn = open(&server, NAME, &s).await.expect("open");
    deliver_one(&mut conn).await;
    conn.quit().await;
    server.transcript().await;
}

#[tokio::test]
async fn auth_login_over_implicit_tls() {
    let cert = ServerCert::from_ca("smarthost.example.test");
    let server = FakeServer::start(
        vec![
            Tls,
            S("220 smarthost.example.test ESMTP\r\n"),
            C("EHLO client.test"),
            S("250-smarthost.example.test\r\n250 AUTH LOGIN\r\n"),
            C("AUTH LOGIN"),
            S("334 VXNlcm5hbWU6\r\n"),
            C("dXNlcg=="),
            S("334 UGFzc3dvcmQ6\r\n"),
            C("c2VjcmV0"),
            S("235 2.7.0 ok\r\n"),
            C("QUIT"),
            S("221 bye\r\n"),
        ],
        Some(cert.acceptor()),
    )
    .await;
    let mut s = settings(TlsPolicy::Implicit {
        roots: cert.roots(),
    });
    s.auth = Some(("user".into(), "secret".into()));
    let conn = open(&server, "smarthost.example.test", &s)
        .await
        .expect("open");
    assert_eq!(
        conn.tls().map(|t| &t.verified),
        Some(&Verification::Verified)
    );
    conn.quit().await;
    server.transcript().await;
}

#[tokio::test]
async fn auth_refused() {
    let cert = ServerCert::from_ca(NAME);
    let server = FakeServer::start(
        vec![
            Tls,
            S(GREETING),
            C("EHLO client.test"),
            S("250-mx\r\n250 AUTH PLAIN\r\n"),
            C("AUTH PLAIN AHVzZXIAc2VjcmV0"),
            S("535 5.7.8 bad credentials\r\n"),
        ],
        Some(cert.acceptor()),
    )
    .await;
    let mut s = settings(TlsPolicy::Implicit {
        roots: cert.roots(),
    });
    s.auth = Some(("user".into(), "secret".into()));
    let e = open(&server, NAME, &s).await.err().expect("535");
    assert!(
        matches!(&e, ClientError::AuthFailed(r) if r.code == 535),
        "{e:?}"
    );
    assert!(e.is_permanent());
}

#[tokio::test]
async fn credentials_never_go_out_in_plaintext() {
    // STARTTLS not offered under the opportunistic policy: we stop before AUTH.
    let server = FakeServer::start(
        vec![
            S(GREETING),
            C("EHLO client.test"),
            S("250-mx\r\n250 AUTH PLAIN LOGIN\r\n"),
        ],
        None,
    )
    .await;
    let mut s = settings(TlsPolicy::Opportunistic {
        roots: Arc::new(webpki_roots()),
    });
    s.auth = Some(("user".into(), "secret".into()));
    let e = open(&server, NAME, &s).await.err().expect("no TLS");
    assert!(matches!(e, ClientError::AuthNeedsTls), "{e:?}");
    assert_eq!(server.transcript().await, "EHLO client.test\r\n");

    // The plaintext policy with credentials does not even connect.
    let mut s = settings(TlsPolicy::Plaintext);
    s.auth = Some(("user".into(), "secret".into()));
    let nowhere = super::super::Target {
        addr: "127.0.0.1:9".parse().expect("addr"),
        name: NAME.into(),
    };
    let e = Connection::open(&nowhere, &s).await.err().expect("no TLS");
    assert!(matches!(e, ClientError::AuthNeedsTls), "{e:?}");
}

#[tokio::test]
async fn no_usable_auth_mechanism() {
    let cert = ServerCert::from_ca(NAME);
    let server = FakeServer::start(
        vec![
            Tls,
            S(GREETING),
            C("EHLO client.test"),
            S("250-mx\r\n250 AUTH CRAM-MD5\r\n"),
        ],
        Some(cert.acceptor()),
    )
    .await;
    let mut s = settings(TlsPolicy::Implicit {
        roots: cert.roots(),
    });
    s.auth = Some(("user".into(), "secret".into()));
    let e = open(&server, NAME, &s).await.err().expect("CRAM-MD5 only");
    assert!(
        matches!(&e, ClientError::AuthNotOffered { offered } if offered == "CRAM-MD5"),
        "{e:?}"
    );
}
