//! The load against a small scripted server on loopback (STARTTLS, then a fixed reply to
//! each final dot): what is counted as a message and what as an error.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{Ctx, insecure, message, run};

/// Serves SMTP after the TLS upgrade: answers `dot` to every final dot. Returns at QUIT
/// or when the client goes away.
async fn after_tls<S: AsyncRead + AsyncWrite + Unpin>(s: S, dot: &'static str) {
    let mut s = BufReader::new(s);
    let mut line = String::new();
    let mut in_data = false;
    loop {
        line.clear();
        if s.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let reply: &[u8] = if in_data {
            if line != ".\r\n" {
                continue;
            }
            in_data = false;
            dot.as_bytes()
        } else {
            match line.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
                "EHLO" => b"250-fake.test\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n",
                "AUTH" => b"235 2.7.0 ok\r\n",
                "MAIL" | "RCPT" => b"250 ok\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go\r\n"
                }
                "QUIT" => {
                    let _ = s.write_all(b"221 bye\r\n").await;
                    return;
                }
                _ => b"500 what\r\n",
            }
        };
        if s.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// A server on 127.0.0.1 offering STARTTLS with a self-signed certificate; every dot gets
/// `dot`. Returns its address.
async fn scripted_server(dot: &'static str) -> String {
    let made = rcgen::generate_simple_self_signed(vec!["fake.test".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![made.cert.der().clone()], key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut s = BufReader::new(tcp);
                if s.write_all(b"220 fake.test ESMTP\r\n").await.is_err() {
                    return;
                }
                let mut line = String::new();
                loop {
                    line.clear();
                    if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line.to_ascii_uppercase().starts_with("EHLO") {
                        let _ = s.write_all(b"250-fake.test\r\n250 STARTTLS\r\n").await;
                    } else if line.to_ascii_uppercase().starts_with("STARTTLS") {
                        let _ = s.write_all(b"220 go ahead\r\n").await;
                        break;
                    } else {
                        let _ = s.write_all(b"530 STARTTLS first\r\n").await;
                    }
                }
                if let Ok(tls) = acceptor.accept(s.into_inner()).await {
                    after_tls(tls, dot).await;
                }
            });
        }
    });
    addr
}

fn ctx(addr: String, auth: bool) -> Arc<Ctx> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(insecure::AcceptAny(provider)))
        .with_no_client_auth();
    Arc::new(Ctx {
        addr,
        implicit: false,
        helo: "client.test".into(),
        from: "a@client.test".into(),
        to: "b@fake.test".into(),
        auth: auth.then(|| "AGEAYg==".into()),
        message: message("a@client.test", "b@fake.test", 600),
        tls: TlsConnector::from(Arc::new(config)),
        server_name: ServerName::try_from("fake.test").unwrap(),
        timeout: Duration::from_secs(20),
    })
}

#[tokio::test]
async fn every_accepted_message_is_counted() {
    let addr = scripted_server("250 2.0.0 queued\r\n").await;
    let (st, failed, retried) = run(ctx(addr.clone(), false), 4, 10, 1, false).await;
    assert_eq!((st.messages, failed, retried), (10, 0, 0));
    assert_eq!(
        st.handshakes, 10,
        "one connection, so one handshake, per message"
    );
    assert_eq!(st.latencies_ms.len(), 10);
    assert!(st.errors.is_empty(), "{:?}", st.errors);
    // Submission style: several messages per session, after AUTH.
    let (st, failed, _) = run(ctx(addr, true), 2, 9, 4, false).await;
    assert_eq!((st.messages, failed, st.handshakes), (9, 0, 3));
}

#[tokio::test]
async fn a_refused_dot_is_an_error_not_a_message() {
    let addr = scripted_server("554 5.7.1 no\r\n").await;
    let (st, failed, _) = run(ctx(addr, false), 3, 6, 2, true).await;
    assert_eq!(st.messages, 0);
    assert_eq!(failed, 6);
    assert_eq!(st.errors.get("dot:554"), Some(&3), "{:?}", st.errors);
    assert!(st.latencies_ms.is_empty());
}

#[tokio::test]
async fn a_temporary_failure_is_counted_and_sent_again_only_when_asked() {
    let addr = scripted_server("451 4.3.0 later\r\n").await;
    let (st, failed, retried) = run(ctx(addr.clone(), false), 2, 2, 1, false).await;
    assert_eq!((st.messages, failed, retried), (0, 2, 0));
    assert_eq!(st.errors.get("dot:451"), Some(&2));
    // Retried: the server never accepts, so the retries run out (one per message) and the
    // messages still count as failed.
    let (st, failed, retried) = run(ctx(addr, false), 2, 2, 1, true).await;
    assert_eq!((st.messages, failed, retried), (0, 2, 2));
    assert_eq!(st.errors.get("dot:451"), Some(&4));
}
