//! `mta`: the command. `serve` runs the MTA; `send` is an SMTP client for testing any
//! server; `user`, `queue`, `dkim`, `tls`, `auth`, `reload`, `doctor` and `check-config` are the
//! operator's tools. Wiring lives here:
//! the queue (`mta-queue`) and the network (`mta-smtp`) meet through `mta_core::seams`.

// Functions stay under the line limit in clippy.toml (test code is exempt).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod acme;
mod auth_cmd;
mod cert;
mod control;
mod control_client;
mod dkim_cmd;
mod doctor;
mod fd_limit;
mod identities;
mod metrics_http;
mod privileges;
mod queue_cmd;
mod queue_store;
mod queue_stream;
mod queue_text;
mod reload;
mod report_cmd;
mod sandbox;
mod send;
mod sending_cmd;
mod serve;
mod srs_cmd;
mod tls_cmd;
mod users;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mta_core::config::{Config, LocalDelivery};

/// A minimal, secure mail transfer agent.
#[derive(Parser, Debug)]
#[command(name = "mta", version, about)]
struct Cli {
    /// The TOML config file. Default: the file named by MTA_CONFIG, else /etc/mta/mta.toml
    /// when it exists, else the built-in defaults. Works before or after the subcommand.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the MTA (on the built-in loopback defaults when no config is found).
    Serve {
        /// Log lines as text, or as JSON objects for log shippers.
        #[arg(long, value_enum, default_value_t = serve::LogFormat::Text, env = "MTA_LOG_FORMAT")]
        log_format: serve::LogFormat,
    },
    /// Make the running server re-read its config, certificate and DKIM keys (as SIGHUP
    /// does), and say whether the new config was taken.
    Reload,
    /// Send one message through any SMTP server: a test client with a transcript, a result
    /// per recipient and an exit code per failed step.
    Send(Box<send::SendArgs>),
    /// Manage users: add, del, list, passwd.
    User {
        #[command(subcommand)]
        command: users::UserCommand,
    },
    /// Inspect the queue.
    Queue {
        #[command(subcommand)]
        command: queue_cmd::QueueCommand,
    },
    /// The downgrade memory of outbound TLS: list, forget DOMAIN.
    Tls {
        #[command(subcommand)]
        command: tls_cmd::TlsCommand,
    },
    /// Login blocks and delays of the running server: blocked, unblock ADDRESS|ACCOUNT.
    Auth {
        #[command(subcommand)]
        command: auth_cmd::AuthCommand,
    },
    /// Reports about our mail: `dmarc` (who sends as our domains).
    Report {
        #[command(subcommand)]
        command: report_cmd::ReportCommand,
    },
    /// DKIM signing keys: keygen, show.
    Dkim {
        #[command(subcommand)]
        command: dkim_cmd::DkimCommand,
    },
    /// The secret of the rewritten senders of forwarded mail (SRS): rotate.
    Srs {
        #[command(subcommand)]
        command: srs_cmd::SrsCommand,
    },
    /// Check the DNS records and certificate the world needs to trust our mail (exit 1 when
    /// something would hurt deliverability).
    Doctor(doctor::DoctorArgs),
    /// Validate the config and run every check `mta serve` makes before it binds its ports
    /// (certificate, DKIM keys, users file, data dir, smarthost password, addresses); print
    /// the effective settings, or every problem found (exit 2).
    CheckConfig,
    /// For `check-config`, run as the user `mta serve` drops to: which of these directories
    /// that user cannot reach and files it cannot read (one line each, nothing when all
    /// can).
    #[command(hide = true)]
    CanRead {
        /// A directory to list.
        #[arg(long)]
        dir: Vec<PathBuf>,
        /// A file to open.
        #[arg(long)]
        file: Vec<PathBuf>,
    },
}

