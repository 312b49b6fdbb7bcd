//! `mta serve`: prepares the data dir and certificate, binds the listeners, drops privileges
//! and enters the sandbox, opens the queue, prints the ready line, runs the server and the
//! scheduler, and stops cleanly on SIGTERM or SIGINT; SIGHUP reloads the config (`reload.rs`).
//!
//! Start-up order: config (main.rs) → who to run as (`privileges::Plan`) → data dir →
//! certificate → DKIM keys (read, to fail early) → data-dir owner and modes → bind → drop
//! privileges → sandbox → runtime → queue, users, router, inbound checks → listen → control
//! socket → ready line. Everything up to the sandbox runs on the main thread alone: Landlock
//! and seccomp bind only the thread that applies them and the threads it starts later, and
//! no network input is read before the privileges are gone.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mta_core::config::Config;
use mta_core::envelope::ListenerKind;
use mta_core::seams::Deliver;
use mta_queue::{Queue, QueueSettings};
use mta_smtp::relay::Kept;
use mta_smtp::relay::memory::TlsMemory;
use mta_smtp::server::{Server, Shared};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::reload::{Parts, Reloader, Switch};
use crate::{control, metrics_http, privileges, sandbox, users};

/// Concurrent delivery attempts (messages); remote connections are bounded separately by
/// `outbound.max_connections` and `outbound.max_per_domain`.
const DELIVERY_CONCURRENCY: usize = 64;

