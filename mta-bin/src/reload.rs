//! Reloading without a restart (SIGHUP, or `mta reload` through the control socket): the
//! config file is read again and everything that depends on it is built anew (certificate,
//! DKIM keys and outbound settings in a new router, inbound checks); only when all of it works
//! is it put in force, for connections accepted and deliveries started from then on. Sessions
//! and deliveries in progress finish with what they started with. A config that does not
//! parse, a key or certificate that cannot be read, or a change that needs a restart is
//! refused with one log line, and the old settings stay.
//!
//! The SRS secrets are read again too, so a reload puts `mta srs rotate` in force.
//!
//! Users need nothing: the users file is re-read whenever it changes. Certificate files that
//! change on disk are picked up without any reload (`mta_smtp::tls::ReloadingCert`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use mta_core::address::Address;
use mta_core::config::Config;
use mta_core::envelope::Envelope;
use mta_core::seams::{Body, BoxFuture, Deliver, Outcome, UserDirectory};
use mta_core::swap::Swap;
use mta_smtp::relay::Kept;
use mta_smtp::router::Router;
use mta_smtp::server::Current;
use mta_smtp::server::authcheck::Checker;
use tokio_rustls::TlsAcceptor;

/// What is built from a config: everything a reload replaces.
pub struct Parts {
    /// The config itself.
    pub config: Arc<Config>,
    /// The listeners' certificate.
    pub tls: TlsAcceptor,
    /// How to find the certificate, for the start-up line.
    pub cert_note: String,
    /// Local and remote delivery, with the DKIM keys.
    pub router: Arc<Router>,
    /// The inbound checks, when on.
    pub checks: Option<Arc<Checker>>,
}

impl Parts {
    /// Builds everything from `config`.
    ///
    /// # Errors
    /// The first part that cannot be built, naming its file or key.
    pub fn build(
        config: Arc<Config>,
        kept: Kept,
        users: Arc<dyn UserDirectory>,
    ) -> anyhow::Result<Parts> {
        let (tls, cert_note) = crate::cert::load_tls(&config)?;
        Parts::with_tls(config, kept, users, tls, cert_note)
    }

    /// [`Parts::build`] with the certificate already loaded (at start-up, before privileges
    /// were dropped, so a key only root may read still works).
    ///
    /// # Errors
    /// The router or the inbound checks cannot be set up.
    pub fn with_tls(
        config: Arc<Config>,
        kept: Kept,
        users: Arc<dyn UserDirectory>,
        tls: TlsAcceptor,
        cert_note: String,
    ) -> anyhow::Result<Parts> {
        // Counted only while on; turning it on needs a restart (the recorder is made then).
        let dmarc = kept
            .dmarc
            .clone()
            .filter(|_| config.dmarc_reports.send.enabled);
        let router =
            Arc::new(Router::new(config.clone(), kept, users).context("cannot set up delivery")?);
        let checks = match config.inbound.checks {
            true => Some(Arc::new(
                Checker::new(&config)
                    .map_err(|e| anyhow::anyhow!("cannot set up inbound checks: {e}"))?
                    .recording(dmarc),
            )),
            false => None,
        };
        Ok(Parts {
            config,
            tls,
            cert_note,
            router,
            checks,
        })
    }
}

/// The router the scheduler calls; a reload swaps the one behind it. An attempt in progress
/// keeps the router it started with.
pub struct Switch(Swap<Router>);

impl Switch {
    /// Starts with `router`.
    pub fn new(router: Arc<Router>) -> Switch {
        Switch(Swap::from_arc(router))
    }
}

impl Deliver for Switch {
    fn deliver<'a>(
        &'a self,
        envelope: &'a Envelope,
        body: &'a Body,
        recipients: &'a [Address],
    ) -> BoxFuture<'a, Vec<Outcome>> {
        let router = self.0.get();
        Box::pin(async move { router.deliver(envelope, body, recipients).await })
    }

    fn is_local(&self, recipient: &Address) -> bool {
        self.0.get().is_local(recipient)
    }
}