/// `mta can-read`: says which of these directories cannot be reached and which files cannot
/// be read by this process. Reads no config: it runs as a user that may not be able to.
fn can_read(dir: &[PathBuf], file: &[PathBuf]) -> ExitCode {
    // A directory must be reachable (every parent searchable); mta serve makes the
    // directory itself the user's before it drops to it.
    for d in dir {
        if let Err(e) = std::fs::metadata(d) {
            println!("reach directory {}: {e}", d.display());
        }
    }
    for f in file {
        if let Err(e) = std::fs::File::open(f) {
            println!("read file {}: {e}", f.display());
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    // One crypto provider for every rustls user; Err only if already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if let Command::Send(args) = cli.command {
        // The one command that reads no config: a flag given to it is a mistake (exit 2, as
        // for send's other bad options).
        if let Some(p) = cli.config {
            eprintln!(
                "mta: mta send reads no config file (--config {}): it talks to the server \
                 given with --server",
                p.display()
            );
            return ExitCode::from(2);
        }
        return send::run(*args);
    }
    if let Command::CanRead { dir, file } = &cli.command {
        return can_read(dir, file);
    }
    let source = match ConfigSource::find(cli.config) {
        Ok(source) => source,
        Err(e) => {
            eprintln!("mta: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let errors = error_format(&cli.command);
    let path = source.path().map(Path::to_path_buf);
    let result = match cli.command {
        Command::Serve { log_format } => load_config(path.as_deref())
            .and_then(|c| serve::run(c, path.clone(), log_format, &source)),
        Command::Reload => load_config(path.as_deref()).and_then(|c| control_client::reload(&c)),
        Command::Send(_) => unreachable!("mta send is run above"),
        Command::User { command } => load_config(path.as_deref()).and_then(|c| user(command, &c)),
        Command::Queue { command } => {
            load_config(path.as_deref()).and_then(|c| queue_cmd::run(command, &c))
        }
        Command::Tls { command } => {
            load_config(path.as_deref()).and_then(|c| tls_cmd::run(command, &c))
        }
        Command::Auth { command } => {
            load_config(path.as_deref()).and_then(|c| auth_cmd::run(command, &c))
        }
        Command::Report { command } => {
            load_config(path.as_deref()).and_then(|c| report_cmd::run(command, &c))
        }
        Command::Dkim { command } => {
            load_config(path.as_deref()).and_then(|c| dkim_cmd::run(command, &c))
        }
        Command::Srs { command } => {
            load_config(path.as_deref()).and_then(|c| srs_cmd::run(command, &c))
        }
        Command::Doctor(args) => {
            match load_config(path.as_deref()).and_then(|c| doctor::run(&args, &c)) {
                Ok(code) => return code,
                Err(e) => Err(e),
            }
        }
        Command::CheckConfig => match check_config(path.as_deref(), &source) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::CanRead { .. } => unreachable!("mta can-read is run above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_error(&e, &source, errors);
            // 2 for bad input (config), 1 for everything else.
            if e.downcast_ref::<mta_core::config::ConfigErrors>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// How a failure of `command` is printed: as JSON where the command's output is JSON.
fn error_format(command: &Command) -> ErrorFormat {
    match command {
        Command::Serve { log_format, .. } if *log_format == serve::LogFormat::Json => {
            ErrorFormat::JsonLog
        }
        Command::Queue { command } if command.json() => ErrorFormat::JsonAnswer,
        Command::Doctor(args) if args.json => ErrorFormat::JsonAnswer,
        Command::Report { command } if command.json() => ErrorFormat::JsonAnswer,
        _ => ErrorFormat::Text,
    }
}

/// `mta user ...`; a user just added gets their Maildir.
fn user(command: users::UserCommand, c: &Config) -> anyhow::Result<()> {
    if let Some((verb, address)) = command.sending() {
        return sending_cmd::run(verb, address, c);
    }
    if let users::UserCommand::Show { address } = &command {
        // What the user may send as is in the files; its counters are the server's.
        let address = address.clone();
        users::run(command, c)?;
        return sending_cmd::run(sending_cmd::Verb::Show, &address, c);
    }
    let added = match &command {
        users::UserCommand::Add { address, .. } => Some(address.clone()),
        _ => None,
    };
    users::run(command, c)?;
    match added {
        Some(address) => prepare_maildir(c, &address),
        None => Ok(()),
    }
}

/// Where the config comes from: `--config`, else `MTA_CONFIG`, else `/etc/mta/mta.toml` when
/// it exists, else the built-in defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConfigSource {
    /// `--config FILE`.
    Flag(PathBuf),
    /// The environment variable `MTA_CONFIG`.
    Env(PathBuf),
    /// [`SYSTEM_CONFIG`], which exists.
    System(PathBuf),
    /// None of those: the built-in defaults.
    Defaults,
}

/// The config file read when neither `--config` nor `MTA_CONFIG` names one.
const SYSTEM_CONFIG: &str = "/etc/mta/mta.toml";

impl ConfigSource {
    /// Finds the config the usual way.
    ///
    /// # Errors
    /// An empty `--config` or `MTA_CONFIG`, or a `/etc/mta/mta.toml` that cannot be looked at
    /// (other than being absent).
    fn find(flag: Option<PathBuf>) -> anyhow::Result<ConfigSource> {
        ConfigSource::choose(
            flag,
            std::env::var_os("MTA_CONFIG"),
            std::fs::metadata(SYSTEM_CONFIG).map(|_| ()),
        )
    }

    /// [`ConfigSource::find`] on given inputs: the flag, the environment variable, and
    /// whether the system config exists.
    fn choose(
        flag: Option<PathBuf>,
        env: Option<std::ffi::OsString>,
        system: std::io::Result<()>,
    ) -> anyhow::Result<ConfigSource> {
        if let Some(path) = flag {
            if path.as_os_str().is_empty() {
                anyhow::bail!("--config is empty: give the config file's path");
            }
            return Ok(ConfigSource::Flag(path));
        }
        if let Some(value) = env {
            if value.is_empty() {
                anyhow::bail!(
                    "MTA_CONFIG is set but empty: set it to the config file's path, or unset it"
                );
            }
            return Ok(ConfigSource::Env(PathBuf::from(value)));
        }
        match system {
            Ok(()) => Ok(ConfigSource::System(PathBuf::from(SYSTEM_CONFIG))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigSource::Defaults),
            Err(e) => Err(anyhow::anyhow!(
                "cannot look at {SYSTEM_CONFIG} ({e}): give the config with --config or \
                 MTA_CONFIG, or make it readable"
            )),
        }
    }

    /// The file, unless the built-in defaults are used.
    pub(crate) fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::Flag(p) | ConfigSource::Env(p) | ConfigSource::System(p) => Some(p),
            ConfigSource::Defaults => None,
        }
    }
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Flag(p) => write!(f, "{} (--config)", p.display()),
            ConfigSource::Env(p) => write!(f, "{} (MTA_CONFIG)", p.display()),
            ConfigSource::System(p) => write!(f, "{}", p.display()),
            ConfigSource::Defaults => write!(
                f,
                "the built-in defaults (no --config, no MTA_CONFIG, no {SYSTEM_CONFIG})"
            ),
        }
    }
}

/// How a command's failure is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorFormat {
    /// `mta: ...` on stderr, then the config in use.
    Text,
    /// A JSON log line on stderr (`mta serve --log-format json`).
    JsonLog,
    /// `{"error": ..., "config": ...}` on stdout, where the answer would have been (`--json`).
    JsonAnswer,
}

fn report_error(e: &anyhow::Error, source: &ConfigSource, format: ErrorFormat) {
    let message = format!("{e:#}");
    let config = source.to_string();
    match format {
        ErrorFormat::Text => eprintln!("mta: {message}\nmta: config in use: {config}"),
        ErrorFormat::JsonLog => eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": serve::timestamp(),
                "level": "ERROR",
                "message": message,
                "config": config,
            })
        ),
        ErrorFormat::JsonAnswer => println!(
            "{}",
            serde_json::json!({ "error": message, "config": config })
        ),
    }
}

