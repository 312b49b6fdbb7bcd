//! `mta-load`: an SMTP load client over TLS for `scripts/bench.sh`.
//!
//! `--mode starttls25`: one message per connection, as another MTA sends (EHLO, STARTTLS,
//! EHLO, MAIL, RCPT, DATA, QUIT). `--mode submission`: STARTTLS (or TLS from the first byte
//! with `--implicit`, RFC 8314), AUTH PLAIN, then `--per-session` messages on the session.
//! `--sessions` connections run at once until `--messages` messages have been sent. MAIL,
//! RCPT and DATA go in one write when the server offers PIPELINING (RFC 2920).
//!
//! Every reply is checked: a message counts once its final dot got a 2xx; anything else is
//! an error, counted by command and reply code, and ends that session (with
//! `--retry-temporary`, a 4xx gives the session's messages back to be sent again). Prints
//! one `key=value` line; exits 1 when any error was counted (with `--retry-temporary`: when
//! any message was not accepted in the end).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::{Parser, ValueEnum};
use mta_bench::load::{self, Ctx, insecure, message};
use mta_bench::percentile;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Port 25 style: STARTTLS, no AUTH, one message per connection by default.
    Starttls25,
    /// Port 587 (or 465 with --implicit): TLS, AUTH PLAIN, several messages per session.
    Submission,
}

#[derive(Parser, Debug)]
#[command(
    name = "mta-load",
    about = "SMTP load over TLS: STARTTLS on port 25, or submission with AUTH"
)]
struct Args {
    /// The server, HOST:PORT.
    addr: String,
    #[arg(long, value_enum, default_value = "starttls25")]
    mode: Mode,
    /// TLS from the first byte (port 465) instead of STARTTLS.
    #[arg(long)]
    implicit: bool,
    /// Connections open at once.
    #[arg(long, default_value_t = 20)]
    sessions: usize,
    /// Messages in all.
    #[arg(long, default_value_t = 100)]
    messages: usize,
    /// Messages per connection (default: 1 for starttls25, 10 for submission).
    #[arg(long)]
    per_session: Option<usize>,
    /// Message size in bytes, header included.
    #[arg(long, default_value_t = 5120)]
    size: usize,
    #[arg(long, default_value = "sender@remote.test")]
    from: String,
    #[arg(long, default_value = "u@local.test")]
    to: String,
    /// The name sent in EHLO.
    #[arg(long, default_value = "load-client.test")]
    helo: String,
    /// AUTH PLAIN user (submission).
    #[arg(long)]
    user: Option<String>,
    /// AUTH PLAIN password (submission).
    #[arg(long, env = "MTA_LOAD_PASSWORD")]
    password: Option<String>,
    /// Verify the server's certificate against the CA certificates in this PEM file.
    #[arg(long, conflicts_with = "insecure_skip_verify")]
    ca: Option<PathBuf>,
    /// Accept any certificate: for benchmarks against self-signed test certificates only.
    #[arg(long)]
    insecure_skip_verify: bool,
    /// The name to verify the certificate against and send in SNI (default: HOST).
    #[arg(long)]
    server_name: Option<String>,
    /// Resume TLS sessions the server offers to resume (default: a full handshake on every
    /// connection, what a server pays for a client it has not seen recently).
    #[arg(long)]
    resume: bool,
    /// Runtime worker threads (1: the client takes at most one core, like smtp-source).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// When a session ends on a 4xx reply (a temporary failure: `454` to AUTH from a
    /// server that is busy checking passwords, `421`), send its messages again on a new
    /// connection after 100 ms, as a real client retries later. The error is still
    /// counted; at most `--messages` retries in all.
    #[arg(long)]
    retry_temporary: bool,
    /// Seconds to wait for any one reply.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// User and system CPU seconds this process has used, all threads: the `utime` and `stime`
/// of /proc/self/stat (what getrusage(RUSAGE_SELF) adds up, in clock ticks of 1/100 s,
/// USER_HZ on Linux).
fn cpu_secs() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_ascii_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    // Fields 14 and 15 of proc_pid_stat(5); `after` starts at field 3.
    (tick(11), tick(12))
}

