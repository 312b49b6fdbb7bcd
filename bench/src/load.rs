//! The load itself: sessions over TLS, each reply checked, counted per worker and merged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{Reply, offers, parse_reply};

/// What one worker counted.
#[derive(Default, Debug)]
pub struct Stats {
    pub handshakes: u64,
    pub messages: u64,
    pub latencies_ms: Vec<f64>,
    pub errors: BTreeMap<String, u64>,
}

/// Why a session ended early: the key under which it is counted, and whether the server
/// said to try again later (a 4xx reply).
pub struct Failure(pub String, pub bool);

impl Failure {
    fn reply(stage: &str, r: &Reply) -> Failure {
        Failure(format!("{stage}:{}", r.code), r.code / 100 == 4)
    }
    fn other(stage: &str, what: &str) -> Failure {
        Failure(format!("{stage}:{what}"), false)
    }
}

pub struct Ctx {
    pub addr: String,
    pub implicit: bool,
    pub helo: String,
    pub from: String,
    pub to: String,
    pub auth: Option<String>,
    pub message: Vec<u8>,
    pub tls: TlsConnector,
    pub server_name: ServerName<'static>,
    pub timeout: Duration,
}

/// An SMTP connection: the stream and the bytes read past the last reply.
struct Conn<S> {
    s: S,
    buf: Vec<u8>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn reply(&mut self, stage: &str) -> Result<Reply, Failure> {
        loop {
            match parse_reply(&self.buf) {
                Ok(Some((r, n))) => {
                    self.buf.drain(..n);
                    return Ok(r);
                }
                Ok(None) => {}
                Err(e) => return Err(Failure::other(stage, &format!("{e}"))),
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(self.timeout, self.s.read(&mut chunk))
                .await
                .map_err(|_| Failure::other(stage, "timeout"))?
                .map_err(|_| Failure::other(stage, "io"))?;
            if n == 0 {
                return Err(Failure::other(stage, "closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next reply, which must have the given first digit.
    async fn expect(&mut self, stage: &str, class: u16) -> Result<Reply, Failure> {
        let r = self.reply(stage).await?;
        if r.code / 100 != class {
            return Err(Failure::reply(stage, &r));
        }
        Ok(r)
    }

    async fn send(&mut self, stage: &str, bytes: &[u8]) -> Result<(), Failure> {
        let w = async {
            self.s.write_all(bytes).await?;
            self.s.flush().await
        };
        tokio::time::timeout(self.timeout, w)
            .await
            .map_err(|_| Failure::other(stage, "timeout"))?
            .map_err(|_| Failure::other(stage, "io"))
    }
}

/// One session of `count` messages. Counts into `st` as it goes.
pub async fn session(ctx: &Ctx, count: usize, st: &mut Stats) -> Result<(), Failure> {
    let tcp = tokio::time::timeout(ctx.timeout, TcpStream::connect(&ctx.addr))
        .await
        .map_err(|_| Failure::other("connect", "timeout"))?
        .map_err(|_| Failure::other("connect", "io"))?;
    tcp.set_nodelay(true)
        .map_err(|_| Failure::other("connect", "io"))?;
    let tcp = if ctx.implicit {
        tcp
    } else {
        let mut c = Conn {
            s: tcp,
            buf: Vec::new(),
            timeout: ctx.timeout,
        };
        c.expect("banner", 2).await?;
        c.send("ehlo", format!("EHLO {}\r\n", ctx.helo).as_bytes())
            .await?;
        let ehlo = c.expect("ehlo", 2).await?;
        if !offers(&ehlo, "STARTTLS") {
            return Err(Failure::other("ehlo", "no-starttls"));
        }
        c.send("starttls", b"STARTTLS\r\n").await?;
        c.expect("starttls", 2).await?;
        // Anything the server sent after its 220 would be read as if it came over TLS
        // (the STARTTLS injection of RFC 3207 section 6 in reverse): refuse it.
        if !c.buf.is_empty() {
            return Err(Failure::other("starttls", "bytes-after-220"));
        }
        c.s
    };
    let tls = tokio::time::timeout(ctx.timeout, ctx.tls.connect(ctx.server_name.clone(), tcp))
        .await
        .map_err(|_| Failure::other("tls", "timeout"))?
        .map_err(|_| Failure::other("tls", "handshake"))?;
    st.handshakes += 1;
    let mut c = Conn {
        s: tls,
        buf: Vec::new(),
        timeout: ctx.timeout,
    };
    if ctx.implicit {
        c.expect("banner", 2).await?;
    }
    c.send("ehlo", format!("EHLO {}\r\n", ctx.helo).as_bytes())
        .await?;
    let ehlo = c.expect("ehlo", 2).await?;
    let pipelining = offers(&ehlo, "PIPELINING");
    if let Some(auth) = &ctx.auth {
        c.send("auth", format!("AUTH PLAIN {auth}\r\n").as_bytes())
            .await?;
        c.expect("auth", 2).await?;
    }
    let mail = format!("MAIL FROM:<{}>\r\n", ctx.from);
    let rcpt = format!("RCPT TO:<{}>\r\n", ctx.to);
    let (body, dot) = ctx.message.split_at(ctx.message.len() - 3);
    for _ in 0..count {
        if pipelining {
            c.send("mail", format!("{mail}{rcpt}DATA\r\n").as_bytes())
                .await?;
        } else {
            c.send("mail", mail.as_bytes()).await?;
        }
        c.expect("mail", 2).await?;
        if !pipelining {
            c.send("rcpt", rcpt.as_bytes()).await?;
        }
        c.expect("rcpt", 2).await?;
        if !pipelining {
            c.send("data", b"DATA\r\n").await?;
        }
        c.expect("data", 3).await?;
        c.send("body", body).await?;
        let t0 = Instant::now();
        c.send("dot", dot).await?;
        c.expect("dot", 2).await?;
        st.latencies_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        st.messages += 1;
    }
    c.send("quit", b"QUIT\r\n").await?;
    c.expect("quit", 2).await?;
    let _ = c.s.shutdown().await;
    Ok(())
}

/// A message of about `size` bytes: a header, then lines of letters (none starts with a
/// dot, so nothing needs stuffing), then the final dot.
pub fn message(from: &str, to: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: mta-load\r\nMessage-ID: <{}@load-client.test>\r\n\r\n",
        std::process::id()
    )
    .into_bytes();
    let line: Vec<u8> = (0..76).map(|i| b'a' + (i % 26) as u8).collect();
    while m.len() + 2 < size {
        let n = (size - m.len() - 2).min(line.len());
        m.extend_from_slice(&line[..n]);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b".\r\n");
    m
}

pub mod insecure {
    //! A verifier that accepts every certificate (the handshake signature is still checked,
    //! so the TLS work is the same): for self-signed benchmark certificates only.
    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    #[derive(Debug)]
    pub struct AcceptAny(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// Runs `sessions` workers until `messages` messages have been given to sessions of at
/// most `per_session` each. With `retry_temporary`, a session ended by a 4xx gives its
/// unsent messages back after 100 ms (at most `messages` times in all). Returns what was
/// counted, the messages not accepted in the end, and how many sessions were retried.
pub async fn run(
    ctx: Arc<Ctx>,
    sessions: usize,
    messages: usize,
    per_session: usize,
    retry_temporary: bool,
) -> (Stats, u64, u64) {
    // Messages not yet given to a session: each session takes up to per_session of them.
    let left = Arc::new(AtomicUsize::new(messages));
    let retries = Arc::new(AtomicUsize::new(if retry_temporary { messages } else { 0 }));
    let retried_before = retries.load(Ordering::SeqCst);
    let (all, failed) = {
        let mut tasks = Vec::new();
        for _ in 0..sessions {
            let (ctx, left, retries) = (ctx.clone(), left.clone(), retries.clone());
            tasks.push(tokio::spawn(async move {
                let mut st = Stats::default();
                let mut failed = 0u64;
                loop {
                    let take = left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                            n.checked_sub(n.min(per_session)).filter(|_| n > 0)
                        })
                        .map(|n| n.min(per_session))
                        .unwrap_or(0);
                    if take == 0 {
                        break;
                    }
                    let before = st.messages;
                    if let Err(Failure(key, temporary)) = session(&ctx, take, &mut st).await {
                        *st.errors.entry(key).or_default() += 1;
                        let unsent = take - (st.messages - before) as usize;
                        let retry = temporary
                            && retries
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                        if retry {
                            left.fetch_add(unsent, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        } else {
                            failed += unsent as u64;
                        }
                    }
                }
                (st, failed)
            }));
        }
        let mut all = Stats::default();
        let mut failed = 0;
        for t in tasks {
            let (st, f) = t.await.expect("a load task panicked");
            all.handshakes += st.handshakes;
            all.messages += st.messages;
            all.latencies_ms.extend(st.latencies_ms);
            for (k, v) in st.errors {
                *all.errors.entry(k).or_default() += v;
            }
            failed += f;
        }
        (all, failed)
    };
    let retried = (retried_before - retries.load(Ordering::SeqCst)) as u64;
    (all, failed, retried)
}

#[cfg(test)]
mod tests;