/// With a mail group, a new user's Maildir is made at once: the IMAP server reading it may
/// not create it (it has no write access above the Maildirs), and without one a login
/// before the first message would find no INBOX. Left to the first delivery otherwise.
fn prepare_maildir(config: &Config, address: &str) -> anyhow::Result<()> {
    if config.local.mail_group.is_none() || config.local.delivery != LocalDelivery::Maildir {
        return Ok(());
    }
    let address = mta_core::Address::parse(address)
        .with_context(|| format!("{address:?} is not a valid address"))?;
    let maildirs = mta_smtp::local::Maildirs::new(
        &config.data_dir.join("mail"),
        config.hostname.as_str(),
        mta_smtp::local::MailAccess::Group,
    );
    let Some(dir) = maildirs.maildir(&address) else {
        return Ok(());
    };
    maildirs
        .prepare(&dir)
        .with_context(|| format!("cannot create the Maildir {}", dir.display()))
}

/// `mta check-config`: the config's own errors (exit 2), else every check `mta serve`
/// makes before it binds its ports, all reported in one run (exit 2 when any fails), else
/// the effective settings.
fn check_config(path: Option<&Path>, source: &ConfigSource) -> anyhow::Result<ExitCode> {
    // The file's own errors, and the checks below on what could be read of it, so that one
    // run names every problem.
    let (config, config_errors) = match path {
        None => (load_config(None)?, Vec::new()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config file {}", p.display()))?;
            let origin = p.display().to_string();
            match Config::check_toml(&origin, &text, &system_hostname()) {
                (Some(config), errors) => (config, errors),
                (None, errors) => {
                    return Err(mta_core::config::ConfigErrors(errors).into());
                }
            }
        }
    };
    let mut report = serve::preflight(&config);
    report
        .errors
        .splice(0..0, config_errors.iter().map(ToString::to_string));
    match privileges::Plan::decide(&config) {
        Ok(privileges::Plan::RefuseRoot) => report.warnings.push(
            "run as root, mta serve would refuse to serve: set user (for example user = \
             \"mta\") or allow_root = true"
                .to_string(),
        ),
        Ok(privileges::Plan::Switch { user, uid, gid, .. }) => {
            readable_by(&config, &user, uid, gid, &mut report)?;
        }
        Ok(privileges::Plan::Keep { .. }) | Err(_) => {}
    }
    for warning in &report.warnings {
        eprintln!("mta: warning: {warning}");
    }
    if !report.errors.is_empty() {
        for error in &report.errors {
            eprintln!("mta: {error}");
        }
        eprintln!(
            "mta: {} problem(s) would stop mta serve\nmta: config in use: {source}",
            report.errors.len()
        );
        return Ok(ExitCode::from(2));
    }
    // Only a config without errors comes this far, and only it is printed.
    print!("{}", config.to_toml());
    Ok(ExitCode::SUCCESS)
}

