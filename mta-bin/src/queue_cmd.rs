//! `mta queue`: looks at the queue, through the running server's control socket or, when
//! no server runs, by opening the store directly.

use anyhow::Context as _;
use clap::Subcommand;
use mta_core::config::Config;
use mta_core::date;
use mta_queue::{Queue, QueueSettings};

use crate::control::{self, Listing};

/// Queue commands.
#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// List queued messages with each recipient's state.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a queue command.
///
/// # Errors
/// When the queue can be reached neither through the server nor directly.
pub fn run(cmd: QueueCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        QueueCommand::List { json } => {
            let listing = fetch(config)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listing)?);
            } else {
                print!("{}", render(&listing));
            }
            Ok(())
        }
    }
}

fn fetch(config: &Config) -> anyhow::Result<Listing> {
    if let Some(answer) = control::request(&config.data_dir, "queue-list")? {
        return serde_json::from_str(&answer).context("unreadable answer from the running server");
    }
    let path = config.data_dir.join("queue");
    if !path.exists() {
        return Ok(Listing {
            records: vec![],
            errors: vec![],
        });
    }
    let queue = Queue::open(&path, QueueSettings::new(config.hostname.clone()))
        .with_context(|| format!("cannot open the queue in {}", path.display()))?;
    Ok(control::listing(&queue))
}

fn render(listing: &Listing) -> String {
    let mut out = String::new();
    for rec in &listing.records {
        let e = &rec.envelope;
        out.push_str(&format!(
            "{}  {}  {} bytes  from {}  next attempt {}\n",
            e.id,
            date::rfc5322(e.received_at),
            e.size,
            e.sender,
            date::rfc5322(rec.next_attempt_ms / 1000)
        ));
        for r in &e.recipients {
            out.push_str(&format!(
                "    {}  {:?}  attempts {}  {}\n",
                r.address,
                r.state,
                r.attempts,
                r.last_result.as_deref().unwrap_or("")
            ));
        }
    }
    for err in &listing.errors {
        out.push_str(&format!("corrupt: {err}\n"));
    }
    out.push_str(&format!("{} message(s) queued\n", listing.records.len()));
    out
}
