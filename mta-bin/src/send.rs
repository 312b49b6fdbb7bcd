//! `mta send`: one message through any SMTP server, with lettre. For trying our own server
//! and any other; prints the server's final reply and exits non-zero on failure.

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use lettre::address::Envelope;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How to talk TLS to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    /// STARTTLS, required (port 587, 25).
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// Plaintext (only for testing port 25 locally).
    None,
}

/// Options of `mta send`.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// The server as HOST:PORT.
    #[arg(long)]
    server: String,
    /// TLS mode.
    #[arg(long, value_enum, default_value = "starttls")]
    tls: TlsMode,
    /// Also trust the CA certificates (PEM) in this file, e.g. a server's self-signed certificate.
    #[arg(long)]
    cafile: Option<PathBuf>,
    /// The name to verify in the server's certificate (default: HOST from --server).
    #[arg(long)]
    tls_name: Option<String>,
    /// Do not verify the server's certificate (testing only).
    #[arg(long)]
    insecure: bool,
    /// Log in as this user; the password comes from MTA_PASSWORD or one line of stdin.
    #[arg(long)]
    user: Option<String>,
    /// Envelope sender (and From: header unless --raw).
    #[arg(long)]
    from: String,
    /// Envelope recipient (and To: header unless --raw); repeat for several.
    #[arg(long, required = true)]
    to: Vec<String>,
    /// Subject header.
    #[arg(long, default_value = "")]
    subject: String,
    /// Message body text.
    #[arg(long, default_value = "")]
    body: String,
    /// Read a complete RFC 5322 message from stdin and send it as it is (LF line endings
    /// become CRLF, as SMTP requires).
    #[arg(long, conflicts_with_all = ["subject", "body"])]
    raw: bool,
    /// Name to give in EHLO.
    #[arg(long, default_value = "mta-send.localhost")]
    helo: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// Runs `mta send`.
///
/// # Errors
/// Bad options, an unreachable server, or a refusal (the server's reply is in the error).
pub fn run(args: SendArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(send(args))
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let (host, port) = split_server(&args.server)?;
    let mut stdin = std::io::stdin().lock();
    let password = match &args.user {
        None => None,
        Some(_) => Some(match std::env::var("MTA_PASSWORD") {
            Ok(p) => p,
            Err(_) => {
                let mut line = String::new();
                stdin
                    .read_line(&mut line)
                    .context("reading the password from stdin")?;
                line.trim_end_matches(['\r', '\n']).to_string()
            }
        }),
    };
    let from: lettre::Address = args
        .from
        .parse()
        .with_context(|| format!("--from {:?}", args.from))?;
    let to: Vec<lettre::Address> = args
        .to
        .iter()
        .map(|t| t.parse().with_context(|| format!("--to {t:?}")))
        .collect::<anyhow::Result<_>>()?;
    let bytes = if args.raw {
        let mut raw = Vec::new();
        stdin
            .read_to_end(&mut raw)
            .context("reading the message from stdin")?;
        if raw.is_empty() {
            bail!("--raw: no message on stdin");
        }
        wire_form(&raw)
    } else {
        let mut builder = Message::builder()
            .from(Mailbox::new(None, from.clone()))
            .subject(args.subject.clone());
        for t in &to {
            builder = builder.to(Mailbox::new(None, t.clone()));
        }
        builder
            .header(ContentType::TEXT_PLAIN)
            .body(args.body.clone())
            .context("building the message")?
            .formatted()
    };
    let envelope = Envelope::new(Some(from), to).context("envelope")?;

    let tls_name = args.tls_name.clone().unwrap_or_else(|| host.clone());
    let mut params = TlsParameters::builder(tls_name).dangerous_accept_invalid_certs(args.insecure);
    if let Some(ca) = &args.cafile {
        let pem =
            std::fs::read(ca).with_context(|| format!("cannot read --cafile {}", ca.display()))?;
        params = params.add_root_certificate(
            Certificate::from_pem(&pem)
                .with_context(|| format!("--cafile {} is not a PEM certificate", ca.display()))?,
        );
    }
    let params = params.build().context("TLS parameters")?;
    let tls = match args.tls {
        TlsMode::Starttls => Tls::Required(params),
        TlsMode::Implicit => Tls::Wrapper(params),
        TlsMode::None => Tls::None,
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .hello_name(ClientId::Domain(args.helo.clone()))
        .timeout(Some(Duration::from_secs(args.timeout)));
    if let (Some(user), Some(password)) = (&args.user, password) {
        transport = transport.credentials(Credentials::new(user.clone(), password));
    }
    let transport = transport.build();
    let result = transport.send_raw(&envelope, &bytes).await;
    transport.shutdown().await;
    match result {
        Ok(response) => {
            let text: Vec<&str> = response.message().collect();
            println!("{} {}", response.code(), text.join(" "));
            Ok(())
        }
        Err(e) => bail!("not sent: {e}"),
    }
}

/// The message as SMTP carries it: every line ending CRLF (a Unix file's bare LF becomes
/// CRLF), and without its last CRLF, which the end-of-data marker supplies (lettre always
/// sends CRLF.CRLF after the data).
fn wire_form(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    if out.ends_with(b"\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}

fn split_server(server: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = server
        .rsplit_once(':')
        .with_context(|| format!("--server {server:?}: expected HOST:PORT"))?;
    let port = port
        .parse()
        .with_context(|| format!("--server {server:?}: bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("--server {server:?}: empty host");
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::wire_form;

    #[test]
    fn raw_messages_become_crlf_without_the_last_line_break() {
        let table: [(&[u8], &[u8]); 4] = [
            (b"Subject: a\r\n\r\nbody\r\n", b"Subject: a\r\n\r\nbody"),
            (b"Subject: a\n\nbody\n", b"Subject: a\r\n\r\nbody"),
            (b"Subject: a\n\nbody", b"Subject: a\r\n\r\nbody"),
            (b"a\r\n\r\n", b"a\r\n"),
        ];
        for (input, want) in table {
            assert_eq!(
                wire_form(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
