//! `mta auth blocked [--json]` and `mta auth unblock ADDRESS|ACCOUNT`: the login blocks and
//! delays of the running server (`mta_smtp::server::logins`). They live in the server's
//! memory only, so these commands ask it over the control socket; when no server answers,
//! they say so and fail rather than report "no blocks".

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::Subcommand;
use mta_core::config::Config;
use mta_core::text::terminal;
use mta_smtp::server::Current;
use mta_smtp::server::logins::{Held, LoginPolicy};
use serde_json::{Value, json};

use crate::control_client;

/// `mta auth ...`
#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Client addresses blocked after failed logins, and accounts whose logins from
    /// untrusted addresses are delayed, with when each ends.
    Blocked {
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Clear the block of a client address (IPv6: its /64) or the delay of an account.
    Unblock {
        /// An IP address, or an account (login) name.
        target: String,
    },
}

/// The control socket's answer to `auth-blocked` or `auth-unblock TARGET`.
pub fn answer(current: &Current, line: &str) -> String {
    let shared = current.get();
    let policy = LoginPolicy::from_limits(&shared.config.limits);
    let logins = &shared.guards.logins;
    let mut words = line.split_ascii_whitespace();
    let value = match (words.next(), words.next(), words.next()) {
        (Some("auth-blocked"), None, _) => held_json(logins.held(policy, Instant::now())),
        (Some("auth-unblock"), Some(target), None) => {
            json!({ "unblocked": logins.unblock(target), "target": target })
        }
        _ => json!({ "error": format!("unknown request {line:?}") }),
    };
    value.to_string()
}

fn held_json(held: Vec<Held>) -> Value {
    let now = Instant::now();
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let unix = |at: Instant| unix_now + at.saturating_duration_since(now).as_secs();
    let mut addresses = Vec::new();
    let mut accounts = Vec::new();
    for h in held {
        match h {
            Held::Client {
                client,
                failures,
                until,
            } => addresses.push(json!({
                "address": client.to_string(),
                "failures": failures,
                "until": unix(until),
            })),
            Held::Account {
                account,
                failures,
                delay,
                until,
            } => accounts.push(json!({
                "account": account,
                "failures": failures,
                "delay_secs": delay.as_secs(),
                "until": unix(until),
            })),
        }
    }
    json!({ "addresses": addresses, "accounts": accounts })
}

/// Runs one `mta auth` command.
///
/// # Errors
/// No server answers on the control socket, it refused the request, or its answer is
/// unreadable.
pub fn run(command: AuthCommand, config: &Config) -> anyhow::Result<()> {
    let line = match &command {
        AuthCommand::Blocked { .. } => "auth-blocked".to_string(),
        AuthCommand::Unblock { target } => {
            if target.is_empty() || target.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("{target:?} is neither an IP address nor an account name");
            }
            format!("auth-unblock {target}")
        }
    };
    let text = control_client::ask(&config.data_dir, &line)?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|_| anyhow::anyhow!("unreadable answer from the server: {text:?}"))?;
    if let Some(e) = value.get("error").and_then(Value::as_str) {
        bail!("the server refused: {}", terminal(e, false));
    }
    match command {
        AuthCommand::Blocked { json: true } => println!("{value}"),
        AuthCommand::Blocked { json: false } => print_held(&value),
        AuthCommand::Unblock { target } => {
            let target = terminal(&target, false);
            if value["unblocked"].as_bool() == Some(true) {
                println!("unblocked {target}");
            } else {
                println!("{target} was not blocked or delayed");
            }
        }
    }
    Ok(())
}

fn print_held(value: &Value) {
    let list = |key: &str| value[key].as_array().cloned().unwrap_or_default();
    let (addresses, accounts) = (list("addresses"), list("accounts"));
    if addresses.is_empty() && accounts.is_empty() {
        println!("no address is blocked and no account is delayed");
    }
    let until = |v: &Value| mta_core::date::rfc5322(v["until"].as_u64().unwrap_or(0));
    for a in &addresses {
        println!(
            "address {}  blocked  {} failures  until {}",
            terminal(a["address"].as_str().unwrap_or("?"), false),
            a["failures"],
            until(a)
        );
    }
    for a in &accounts {
        println!(
            "account {}  delayed {}s  {} failures  until {}",
            terminal(a["account"].as_str().unwrap_or("?"), false),
            a["delay_secs"],
            a["failures"],
            until(a)
        );
    }
}
