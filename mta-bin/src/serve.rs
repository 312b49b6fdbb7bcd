//! `mta serve`: prepares the data dir and certificate, binds the listeners, drops privileges
//! and enters the sandbox, opens the queue, prints the ready line, runs the server and the
//! scheduler, and stops cleanly on SIGTERM or SIGINT; SIGHUP reloads the config (`reload.rs`).
//!
//! Start-up order: config (main.rs) → soft descriptor limit raised to the hard one
//! (`fd_limit`) → who to run as (`privileges::Plan`) → data dir →
//! certificate → DKIM keys (read, to fail early) → data-dir owner and modes → bind → drop
//! privileges → sandbox → runtime → queue, users, router, inbound checks → listen → control
//! socket → ready line. Everything up to the sandbox runs on the main thread alone: Landlock
//! and seccomp bind only the thread that applies them and the threads it starts later, and
//! no network input is read before the privileges are gone.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
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
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::cert::load_tls;
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
pub fn run(
    config: Config,
    config_file: Option<PathBuf>,
    format: LogFormat,
    source: &crate::ConfigSource,
) -> anyhow::Result<()> {
    init_logging(format);
    // Before anything is opened; the limit holds for every thread started later.
    crate::fd_limit::raise_and_log(&config);
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
    // The checks `mta check-config` runs too: every problem named at once, before anything
    // is created or bound. The router reads the DKIM keys and the password again.
    let report = preflight(&config);
    for warning in &report.warnings {
        warn!("{warning}");
    }
    if !report.errors.is_empty() {
        bail!("{}", report.errors.join("\n"));
    }
    let mail_group = privileges::mail_group(&config, &plan)?;
    prepare_data_dir(&config.data_dir)?;
    let (acceptor, cert_note) = load_tls(&config)?;
    privileges::secure_data_dir(&config.data_dir, &plan, mail_group)?;
    let sockets = mta_smtp::server::bind_sockets(&config)?;
    let acme_listener = crate::acme::bind(&config)?;
    privileges::drop_to(&plan, mail_group)?;
    // A data dir under a directory the new user may not enter (/root, a 0700 home) would
    // otherwise fail later as "cannot open the queue".
    fs::read_dir(&config.data_dir).with_context(|| {
        format!(
            "data dir {} cannot be used after dropping privileges (is a parent directory \
             closed to the user mta serves as?)",
            config.data_dir.display()
        )
    })?;
    // Made as the user mta serves as, so it can read it again on a reload.
    config.srs.keys = crate::srs_cmd::load_or_create(&config)?;
    sandbox::apply(&config, config_file.as_deref())?;
    check_readable(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let config = Arc::new(config);
    let said = Said {
        format,
        config_flag: match source.path() {
            Some(p) => format!(" --config {}", p.display()),
            None => String::new(),
        },
    };
    let result = runtime.block_on(serve(
        config,
        config_file,
        acceptor,
        cert_note,
        (sockets, acme_listener),
        said,
    ));
    // A store write or flush that sled never returned from (after a full disk) sits on a
    // blocking-pool thread: do not wait for it to exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// What [`preflight`] found: problems that stop `mta serve` (and make `mta check-config`
/// exit 2), and ones it only warns about.
#[derive(Debug, Default)]
pub struct Preflight {
    /// Each stops the start.
    pub errors: Vec<String>,
    /// Each is logged; the start goes on.
    pub warnings: Vec<String>,
}

/// Every check `mta serve` makes on a valid config before it creates or binds anything, run
/// by `mta serve` and `mta check-config` alike, as the user running it: the certificate and
/// key (readable, parse, belong together, name the hostname), each DKIM key, the smarthost
/// password, the data dir, the users file, and `local.mail_group` (exists; the process is a
/// member when it cannot make itself one). Changes nothing.
pub fn preflight(config: &Config) -> Preflight {
    let mut report = Preflight::default();
    match privileges::Plan::decide(config) {
        Ok(plan) => {
            if let Err(e) = privileges::mail_group(config, &plan) {
                report.errors.push(format!("{e:#}"));
            }
        }
        Err(e) => report.errors.push(format!("{e:#}")),
    }
    check_tls(config, &mut report);
    report.errors.extend(crate::acme::preflight(config));
    for key in &config.dkim {
        if let Err(reason) = mta_smtp::dkim::PrivateKey::load(&key.key, key.algorithm) {
            report.errors.push(format!(
                "DKIM key {} ({}, selector {}): {reason}",
                key.key.display(),
                key.domain,
                key.selector
            ));
        }
    }
    if let Some(relay) = &config.outbound.relay {
        match &relay.password {
            Some(mta_core::config::PasswordSource::Env(var))
                if std::env::var_os(var).is_none_or(|v| v.is_empty()) =>
            {
                report.errors.push(format!(
                    "outbound.relay_password_env: the environment variable {var} is not set \
                     (or empty) for this process; set it where mta serve starts (systemd: \
                     Environment= or EnvironmentFile=)"
                ));
            }
            Some(mta_core::config::PasswordSource::Env(_)) => {}
            Some(mta_core::config::PasswordSource::File(path)) => {
                if let Err(e) = fs::read_to_string(path) {
                    report.errors.push(format!(
                        "outbound.relay_password_file: cannot read {}: {e}",
                        path.display()
                    ));
                }
            }
            None => {}
        }
    }
    check_data_dir(&config.data_dir, &mut report);
    report
}

/// The certificate and key: readable, parsed, a pair, and naming the hostname (a warning:
/// senders that verify the name refuse it, others do not care).
fn check_tls(config: &Config, report: &mut Preflight) {
    for (name, n) in &config.tls.names {
        let mut one = BTreeMap::new();
        one.insert(name.clone(), (n.cert.clone(), n.key.clone()));
        // Any pair serves as the default here: only the named one is checked.
        if let Err(e) = mta_smtp::tls::load_sni_acceptor(&n.cert, &n.key, &one) {
            report.errors.push(format!("{e}"));
        }
    }
    let (cert, key) = match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => return,
        _ => {
            report
                .errors
                .push("tls.cert and tls.key must be set together".to_string());
            return;
        }
    };
    if let Err(e) = mta_smtp::tls::load_acceptor(cert, key) {
        report.errors.push(format!("{e}"));
        return;
    }
    let hostname = config.hostname.as_str();
    let names = fs::read(cert)
        .map_err(|e| e.to_string())
        .and_then(|pem| crate::doctor::cert::facts(&pem));
    match names {
        Ok(facts)
            if !facts
                .dns_names
                .iter()
                .any(|n| crate::doctor::cert::name_matches(n, hostname)) =>
        {
            report.warnings.push(format!(
                "certificate {} does not name the hostname {hostname} (it names {}): senders \
                 that verify it refuse it",
                cert.display(),
                if facts.dns_names.is_empty() {
                    "no DNS name".to_string()
                } else {
                    facts.dns_names.join(", ")
                }
            ));
        }
        Ok(_) => {}
        Err(e) => report
            .warnings
            .push(format!("certificate {}: {e}", cert.display())),
    }
}

/// The data dir: a directory this process may write in, or one it may create; and the users
/// file in it readable.
fn check_data_dir(dir: &Path, report: &mut Preflight) {
    use nix::unistd::{AccessFlags, access};
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            report
                .errors
                .push(format!("data dir {} is not a directory", dir.display()));
            return;
        }
        Ok(_) => {
            if let Err(e) = access(dir, AccessFlags::W_OK | AccessFlags::X_OK) {
                report.errors.push(format!(
                    "data dir {} is not writable by this user (uid {}): {e}",
                    dir.display(),
                    nix::unistd::geteuid()
                ));
                return;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // mta serve creates it: its nearest existing parent must let us.
            let parent = dir
                .ancestors()
                .skip(1)
                .find(|p| !p.as_os_str().is_empty() && p.exists())
                .unwrap_or(Path::new("."));
            if let Err(e) = access(parent, AccessFlags::W_OK | AccessFlags::X_OK) {
                report.errors.push(format!(
                    "data dir {} does not exist and cannot be created in {}: {e}",
                    dir.display(),
                    parent.display()
                ));
            }
            return;
        }
        Err(e) => {
            report
                .errors
                .push(format!("data dir {}: {e}", dir.display()));
            return;
        }
    }
    let users = users::users_path(dir);
    // Root may run this: only a regular file is opened (opening a FIFO blocks, a device may
    // act on it), without waiting should one be swapped in after the check.
    let opened = fs::symlink_metadata(&users).and_then(|m| match m.is_file() {
        true => fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&users)
            .map(drop),
        false => Err(std::io::Error::other(
            "not a regular file (a symlink is not followed either)",
        )),
    });
    match opened {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report
            .errors
            .push(format!("users file {}: {e}", users.display())),
    }
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
    (sockets, acme_listener): (
        Vec<(ListenerKind, tokio::net::TcpSocket)>,
        Option<tokio::net::TcpSocket>,
    ),
    said: Said,
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
    let queue = open_queue(&config)?;
    let router = Arc::new(Switch::new(parts.router));
    let (stop, stopped) = watch::channel(false);
    let shared = Shared::new(
        config.clone(),
        users.clone(),
        queue.clone(),
        stopped.clone(),
    )
    .with(Some(parts.tls), parts.checks)
    .with_ledger(Arc::new(queue.store().clone()));
    let server = Server::listen(shared, sockets)?;
    let (config_tx, config_rx) = watch::channel(config.clone());
    let reloader = Reloader {
        path,
        current: server.current(),
        router: router.clone(),
        kept: kept.clone(),
        config: config_tx,
    };
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let hooks = control::Hooks {
        reload: reload_tx,
        memory: kept.memory.clone(),
        server: server.current(),
        dead: kept.dead.clone(),
    };
    let control = control::start(data_dir, queue.clone(), stopped.clone(), hooks)?;
    // Watched before anyone is told we are ready: a SIGTERM right after "mta ready" must
    // stop us cleanly, not kill us by its default action.
    let signals = Signals::watch()?;
    let metrics_addr = start_metrics(&config, &queue, &stopped).await?;
    if let Some(listener) = acme_listener {
        crate::acme::start(config.clone(), listener, stopped.clone());
    }
    let addrs = server.local_addrs();
    announce(
        &said,
        &config,
        &addrs,
        metrics_addr,
        &users,
        &parts.cert_note,
    );
    info!(hostname = %config.hostname, data_dir = %data_dir.display(), "started");

    let scheduler = start_deliveries(&config, &queue, router, &kept, config_rx, &stopped);
    let server = tokio::spawn(server.run());
    let stuck = run_until_stopped(signals, &queue, &reloader, reload_rx).await;
    info!("stopping: no new connections; waiting for sessions and deliveries");
    let _ = stop.send(true);
    let grace = reloader.current.get().config.shutdown_grace;
    wait_within_grace(grace, server, scheduler).await;
    if let Some(recorder) = kept.dmarc.clone() {
        // The sessions are over: the DMARC counts are final.
        let _ = tokio::task::spawn_blocking(move || recorder.save()).await;
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

/// The metrics listener, when `metrics.listen` is set: bound before the server says it is
/// ready, so a taken port stops the start. Its address.
async fn start_metrics(
    config: &Config,
    queue: &Arc<Queue>,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let Some(addr) = config.metrics_listen else {
        return Ok(None);
    };
    let (listener, addr) = metrics_http::bind(addr).await?;
    tokio::spawn(metrics_http::serve(
        listener,
        queue.clone(),
        stopped.clone(),
    ));
    Ok(Some(addr))
}

/// The delivery scheduler and, when on, the TLS report sender; the scheduler's task.
fn start_deliveries(
    config: &Config,
    queue: &Arc<Queue>,
    router: Arc<Switch>,
    kept: &Kept,
    config_rx: watch::Receiver<Arc<Config>>,
    stopped: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let scheduler = tokio::spawn(queue.clone().run(
        router as Arc<dyn Deliver>,
        DELIVERY_CONCURRENCY,
        stopped.clone(),
    ));
    if let Some(recorder) = &kept.dmarc {
        tokio::spawn(mta_smtp::dmarc_send::send::run(
            recorder.clone(),
            queue.clone(),
            config_rx.clone(),
            stopped.clone(),
        ));
    }
    if config.outbound.tls_reports {
        tokio::spawn(mta_smtp::relay::tlsrpt::run(
            kept.reports.clone(),
            queue.clone(),
            config_rx,
            stopped.clone(),
        ));
    }
    scheduler
}

/// The lines that say the server is ready: its addresses, its certificate, and what a
/// newcomer types next.
fn announce(
    said: &Said,
    config: &Config,
    addrs: &[(ListenerKind, std::net::SocketAddr)],
    metrics: Option<std::net::SocketAddr>,
    users: &users::UsersFile,
    cert_note: &str,
) {
    let mut ready: Vec<String> = addrs
        .iter()
        .map(|(k, a)| format!("{}={a}", k.name()))
        .collect();
    if let Some(addr) = metrics {
        ready.push(format!("metrics={addr}"));
    }
    said.line(&format!("mta ready {}", ready.join(" ")));
    said.line(cert_note);
    for hint in hints(config, addrs, users, &said.config_flag) {
        said.line(&hint);
    }
}

/// Waits for the sessions and the deliveries to end. One deadline for both: the grace
/// period bounds the whole stop (plus a second for the last replies), not each part in
/// turn. A reload may have changed the grace period: the one in force now counts.
async fn wait_within_grace(
    grace: Duration,
    server: tokio::task::JoinHandle<()>,
    scheduler: tokio::task::JoinHandle<()>,
) {
    let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(1);
    if tokio::time::timeout_at(deadline, server).await.is_err() {
        warn!("server did not stop within the grace period");
    }
    if tokio::time::timeout_at(deadline, scheduler).await.is_err() {
        warn!("deliveries did not finish within the grace period; they will be retried");
    }
}

/// The queue in `DATA_DIR/queue`, or why it cannot be opened with what to do about it.
fn open_queue(config: &Config) -> anyhow::Result<Arc<Queue>> {
    let dir = config.data_dir.join("queue");
    Queue::open(&dir, QueueSettings::from_config(config)).map_err(|e| {
        let advice = e.open_trouble().advice();
        anyhow::Error::new(e).context(format!(
            "cannot open the queue in {} ({advice})",
            dir.display()
        ))
    })
}

/// The signals that stop (SIGTERM, SIGINT) or reload (SIGHUP) the server.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn watch() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot watch SIGHUP")?,
        })
    }
}

