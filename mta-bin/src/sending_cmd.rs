//! `mta user show|hold|release ADDRESS`: an account's sending counters and limits
//! (`[limits.sending]`), and holding it at once when its password may be stolen. They act on
//! the running server over the control socket (`user-show`, `user-hold`, `user-release`):
//! the server holds the counters and the store. When no server answers they say so and
//! fail; an address that is not a user fails too, but for the release of a hold the ledger
//! still has (a user deleted while held).
//!
//! A hold refuses the account's new mail with `450 4.7.1` and keeps its queued mail in the
//! queue, undelivered; a release lets both go on (its queued mail is due at once).

use std::sync::Arc;

use anyhow::bail;
use mta_core::address::Address;
use mta_core::config::Config;
use mta_core::text::terminal;
use mta_queue::Queue;
use mta_smtp::server::Current;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::control_client;

/// The control socket's answer to `user-show|user-hold|user-release ADDRESS`.
pub async fn answer(current: &Current, queue: &Arc<Queue>, line: &str) -> String {
    let shared = current.get();
    let mut words = line.split_ascii_whitespace();
    let (verb, user) = match (words.next(), words.next(), words.next()) {
        (Some(verb), Some(user), None) => (verb, user),
        _ => return json!({ "error": format!("unknown request {line:?}") }).to_string(),
    };
    let Ok(user) = Address::parse(user) else {
        return json!({ "error": format!("{user:?} is not a valid address") }).to_string();
    };
    // A user deleted while held is still released: the hold is in the ledger, and without
    // the release its queued mail would wait for ever.
    let held_leftover = verb == "user-release" && queue.store().is_user_held(&user.to_string());
    if !shared.users.current().contains(&user) && !held_leftover {
        return json!({ "error": format!("no such user: {user}") }).to_string();
    }
    let value = match verb {
        "user-show" => match shared.sending.usage(&shared.config, &user) {
            Ok(u) => json!({
                "user": user.to_string(),
                "held": u.held,
                "messages_last_hour": u.counts[0],
                "messages_last_day": u.counts[1],
                "first_time_recipients_last_day": u.counts[2],
                "messages_per_hour": u.caps.messages_per_hour,
                "messages_per_day": u.caps.messages_per_day,
                "first_time_recipients_per_day": u.caps.first_time_recipients_per_day,
                "known_recipients": u.known,
            }),
            Err(e) => json!({ "error": e.to_string() }),
        },
        "user-hold" | "user-release" => {
            let hold = verb == "user-hold";
            match shared.sending.set_held(&user, hold).await {
                Ok(()) => {
                    info!(user = %user, held = hold, "sending hold changed by operator");
                    let due = if hold {
                        0
                    } else {
                        release_queued(queue, &user).await
                    };
                    json!({ "user": user.to_string(), "held": hold, "due_now": due })
                }
                Err(e) => json!({ "error": e.to_string() }),
            }
        }
        _ => json!({ "error": format!("unknown request {line:?}") }),
    };
    value.to_string()
}

/// Makes the queued messages of a released user due now; how many.
async fn release_queued(queue: &Arc<Queue>, user: &Address) -> usize {
    let Ok((records, _)) = queue.list() else {
        return 0;
    };
    let key = user.key();
    let mut due = 0;
    for r in records {
        let own = r
            .envelope
            .origin
            .auth_user
            .as_deref()
            .and_then(|u| Address::parse(u).ok());
        if own.is_some_and(|a| a.key() == key) {
            match queue.retry_now(&r.envelope.id).await {
                Ok(_) => due += 1,
                // It is looked at again within a minute anyway.
                Err(e) => warn!(msg = %r.envelope.id, error = %e, "released message not made due"),
            }
        }
    }
    due
}

/// The lines `mta user show` prints about the account's sending, from the server's answer.
pub fn sending_counter_lines(value: &Value) -> Vec<String> {
    let cap = |key: &str| match value[key].as_u64() {
        Some(0) | None => "no limit".to_string(),
        Some(n) => format!("limit {n}"),
    };
    let n = |key: &str| value[key].as_u64().unwrap_or(0);
    vec![
        format!(
            "sending       {}",
            if value["held"].as_bool() == Some(true) {
                "held (mta user release to resume)"
            } else {
                "allowed"
            }
        ),
        format!(
            "last hour     {} messages ({})",
            n("messages_last_hour"),
            cap("messages_per_hour")
        ),
        format!(
            "last 24 hours {} messages ({})",
            n("messages_last_day"),
            cap("messages_per_day")
        ),
        format!(
            "new rcpts 24h {} ({}); {} addresses known",
            n("first_time_recipients_last_day"),
            cap("first_time_recipients_per_day"),
            n("known_recipients")
        ),
    ]
}

/// Which of `mta user show|hold|release` to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `mta user show`.
    Show,
    /// `mta user hold`.
    Hold,
    /// `mta user release`.
    Release,
}

/// Runs one of them for `address` against the running server.
///
/// # Errors
/// A bad address, no server, a refusal by the server (an unknown user), or an unreadable
/// answer.
pub fn run(verb: Verb, address: &str, config: &Config) -> anyhow::Result<()> {
    let Ok(user) = Address::parse(address) else {
        bail!("{:?} is not a valid address", terminal(address, false));
    };
    let line = match verb {
        Verb::Show => format!("user-show {user}"),
        Verb::Hold => format!("user-hold {user}"),
        Verb::Release => format!("user-release {user}"),
    };
    control_client::check_data_dir(&config.data_dir)?;
    let text = control_client::ask(&config.data_dir, &line)?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|_| anyhow::anyhow!("unreadable answer from the server: {text:?}"))?;
    if let Some(e) = value.get("error").and_then(Value::as_str) {
        bail!("the server refused: {}", terminal(e, false));
    }
    let who = terminal(&user.to_string(), false);
    match verb {
        Verb::Show => {
            println!("user          {who}");
            for line in sending_counter_lines(&value) {
                println!("{line}");
            }
        }
        Verb::Hold => println!("held {who}: new mail refused, queued mail kept"),
        Verb::Release => println!(
            "released {who}: {} queued message(s) due now",
            value["due_now"].as_u64().unwrap_or(0)
        ),
    }
    Ok(())
}