/// Runs the MTA until SIGTERM/SIGINT. `config_file` is the file the config came from, kept
/// readable by the sandbox.
///
/// # Errors
/// Anything that stops start-up: an unusable data dir, certificate, queue or port, an
/// unknown `user`, serving as root without `allow_root`, a sandbox that cannot be set up.
pub fn run(config: Config, config_file: Option<PathBuf>, format: LogFormat) -> anyhow::Result<()> {
    init_logging(format);
    // Nothing we create is for other users: sled's files, Maildirs, sockets.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // The built-in defaults (no config file) listen on loopback only, on unprivileged ports:
    // the way to try mta out, where refusing root would only get in the way. Any config file
    // must say `user` or `allow_root` to serve as root.
    let mut config = config;
    let trying = config_file.is_none() && config.process.user.is_none();
    if trying && nix::unistd::geteuid().is_root() {
        config.process.allow_root = true;
    }
    let plan = privileges::Plan::decide(&config)?;
    prepare_data_dir(&config.data_dir)?;
    let (acceptor, cert_note) = load_tls(&config)?;
    // Read the DKIM keys now, as root if we started as root, so that a missing key stops
    // the start with its name before anything else; the router reads them again.
    mta_smtp::dkim::Signer::load(&config)?;
    privileges::secure_data_dir(&config.data_dir, &plan)?;
    let sockets = mta_smtp::server::bind_sockets(&config)?;
    privileges::drop_to(&plan)?;
    // A data dir under a directory the new user may not enter (/root, a 0700 home) would
    // otherwise fail later as "cannot open the queue".
    fs::read_dir(&config.data_dir).with_context(|| {
        format!(
            "data dir {} cannot be used after dropping privileges (is a parent directory \
             closed to the user mta serves as?)",
            config.data_dir.display()
        )
    })?;
    sandbox::apply(&config, config_file.as_deref())?;
    check_readable(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let config = Arc::new(config);
    let result = runtime.block_on(serve(config, config_file, acceptor, cert_note, sockets));
    // A store write or flush that sled never returned from (after a full disk) sits on a
    // blocking-pool thread: do not wait for it to exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Warns about configured files the dropped, sandboxed process can no longer read: they were
/// read at start, but a reload would fail on them.
fn check_readable(config: &Config) {
    let files = config.tls.cert.iter().chain(config.tls.key.iter());
    for file in files.chain(config.dkim.iter().map(|k| &k.key)) {
        if let Err(e) = fs::File::open(file) {
            warn!(
                path = %file.display(),
                error = %e,
                "read at start-up, but not readable now: a reload will fail on it \
                 (make it readable by the user mta runs as)"
            );
        }
    }
}

/// How log lines are written (`--log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, with the span fields (session, queue id), for log shippers.
    Json,
}

/// Logs to stderr (journald keeps it under systemd), filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

async fn serve(
    config: Arc<Config>,
    path: Option<PathBuf>,
    acceptor: tokio_rustls::TlsAcceptor,
    cert_note: String,
    sockets: Vec<(ListenerKind, tokio::net::TcpSocket)>,
) -> anyhow::Result<()> {
    let data_dir = &config.data_dir;
    let kept = Kept::new(
        &config,
        Arc::new(TlsMemory::open(data_dir, config.outbound.tls_memory)),
    );
    let users = Arc::new(users::UsersFile::open(data_dir)?);
    let parts = Parts::with_tls(
        config.clone(),
        kept.clone(),
        users.clone(),
        acceptor,
        cert_note,
    )?;
    let queue = Queue::open(&data_dir.join("queue"), QueueSettings::from_config(&config))
        .with_context(|| {
            format!(
                "cannot open the queue in {} (is another mta serve using this data dir?)",
                data_dir.join("queue").display()
            )
        })?;
    let router = Arc::new(Switch::new(parts.router));
    let (stop, stopped) = watch::channel(false);
    let server = Server::listen(
        Shared {
            config: config.clone(),
            users,
            queue: queue.clone(),
            tls: Some(parts.tls),
            shutdown: stopped.clone(),
            guards: Default::default(),
            checks: parts.checks,
        },
        sockets,
    )?;
    let (config_tx, config_rx) = watch::channel(config.clone());
    let reloader = Reloader {
        path,
        current: server.current(),
        router: router.clone(),
        kept: kept.clone(),
        config: config_tx,
    };
    let (reload_tx, mut reload_rx) = mpsc::channel(4);
    let hooks = control::Hooks {
        reload: reload_tx,
        memory: kept.memory.clone(),
    };
    let control = control::start(data_dir, queue.clone(), stopped.clone(), hooks)?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(metrics_http::bind(addr).await?),
        None => None,
    };

    // Watched before anyone is told we are ready: a SIGTERM right after "mta ready" must
    // stop us cleanly, not kill us by its default action.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let addrs = server.local_addrs();
    let mut ready: Vec<String> = addrs
        .iter()
        .map(|(k, a)| format!("{}={a}", k.name()))
        .collect();
    if let Some((listener, addr)) = metrics {
        ready.push(format!("metrics={addr}"));
        tokio::spawn(metrics_http::serve(
            listener,
            queue.clone(),
            stopped.clone(),
        ));
    }
    println!("mta ready {}", ready.join(" "));
    println!("{}", parts.cert_note);
    print_hint(&config, &addrs);
    info!(hostname = %config.hostname, data_dir = %data_dir.display(), "started");

    let scheduler = tokio::spawn(queue.clone().run(
        router as Arc<dyn Deliver>,
        DELIVERY_CONCURRENCY,
        stopped.clone(),
    ));
    if config.outbound.tls_reports {
        tokio::spawn(mta_smtp::relay::tlsrpt::run(
            kept.reports.clone(),
            queue.clone(),
            config_rx,
            stopped.clone(),
        ));
    }
    let server = tokio::spawn(server.run());
    let mut health = tokio::time::interval(Duration::from_secs(5));
    let mut stuck = false;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); break; }
            _ = int.recv() => { info!("SIGINT"); break; }
            _ = health.tick() => {
                // What got 250 is on disk; a new process opens the store afresh (systemd's
                // Restart=on-failure starts it again), where this one would answer 451 for
                // ever.
                if queue.store().is_stuck() {
                    error!("the queue store is stuck inside sled; stopping so that a restart can open it again");
                    stuck = true;
                    break;
                }
            }
            _ = hup.recv() => { let _ = reload(&reloader, "SIGHUP"); }
            Some(answer) = reload_rx.recv() => {
                let _ = answer.send(reload(&reloader, "mta reload"));
            }
        }
    }
    info!("stopping: no new connections; waiting for sessions and deliveries");
    let _ = stop.send(true);
    // One deadline for sessions and deliveries together: the grace period bounds the whole
    // stop (plus a second for the last replies), not each part in turn. A reload may have
    // changed the grace period: the one in force now counts.
    let grace = reloader.current.get().config.shutdown_grace;
    let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(1);
    if tokio::time::timeout_at(deadline, server).await.is_err() {
        warn!("server did not stop within the grace period");
    }
    if tokio::time::timeout_at(deadline, scheduler).await.is_err() {
        warn!("deliveries did not finish within the grace period; they will be retried");
    }
    let _ = control.await;
    if stuck {
        bail!(
            "stopped: the queue store was stuck inside sled (see docs/durability.md, \"Disk full\")"
        );
    }
    queue.store().flush().await.context("final queue flush")?;
    info!("stopped");
    Ok(())
}