/// Serves reloads until SIGTERM or SIGINT, or until the queue store is stuck; whether it
/// was stuck.
async fn run_until_stopped(
    mut signals: Signals,
    queue: &Queue,
    reloader: &Reloader,
    mut reload_rx: mpsc::Receiver<oneshot::Sender<Result<(), String>>>,
) -> bool {
    let mut health = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = signals.term.recv() => { info!("SIGTERM"); return false; }
            _ = signals.int.recv() => { info!("SIGINT"); return false; }
            _ = health.tick() => {
                // What got 250 is on disk; a new process opens the store afresh (systemd's
                // Restart=on-failure starts it again), where this one would answer 451 for
                // ever.
                if queue.store().is_stuck() {
                    error!("the queue store is stuck inside sled; stopping so that a restart can open it again");
                    return true;
                }
            }
            _ = signals.hup.recv() => { let _ = reload(reloader, "SIGHUP"); }
            Some(answer) = reload_rx.recv() => {
                let _ = answer.send(reload(reloader, "mta reload"));
            }
        }
    }
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
    // Started as root, this runs before privileges are dropped: a symlink the mta user
    // planted here must not make root create or truncate a file elsewhere. So the probe is
    // removed first (a link itself, not its target) and created anew, never through a link.
    let probe = dir.join(".write-test");
    let _ = fs::remove_file(&probe);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&probe)
        .with_context(|| format!("data dir {} is not writable", dir.display()))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// How the lines on stdout (ready, certificate, hints) are written: as text, or as JSON
