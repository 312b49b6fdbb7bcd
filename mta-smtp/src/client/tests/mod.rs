//! Tests of the client's I/O against scripted fake servers on 127.0.0.1 (RFC 5321 dialogues,
//! RFC 3207 STARTTLS, RFC 2920 pipelining, RFC 4954 AUTH). Each server follows a script of
//! lines to expect and bytes to send, records every byte the client sent, and fails the
//! test when the client says something else.

mod bad_servers;
mod delivery;
mod lmtp;
mod tls_auth;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mta_core::address::{Address, ReversePath};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::{ClientSettings, Target, Timeouts, TlsPolicy};

/// One step of a fake server's script.
pub(super) enum Step {
    /// Read one line and require it to be exactly this (without CRLF).
    C(&'static str),
    /// Send these bytes as they are.
    S(&'static str),
    /// Send owned bytes.
    Bytes(Vec<u8>),
    /// Read message data up to and including the line `.`.
    Data,
    /// Read up to this many octets of whatever comes, then go on.
    ReadSome(usize),
    /// TLS handshake as the server (the certificate is the server's).
    Tls,
    /// Wait.
    Sleep(Duration),
    /// Hang up.
    Close,
}

pub(super) use Step::{Bytes, C, Close, Data, ReadSome, S, Sleep, Tls};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How long a fake server waits for the client before it declares the test failed.
const SERVER_WAIT: Duration = Duration::from_secs(10);

/// A running fake server.
pub(super) struct FakeServer {
    pub(super) addr: SocketAddr,
    handle: JoinHandle<Result<Vec<u8>, String>>,
}

impl FakeServer {
    /// Starts a server for one connection.
    pub(super) async fn start(script: Vec<Step>, acceptor: Option<TlsAcceptor>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let handle = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            run(Box::new(tcp), script, acceptor).await
        });
        FakeServer { addr, handle }
    }

    /// The target for this server, verified as `name`.
    pub(super) fn target(&self, name: &str) -> Target {
        Target {
            addr: self.addr,
            name: name.to_string(),
        }
    }

    /// Everything the client sent, or why the script failed.
    pub(super) async fn finish(self) -> Result<String, String> {
        let bytes = self.handle.await.map_err(|e| e.to_string())??;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Everything the client sent; panics when the script failed.
    pub(super) async fn transcript(self) -> String {
        match self.finish().await {
            Ok(t) => t,
            Err(e) => panic!("fake server: {e}"),
        }
    }
}

async fn run(
    stream: Box<dyn Io>,
    script: Vec<Step>,
    acceptor: Option<TlsAcceptor>,
) -> Result<Vec<u8>, String> {
    let mut io = BufReader::new(stream);
    let mut seen = Vec::new();
    for step in script {
        match step {
            Step::C(want) => {
                let line = read_line(&mut io, &mut seen).await?;
                if line != format!("{want}\r\n") {
                    return Err(format!("expected {want:?}, client sent {line:?}"));
                }
            }
            Step::S(text) => write(&mut io, text.as_bytes()).await?,
            Step::Bytes(bytes) => write(&mut io, &bytes).await?,
            Step::Data => loop {
                if read_line(&mut io, &mut seen).await? == ".\r\n" {
                    break;
                }
            },
            Step::ReadSome(max) => {
                let mut buf = vec![0u8; max];
                let n = wait(io.read(&mut buf)).await?.map_err(|e| e.to_string())?;
                seen.extend_from_slice(&buf[..n]);
            }
            Step::Tls => {
                if !io.buffer().is_empty() {
                    return Err("client pipelined after STARTTLS".into());
                }
                let acceptor = acceptor
                    .clone()
                    .ok_or("script has Tls but no certificate")?;
                let tls = wait(acceptor.accept(io.into_inner()))
                    .await?
                    .map_err(|e| format!("TLS accept: {e}"))?;
                io = BufReader::new(Box::new(tls));
            }
            Step::Sleep(d) => tokio::time::sleep(d).await,
            Step::Close => return Ok(seen),
        }
    }
    // Whatever the client sends until it hangs up (nothing, if the script was complete).
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(SERVER_WAIT, io.read_to_end(&mut rest)).await;
    seen.extend_from_slice(&rest);
    Ok(seen)
}

async fn wait<T>(fut: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(SERVER_WAIT, fut)
        .await
        .map_err(|_| "fake server waited too long for the client".to_string())
}

async fn read_line(io: &mut BufReader<Box<dyn Io>>, seen: &mut Vec<u8>) -> Result<String, String> {
    let mut line = Vec::new();
    let n = wait(io.read_until(b'\n', &mut line))
        .await?
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("client hung up".into());
    }
    seen.extend_from_slice(&line);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

async fn write(io: &mut BufReader<Box<dyn Io>>, bytes: &[u8]) -> Result<(), String> {
    let stream = io.get_mut();
    stream.write_all(bytes).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())
}

/// Settings with short timeouts (so a broken test fails fast) and no credentials.
pub(super) fn settings(policy: TlsPolicy) -> ClientSettings {
    let s = Duration::from_secs(5);
    ClientSettings {
        helo: "client.test".into(),
        policy,
        auth: None,
        connect_timeout: s,
        timeouts: Timeouts {
            greeting: s,
            ehlo: s,
            mail: s,
            rcpt: s,
            data_init: s,
            data_block: s,
            final_dot: s,
            tls_handshake: s,
            quit: s,
        },
    }
}

pub(super) fn addr(s: &str) -> Address {
    Address::parse(s).expect("test address")
}

pub(super) fn sender() -> ReversePath {
    ReversePath::Address(addr("a@example.org"))
}

/// A server certificate for `name` with the key, as rustls wants them.
pub(super) struct ServerCert {
    /// The certificate chain, leaf first.
    pub(super) chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub(super) key: PrivateKeyDer<'static>,
    /// The root a client must trust (the CA, or the certificate itself when self-signed).
    pub(super) root: CertificateDer<'static>,
}

impl ServerCert {
    /// A self-signed certificate.
    pub(super) fn self_signed(name: &str) -> ServerCert {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
        let cert = ck.cert.der().clone();
        ServerCert {
            chain: vec![cert.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der())),
            root: cert,
        }
    }

    /// A leaf for `name` issued by a fresh test CA.
    pub(super) fn from_ca(name: &str) -> ServerCert {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mta test CA");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
        ServerCert {
            chain: vec![leaf.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            root: ca.as_ref().der().clone(),
        }
    }

    pub(super) fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .expect("server certificate");
        TlsAcceptor::from(Arc::new(config))
    }

    /// Trust anchors holding only this certificate's root.
    pub(super) fn roots(&self) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.clone()).expect("root");
        Arc::new(roots)
    }
}