/// Asks a copy of `mta`, running as the user `mta serve` will drop to, which files it cannot
/// read and whether it can reach the data dir. A data dir under a parent closed to it stops
/// `mta serve`; files it cannot read were read as root at start, but a reload fails on them
/// (as `mta serve` warns).
fn readable_by(
    config: &Config,
    user: &str,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    report: &mut serve::Preflight,
) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().context("cannot find the mta binary to check as the user")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("can-read").uid(uid.as_raw()).gid(gid.as_raw());
    if config.data_dir.exists() {
        cmd.arg("--dir").arg(&config.data_dir);
    }
    let files = config.tls.cert.iter().chain(config.tls.key.iter());
    for file in files.chain(config.dkim.iter().map(|k| &k.key)) {
        cmd.arg("--file").arg(file);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run mta as user {user} to check what it can read"))?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let problem = format!("user {user} (config key user) cannot {line}");
        if line.starts_with("reach directory ") {
            report
                .errors
                .push(format!("{problem} (is a parent directory closed to it?)"));
        } else {
            report
                .warnings
                .push(format!("{problem}: a reload will fail on it"));
        }
    }
    if !out.status.success() {
        anyhow::bail!(
            "mta, run as user {user} to check what it can read, failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The machine's host name, as the default `hostname`.
fn system_hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Reads and validates the config file, or the built-in defaults without one.
pub(crate) fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let host = system_hostname();
    match path {
        None => Ok(Config::defaults(&host)?),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config file {}", p.display()))?;
            Ok(Config::from_toml(&p.display().to_string(), &text, &host)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::io;

    use super::*;

    #[test]
    fn config_is_found_flag_then_env_then_system_then_defaults() {
        let absent = || Err(io::Error::from(io::ErrorKind::NotFound));
        let flag = Some(PathBuf::from("/a.toml"));
        let env = Some(OsString::from("/b.toml"));
        let choose = ConfigSource::choose;
        assert_eq!(
            choose(flag.clone(), env.clone(), Ok(())).unwrap(),
            ConfigSource::Flag("/a.toml".into())
        );
        assert_eq!(
            choose(None, env.clone(), Ok(())).unwrap(),
            ConfigSource::Env("/b.toml".into())
        );
        assert_eq!(
            choose(None, None, Ok(())).unwrap(),
            ConfigSource::System(SYSTEM_CONFIG.into())
        );
        assert_eq!(
            choose(None, None, absent()).unwrap(),
            ConfigSource::Defaults
        );
        let closed = Err(io::Error::from(io::ErrorKind::PermissionDenied));
        let e = choose(None, None, closed).unwrap_err().to_string();
        assert!(e.contains("cannot look at /etc/mta/mta.toml"), "{e}");
        let e = choose(None, Some(OsString::new()), absent()).unwrap_err();
        assert!(e.to_string().contains("MTA_CONFIG is set but empty"), "{e}");
        let e = choose(Some(PathBuf::new()), None, absent()).unwrap_err();
        assert!(e.to_string().contains("--config is empty"), "{e}");
    }

    #[test]
    fn config_flag_before_or_after_the_subcommand() {
        for args in [
            &["mta", "--config", "/x.toml", "queue", "list"][..],
            &["mta", "queue", "list", "--config", "/x.toml"],
            &["mta", "queue", "--config", "/x.toml", "list"],
            &["mta", "check-config", "-c", "/x.toml"],
            &["mta", "doctor", "--config", "/x.toml"],
            &["mta", "reload", "--config", "/x.toml"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.config, Some(PathBuf::from("/x.toml")), "{args:?}");
        }
    }
}
