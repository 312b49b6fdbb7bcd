//! `mta`: the command. `serve` runs the MTA; `send` is an SMTP client for testing any
//! server; `user`, `queue`, `dkim`, `tls`, `auth`, `reload`, `doctor` and `check-config` are the
//! operator's tools. Wiring lives here:
//! the queue (`mta-queue`) and the network (`mta-smtp`) meet through `mta_core::seams`.

mod auth_cmd;
mod control;
mod dkim_cmd;
mod doctor;
mod metrics_http;
mod privileges;
mod queue_cmd;
mod reload;
mod sandbox;
mod send;
mod serve;
mod tls_cmd;
mod users;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mta_core::config::Config;

/// A minimal, secure mail transfer agent.
#[derive(Parser, Debug)]
#[command(name = "mta", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the MTA (built-in loopback defaults when no --config is given).
    Serve {
        /// The TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log lines as text, or as JSON objects for log shippers.
        #[arg(long, value_enum, default_value_t = serve::LogFormat::Text, env = "MTA_LOG_FORMAT")]
        log_format: serve::LogFormat,
    },
    /// Make the running server re-read its config, certificate and DKIM keys (as SIGHUP
    /// does), and say whether the new config was taken.
    Reload {
        /// The TOML config file (for the data dir, where the server's control socket is).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Send one message through any SMTP server (a test client built on lettre).
    Send(send::SendArgs),
    /// Manage users: add, del, list, passwd.
    User {
        /// The TOML config file (for the data dir and local domains).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: users::UserCommand,
    },
    /// Inspect the queue.
    Queue {
        /// The TOML config file (for the data dir).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: queue_cmd::QueueCommand,
    },
    /// The downgrade memory of outbound TLS: list, forget DOMAIN.
    Tls {
        /// The TOML config file (for the data dir).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: tls_cmd::TlsCommand,
    },
    /// Login blocks and delays of the running server: blocked, unblock ADDRESS|ACCOUNT.
    Auth {
        /// The TOML config file (for the data dir, where the server's control socket is).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: auth_cmd::AuthCommand,
    },
    /// DKIM signing keys: keygen, show.
    Dkim {
        /// The TOML config file (for the data dir and the configured keys).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: dkim_cmd::DkimCommand,
    },
    /// Check the DNS records and certificate the world needs to trust our mail (exit 1 when
    /// something would hurt deliverability).
    Doctor(doctor::DoctorArgs),
    /// Validate the config (and read its DKIM keys) and print the effective settings.
    CheckConfig {
        /// The TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // One crypto provider for every rustls user; Err only if already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, log_format } => {
            load_config(config.as_deref()).and_then(|c| serve::run(c, config, log_format))
        }
        Command::Reload { config } => {
            load_config(config.as_deref()).and_then(|c| control::reload(&c))
        }
        Command::Send(args) => send::run(args),
        Command::User { config, command } => load_config(config.as_deref()).and_then(|c| {
            let delimiter = c.local.recipient_delimiter;
            users::run(command, &c.data_dir, &c.local_domains, delimiter)
        }),
        Command::Queue { config, command } => {
            load_config(config.as_deref()).and_then(|c| queue_cmd::run(command, &c))
        }
        Command::Tls { config, command } => {
            load_config(config.as_deref()).and_then(|c| tls_cmd::run(command, &c))
        }
        Command::Auth { config, command } => {
            load_config(config.as_deref()).and_then(|c| auth_cmd::run(command, &c))
        }
        Command::Dkim { config, command } => {
            load_config(config.as_deref()).and_then(|c| dkim_cmd::run(command, &c))
        }
        Command::Doctor(args) => {
            match load_config(args.config.as_deref()).and_then(|c| doctor::run(&args, &c)) {
                Ok(code) => return code,
                Err(e) => Err(e),
            }
        }
        Command::CheckConfig { config } => load_config(config.as_deref()).and_then(|c| {
            mta_smtp::dkim::Signer::load(&c)?;
            print!("{}", c.to_toml());
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mta: {e:#}");
            // 2 for bad input (config), 1 for everything else.
            if e.downcast_ref::<mta_core::config::ConfigErrors>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
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