fn tls_config(args: &Args) -> Result<rustls::ClientConfig, String> {
    let mut config = verifier_config(args)?;
    if !args.resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(config)
}

fn verifier_config(args: &Args) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if args.insecure_skip_verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(insecure::AcceptAny(provider)))
            .with_no_client_auth());
    }
    let Some(ca) = &args.ca else {
        return Err("give --ca FILE, or --insecure-skip-verify for a test certificate".into());
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate", ca.display()));
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(errors) => std::process::exit(i32::from(errors > 0)),
        Err(e) => {
            eprintln!("mta-load: {e}");
            std::process::exit(2);
        }
    }
}

fn run(args: &Args) -> Result<u64, String> {
    if args.sessions == 0 || args.messages == 0 {
        return Err("--sessions and --messages must be at least 1".into());
    }
    let per_session = args.per_session.unwrap_or(match args.mode {
        Mode::Starttls25 => 1,
        Mode::Submission => 10,
    });
    if per_session == 0 {
        return Err("--per-session must be at least 1".into());
    }
    let auth = match (args.mode, &args.user, &args.password) {
        (Mode::Submission, Some(u), Some(p)) => {
            Some(base64::engine::general_purpose::STANDARD.encode(format!("\0{u}\0{p}").as_bytes()))
        }
        (Mode::Submission, _, _) => return Err("submission needs --user and --password".into()),
        (Mode::Starttls25, None, None) => None,
        (Mode::Starttls25, _, _) => {
            return Err("--user/--password are for --mode submission".into());
        }
    };
    let host = args
        .addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .ok_or("the address must be HOST:PORT")?;
    let name = args.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| format!("{name}: {e}"))?;
    let ctx = Arc::new(Ctx {
        addr: args.addr.clone(),
        implicit: args.implicit,
        helo: args.helo.clone(),
        from: args.from.clone(),
        to: args.to.clone(),
        auth,
        message: message(&args.from, &args.to, args.size),
        tls: TlsConnector::from(Arc::new(tls_config(args)?)),
        server_name,
        timeout: Duration::from_secs(args.timeout),
    });
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| e.to_string())?;

    let (u0, s0) = cpu_secs();
    let t0 = Instant::now();
    let (mut st, failed, retried) = rt.block_on(load::run(
        ctx.clone(),
        args.sessions,
        args.messages,
        per_session,
        args.retry_temporary,
    ));
    let secs = t0.elapsed().as_secs_f64();
    let (u1, s1) = cpu_secs();
    st.latencies_ms.sort_by(f64::total_cmp);
    let p = |q| percentile(&st.latencies_ms, q).map_or("NaN".into(), |v| format!("{v:.1}"));
    let errors: u64 = st.errors.values().sum();
    let error_list = if st.errors.is_empty() {
        "none".to_string()
    } else {
        st.errors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let cpu = (u1 - u0) + (s1 - s0);
    println!(
        "mode={} sessions={} per_session={} messages={} failed={} secs={:.3} msg_per_s={:.0} \
         handshakes={} handshakes_per_s={:.0} p50_ms={} p99_ms={} errors={} retried_sessions={} error_kinds={} \
         client_cpu_user_s={:.2} client_cpu_sys_s={:.2} client_cpu_ms_per_msg={:.3}",
        if args.mode == Mode::Starttls25 {
            "starttls25"
        } else if ctx.implicit {
            "submissions"
        } else {
            "submission"
        },
        args.sessions,
        per_session,
        st.messages,
        failed,
        secs,
        st.messages as f64 / secs,
        st.handshakes,
        st.handshakes as f64 / secs,
        p(50.0),
        p(99.0),
        errors,
        retried,
        error_list,
        u1 - u0,
        s1 - s0,
        if st.messages > 0 {
            cpu * 1000.0 / st.messages as f64
        } else {
            0.0
        },
    );
    // With --retry-temporary, a temporary error that was retried is reported, not fatal.
    Ok(if args.retry_temporary { failed } else { errors })
}
