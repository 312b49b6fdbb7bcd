//! `mta tls list` and `mta tls forget DOMAIN`: the downgrade memory and the DANE memory
//! (`mta_smtp::relay::memory`). Asks the running server over the control socket (it holds
//! the memory); with no server running, reads or rewrites `DATA_DIR/tls-memory` and
//! `DATA_DIR/dane-memory` itself.

use anyhow::bail;
use clap::Subcommand;
use mta_core::address::Domain;
use mta_core::config::Config;
use mta_smtp::relay::memory::{TlsMemory, forget_offline};
use serde_json::{Value, json};

use crate::control_client;

/// `mta tls ...`
#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// The domains that must get verified TLS because they had it before, and those that
    /// had DANE (they need verified TLS while DNSSEC validation does not work).
    List,
    /// Let mail to DOMAIN go without verified TLS again (it is remembered anew at the next
    /// delivery over verified TLS).
    Forget {
        /// The destination domain.
        domain: String,
    },
}

/// The control socket's answer to `tls-list` or `tls-forget DOMAIN`.
pub fn answer(memory: &TlsMemory, line: &str) -> String {
    let mut words = line.split_ascii_whitespace();
    let value = match (words.next(), words.next(), words.next()) {
        (Some("tls-list"), None, _) => list_json(memory),
        (Some("tls-forget"), Some(domain), None) => match Domain::parse(domain) {
            Ok(d) => json!({ "forgotten": memory.forget(&d), "domain": d.to_string() }),
            Err(_) => json!({ "error": format!("{domain:?} is not a domain") }),
        },
        _ => json!({ "error": format!("unknown request {line:?}") }),
    };
    value.to_string()
}

fn list_json(memory: &TlsMemory) -> Value {
    let domains: Vec<Value> = memory
        .list()
        .into_iter()
        .map(
            |(domain, at, active)| json!({ "domain": domain, "verified_at": at, "active": active }),
        )
        .collect();
    let dane: Vec<Value> = memory
        .list_dane()
        .into_iter()
        .map(|(domain, at, active)| json!({ "domain": domain, "seen_at": at, "active": active }))
        .collect();
    json!({ "domains": domains, "dane": dane })
}

/// Runs one `mta tls` command.
///
/// # Errors
/// A bad domain, an unreadable answer, or a memory file that cannot be rewritten.
pub fn run(command: TlsCommand, config: &Config) -> anyhow::Result<()> {
    let line = match &command {
        TlsCommand::List => "tls-list".to_string(),
        TlsCommand::Forget { domain } => {
            let Ok(d) = Domain::parse(domain) else {
                bail!("{domain:?} is not a domain");
            };
            format!("tls-forget {d}")
        }
    };
    let value: Value = match control_client::request(&config.data_dir, &line)? {
        Some(text) => serde_json::from_str(&text)?,
        None => offline(&command, config)?,
    };
    if let Some(e) = value.get("error").and_then(Value::as_str) {
        bail!("{e}");
    }
    match command {
        TlsCommand::List => {
            let domains = value["domains"].as_array().cloned().unwrap_or_default();
            let dane = value["dane"].as_array().cloned().unwrap_or_default();
            if domains.is_empty() && dane.is_empty() {
                println!("no domain is remembered");
            }
            let state = |d: &Value| match d["active"].as_bool() {
                Some(true) => "",
                _ => " (expired)",
            };
            let name =
                |d: &Value| mta_core::text::terminal(d["domain"].as_str().unwrap_or("?"), false);
            for d in &domains {
                println!(
                    "{} verified TLS at {}{}",
                    name(d),
                    mta_core::date::rfc5322(d["verified_at"].as_u64().unwrap_or(0)),
                    state(d)
                );
            }
            for d in &dane {
                println!(
                    "{} DANE (TLSA records) seen at {}: needs verified TLS while DNSSEC \
                     validation does not work{}",
                    name(d),
                    mta_core::date::rfc5322(d["seen_at"].as_u64().unwrap_or(0)),
                    state(d)
                );
            }
        }
        TlsCommand::Forget { domain } => {
            if value["forgotten"].as_bool() == Some(true) {
                println!("forgot {domain}: the next attempt uses the configured policy");
            } else {
                println!("{domain} was not remembered");
            }
        }
    }
    Ok(())
}

fn offline(command: &TlsCommand, config: &Config) -> anyhow::Result<Value> {
    Ok(match command {
        TlsCommand::List => list_json(&TlsMemory::open(
            &config.data_dir,
            config.outbound.tls_memory,
        )),
        TlsCommand::Forget { domain } => {
            let d =
                Domain::parse(domain).map_err(|_| anyhow::anyhow!("{domain:?} is not a domain"))?;
            json!({ "forgotten": forget_offline(&config.data_dir, &d)? })
        }
    })
}