/// objects like the log lines, so that every line of `--log-format json` parses.
struct Said {
    format: LogFormat,
    /// ` --config FILE` when a file is in use, for the hints' commands.
    config_flag: String,
}

impl Said {
    fn line(&self, text: &str) {
        match self.format {
            LogFormat::Text => println!("{text}"),
            LogFormat::Json => println!(
                "{}",
                serde_json::json!({
                    "timestamp": timestamp(),
                    "level": "INFO",
                    "message": text,
                })
            ),
        }
    }
}

/// Now in RFC 3339 UTC with microseconds, as the JSON log lines write it.
pub fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    mta_core::date::rfc3339_micros(now)
}

/// What a newcomer types next, only where it applies: with no user yet, how to add one
/// and send a first message (on the submission listener, if there is one).
fn hints(
    config: &Config,
    addrs: &[(ListenerKind, std::net::SocketAddr)],
    users: &users::UsersFile,
    config_flag: &str,
) -> Vec<String> {
    use mta_core::seams::UserDirectory as _;
    if !users.current().is_empty() {
        return Vec::new();
    }
    let domain = config
        .local_domains
        .iter()
        .find(|d| d.as_str() != "localhost")
        .or(config.local_domains.first())
        .map(|d| d.to_string())
        .unwrap_or_else(|| config.hostname.to_string());
    let mut out = vec![format!(
        "mta hint: no user yet; add one: mta user add you@{domain}{config_flag}"
    )];
    if let Some((_, sub)) = addrs.iter().find(|(k, _)| *k == ListenerKind::Submission) {
        out.push(format!(
            "mta hint: then send a message: MTA_PASSWORD=... mta send --server {sub} --tls \
             starttls --insecure --user you@{domain} --from you@{domain} --to you@{domain} \
             --subject hello --body 'first mail'"
        ));
        if config.local.delivery == mta_core::config::LocalDelivery::Maildir {
            out.push(format!(
                "mta hint: and find it in {}/mail/{domain}/you/Maildir/new/",
                config.data_dir.display()
            ));
        }
    }
    out
}