/// Reloads and logs the outcome; the error text is also what `mta reload` prints.
fn reload(reloader: &Reloader, why: &str) -> Result<(), String> {
    match reloader.reload() {
        Ok(()) => {
            info!(trigger = why, "config reloaded");
            Ok(())
        }
        Err(e) => {
            error!(trigger = why, error = %format!("{e:#}"), "reload refused; the old config stays in force");
            Err(format!("{e:#}"))
        }
    }
}

/// Creates the data dir (0700) if missing and checks that we can write in it.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let probe = dir.join(".write-test");
    fs::write(&probe, b"")
        .with_context(|| format!("data dir {} is not writable", dir.display()))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// The configured certificate, or a self-signed one made once in `DATA_DIR/tls/`.
pub(crate) fn load_tls(config: &Config) -> anyhow::Result<(tokio_rustls::TlsAcceptor, String)> {
    let (cert, key, note) = match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => (
            c.clone(),
            k.clone(),
            format!("mta tls certificate {}", c.display()),
        ),
        (None, None) => {
            let (c, k, made) = self_signed(config)?;
            let how = if made {
                "generated now"
            } else {
                "generated earlier"
            };
            let note = format!(
                "mta tls self-signed certificate {} ({how}; set [tls] cert and key for a real one)",
                c.display()
            );
            (c, k, note)
        }
        _ => bail!("tls.cert and tls.key must be set together"),
    };
    let acceptor = mta_smtp::tls::load_acceptor(&cert, &key)?;
    Ok((acceptor, note))
}

fn self_signed(config: &Config) -> anyhow::Result<(PathBuf, PathBuf, bool)> {
    let dir = config.data_dir.join("tls");
    let cert = dir.join("selfsigned-cert.pem");
    let key = dir.join("selfsigned-key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key, false));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let names = vec![
        config.hostname.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let made =
        rcgen::generate_simple_self_signed(names).context("cannot generate a certificate")?;
    write_private(&key, made.signing_key.serialize_pem().as_bytes())?;
    fs::write(&cert, made.cert.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    Ok((cert, key, true))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// What a newcomer types next.
fn print_hint(config: &Config, addrs: &[(ListenerKind, std::net::SocketAddr)]) {
    let Some((_, sub)) = addrs.iter().find(|(k, _)| *k == ListenerKind::Submission) else {
        return;
    };
    let domain = config
        .local_domains
        .iter()
        .find(|d| d.as_str() != "localhost")
        .or(config.local_domains.first())
        .map(|d| d.to_string())
        .unwrap_or_else(|| config.hostname.to_string());
    println!(
        "mta hint: add a user:    mta user add you@{domain}\n\
         mta hint: send a message: MTA_PASSWORD=... mta send --server {sub} --tls starttls --insecure \
         --user you@{domain} --from you@{domain} --to you@{domain} --subject hello --body 'first mail'\n\
         mta hint: find it in     {}/mail/{domain}/you/Maildir/new/",
        config.data_dir.display()
    );
}