/// What a reload needs to reach: the config file, the server's current
/// [`Shared`](mta_smtp::server::Shared), the router
/// switch.
pub struct Reloader {
    /// The config file; `None` when running on built-in defaults.
    pub path: Option<PathBuf>,
    /// The server's handle.
    pub current: Current,
    /// The scheduler's router.
    pub router: Arc<Switch>,
    /// The downgrade memory, TLS report counts, connection slots and suspended
    /// destinations, kept over reloads.
    pub kept: Kept,
    /// Tells the tasks that read the config as they go (TLS reports) which one is in force.
    pub config: tokio::sync::watch::Sender<Arc<Config>>,
}

impl Reloader {
    /// Reads the config file again and puts it in force, or leaves everything as it was.
    ///
    /// # Errors
    /// Why the new config was refused; the old one is still in force.
    pub fn reload(&self) -> anyhow::Result<()> {
        let mut new = crate::load_config(self.path.as_deref())?;
        // The SRS secrets as they are now: `mta srs rotate` takes effect here.
        new.srs.keys = crate::srs_cmd::load_or_create(&new)?;
        let old = self.current.get();
        if self.path.is_none() {
            // The built-in defaults: `serve` may have allowed root for a first try, and
            // reading the defaults again changes nothing about who runs.
            new.process = old.config.process.clone();
        }
        let needs_restart = restart_only(&old.config, &new);
        if !needs_restart.is_empty() {
            bail!(
                "{} changed, which needs a restart (the running settings are unchanged)",
                needs_restart.join(", ")
            );
        }
        let parts = Parts::build(Arc::new(new), self.kept.clone(), old.users.clone())?;
        self.current
            .replace(old.reloaded(parts.config.clone(), parts.tls, parts.checks));
        self.router.0.replace_arc(parts.router);
        self.config.send_replace(parts.config);
        Ok(())
    }
}

/// The keys that differ between `old` and `new` but are only read at start-up: the sockets,
/// the store, the session limit, the queue's settings, who the process runs as and its
/// sandbox (applied once, before any input is read), and the outbound connection slots
/// (shared by every relay a reload builds, so that their limits hold across reloads).
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let process = [
        ("user", old.process.user != new.process.user),
        ("group", old.process.group != new.process.group),
        (
            "allow_root",
            old.process.allow_root != new.process.allow_root,
        ),
        ("sandbox", old.process.sandbox != new.process.sandbox),
        // The Maildir tree's group and modes and the supplementary group are set up
        // before privileges are dropped.
        (
            "local.mail_group",
            old.local.mail_group != new.local.mail_group,
        ),
        (
            "outbound.max_connections",
            old.outbound.max_connections != new.outbound.max_connections,
        ),
        (
            "outbound.max_per_domain",
            old.outbound.max_per_domain != new.outbound.max_per_domain,
        ),
    ];
    changed.extend(process.iter().filter(|(_, c)| *c).map(|(k, _)| *k));
    if old.hostname != new.hostname {
        changed.push("hostname");
    }
    if old.data_dir != new.data_dir {
        changed.push("data_dir");
    }
    if old.listen != new.listen {
        changed.push("[listen]");
    }
    if old.limits.max_sessions != new.limits.max_sessions {
        changed.push("limits.max_sessions");
    }
    if old.queue != new.queue {
        changed.push("[queue]");
    }
    if old.metrics_listen != new.metrics_listen {
        changed.push("metrics.listen");
    }
    if (old.outbound.tls_reports, old.outbound.tls_report_interval)
        != (new.outbound.tls_reports, new.outbound.tls_report_interval)
    {
        changed.push("outbound.tls_reports");
    }
    if old.outbound.tls_memory != new.outbound.tls_memory {
        changed.push("outbound.tls_memory");
    }
    if old.acme != new.acme {
        changed.push("[acme]");
    }
    changed
}
