//! `mta serve`: prepares the data dir and certificate, opens the queue, binds the
//! listeners, prints the ready line, runs the server and the scheduler, and stops cleanly
//! on SIGTERM or SIGINT.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mta_core::config::Config;
use mta_core::envelope::ListenerKind;
use mta_queue::{Queue, QueueSettings};
use mta_smtp::router::Router;
use mta_smtp::server::{Server, Shared};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{control, users};

/// Concurrent delivery attempts (messages); remote connections are bounded separately by
/// `outbound.max_connections` and `outbound.max_per_domain`.
const DELIVERY_CONCURRENCY: usize = 64;

/// Runs the MTA until SIGTERM/SIGINT.
///
/// # Errors
/// Anything that stops start-up: an unusable data dir, certificate, queue or port.
pub fn run(config: Config) -> anyhow::Result<()> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(Arc::new(config)))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

async fn serve(config: Arc<Config>) -> anyhow::Result<()> {
    let data_dir = &config.data_dir;
    prepare_data_dir(data_dir)?;
    let (acceptor, cert_note) = load_tls(&config)?;
    let queue = Queue::open(&data_dir.join("queue"), QueueSettings::from_config(&config))
        .with_context(|| {
            format!(
                "cannot open the queue in {} (is another mta serve using this data dir?)",
                data_dir.join("queue").display()
            )
        })?;
    let users = Arc::new(users::UsersFile::open(data_dir)?);
    let router = Arc::new(Router::new(config.clone()).context("cannot set up delivery")?);
    let (stop, stopped) = watch::channel(false);
    let server = Server::bind(Shared {
        config: config.clone(),
        users,
        queue: queue.clone(),
        tls: Some(acceptor),
        shutdown: stopped.clone(),
        guards: Default::default(),
    })
    .await?;
    let control = control::start(data_dir, queue.clone(), stopped.clone())?;

    let addrs = server.local_addrs();
    let ready: Vec<String> = addrs
        .iter()
        .map(|(k, a)| format!("{}={a}", k.name()))
        .collect();
    println!("mta ready {}", ready.join(" "));
    println!("{cert_note}");
    print_hint(&config, &addrs);
    info!(hostname = %config.hostname, data_dir = %data_dir.display(), "started");

    let scheduler = tokio::spawn(
        queue
            .clone()
            .run(router, DELIVERY_CONCURRENCY, stopped.clone()),
    );
    let server = tokio::spawn(server.run());
    wait_for_signal().await?;
    info!("stopping: no new connections; waiting for sessions and deliveries");
    let _ = stop.send(true);
    // One deadline for sessions and deliveries together: the grace period bounds the whole
    // stop (plus a second for the last replies), not each part in turn.
    let deadline = tokio::time::Instant::now() + config.shutdown_grace + Duration::from_secs(1);
    if tokio::time::timeout_at(deadline, server).await.is_err() {
        warn!("server did not stop within the grace period");
    }
    if tokio::time::timeout_at(deadline, scheduler).await.is_err() {
        warn!("deliveries did not finish within the grace period; they will be retried");
    }
    let _ = control.await;
    queue.store().flush().await.context("final queue flush")?;
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    Ok(())
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
fn load_tls(config: &Config) -> anyhow::Result<(tokio_rustls::TlsAcceptor, String)> {
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
