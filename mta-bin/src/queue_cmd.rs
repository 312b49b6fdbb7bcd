//! `mta queue`: looks at and acts on the queue (list, show, flush, retry, delete, bounce),
//! through the running server's control socket or, when no server runs, by opening the
//! store directly. Both paths run the same [`control::execute`], so they answer alike.
//!
//! Everything printed for a person passes through [`printable`]: recipients' last results
//! come from remote servers and header lines from senders, and neither may drive the
//! operator's terminal.

use anyhow::Context as _;
use clap::Subcommand;
use mta_core::config::Config;
use mta_core::date;
use mta_core::envelope::MessageId;
use mta_queue::admin::Detail;
use serde_json::Value;

use crate::control::{self, Listing, Request};
use crate::control_client;
use crate::queue_text::{printable, recipient_line, render_record};

/// Queue commands. Each takes `--json` to print the control socket's JSON answer for
/// scripts.
#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum QueueCommand {
    /// List queued messages with each recipient's state.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: envelope, recipients, origin and its first header lines.
    Show {
        /// The queue id (20 hex digits, as `list` prints it).
        #[arg(value_parser = parse_id)]
        id: MessageId,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Make every queued message due now, and try suspended destinations again at once.
    Flush {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Make one message due now.
    Retry {
        /// The queue id.
        #[arg(value_parser = parse_id)]
        id: MessageId,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Remove one message without delivering it and without telling the sender.
    Delete {
        /// The queue id.
        #[arg(value_parser = parse_id)]
        id: MessageId,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Give up on one message now: its pending recipients fail and the sender gets a
    /// delivery status notification (none when the sender is <>).
    Bounce {
        /// The queue id.
        #[arg(value_parser = parse_id)]
        id: MessageId,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// Queue ids as clap reads them, with [`MessageId::parse`]'s message on error.
fn parse_id(text: &str) -> Result<MessageId, String> {
    MessageId::parse(text)
}

/// How an answer was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// A running server answered on the control socket.
    Server,
    /// No server runs; the store was opened directly.
    Store,
}

/// How the output is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Human,
    Json,
}

impl QueueCommand {
    /// True when `--json` was given: answers and errors are printed as JSON.
    pub fn json(&self) -> bool {
        match self {
            QueueCommand::List { json }
            | QueueCommand::Show { json, .. }
            | QueueCommand::Flush { json }
            | QueueCommand::Retry { json, .. }
            | QueueCommand::Delete { json, .. }
            | QueueCommand::Bounce { json, .. } => *json,
        }
    }

    /// The control request this command sends, and how to print the answer.
    fn request(self) -> (Request, Format) {
        let format = |json| if json { Format::Json } else { Format::Human };
        match self {
            QueueCommand::List { json } => (Request::List, format(json)),
            QueueCommand::Show { id, json } => (Request::Show(id), format(json)),
            QueueCommand::Flush { json } => (Request::Flush, format(json)),
            QueueCommand::Retry { id, json } => (Request::Retry(id), format(json)),
            QueueCommand::Delete { id, json } => (Request::Delete(id), format(json)),
            QueueCommand::Bounce { id, json } => (Request::Bounce(id), format(json)),
        }
    }
}

/// Runs a queue command.
///
/// # Errors
/// When the queue can be reached neither through the server nor directly, when the answer
/// is an error (such as an unknown id), or when it cannot be read.
pub fn run(cmd: QueueCommand, config: &Config) -> anyhow::Result<()> {
    if let QueueCommand::List { json } = cmd {
        return crate::queue_stream::list(config, json);
    }
    let (request, format) = cmd.request();
    let (answer, via) = ask(config, &request)?;
    if let Some(error) = answer.get("error") {
        anyhow::bail!(
            "{}",
            error.as_str().unwrap_or("the server reported an error")
        );
    }
    // Records set aside as corrupt are part of the answer (listed as such); a store that
    // cannot be read at all is an error above, never an empty list.
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        Format::Human => print!("{}", render(&request, answer, via)?),
    }
    Ok(())
}

/// Sends `request` to the running server, or carries it out on the store when none runs.
fn ask(config: &Config, request: &Request) -> anyhow::Result<(Value, Via)> {
    if let Some(answer) = control_client::request(&config.data_dir, &request.line())? {
        let value =
            serde_json::from_str(&answer).context("unreadable answer from the running server")?;
        return Ok((value, Via::Server));
    }
    let Some(queue) = crate::queue_store::open(config)? else {
        return Ok((control::execute_on_no_queue(request), Via::Store));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = runtime.block_on(control::execute(&queue, request));
    Ok((answer, Via::Store))
}

/// The human-readable form of an answer.
fn render(request: &Request, answer: Value, via: Via) -> anyhow::Result<String> {
    let later = match via {
        Via::Server => "",
        Via::Store => " (no server is running: delivery starts with `mta serve`)",
    };
    let out = match request {
        Request::List => render_list(&serde_json::from_value(answer).context("unreadable list")?),
        Request::Show(_) => render_show(&serde_json::from_value(answer).context("unreadable")?),
        Request::Flush => {
            let n = answer.get("flushed").and_then(Value::as_u64).unwrap_or(0);
            let resumed = match answer.get("resumed").and_then(Value::as_u64) {
                Some(k) if k > 0 => format!("; {k} suspended destination(s) tried again"),
                _ => String::new(),
            };
            format!("{n} waiting message(s) made due now{resumed}{later}\n")
        }
        Request::Retry(id) => format!("{id} is due now{later}\n"),
        Request::Delete(id) => format!("{id} deleted\n"),
        Request::Bounce(id) => {
            format!("{id} returned to the sender; the notification is queued{later}\n")
        }
    };
    Ok(out)
}

fn render_list(listing: &Listing) -> String {
    let mut out = String::new();
    for rec in &listing.records {
        let held = listing.held.contains(&rec.envelope.id.to_string());
        out.push_str(&render_record(rec, held));
    }
    for err in &listing.errors {
        out.push_str(&format!("corrupt: {}\n", printable(err)));
    }
    out.push_str(&format!("{} message(s) queued\n", listing.records.len()));
    out
}

fn render_show(detail: &Detail) -> String {
    let rec = &detail.record;
    let e = &rec.envelope;
    let o = &e.origin;
    let none = || "none".to_string();
    let mut out = format!(
        "id            {}\n\
         from          {}\n\
         received      {} on {} from {} (helo {})\n\
         tls           {}\n\
         auth user     {}\n\
         size          {} bytes\n\
         next attempt  {}\n\
         delay notice  {}\n\
         recipients\n",
        e.id,
        printable(&e.sender.to_string()),
        date::rfc5322(e.received_at),
        o.listener.name(),
        printable(&o.peer),
        printable(&o.helo),
        o.tls.as_deref().map_or_else(none, printable),
        o.auth_user.as_deref().map_or_else(none, printable),
        detail.body_size,
        date::rfc5322(rec.next_attempt_ms / 1000),
        if e.delay_warned { "sent" } else { "not sent" },
    );
    for r in &e.recipients {
        out.push_str(&recipient_line(r));
    }
    out.push_str("headers\n");
    for line in &detail.headers {
        out.push_str(&format!("    {}\n", printable(line)));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `mta queue` as main.rs mounts it.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: QueueCommand,
    }

    const ID: &str = "0190000000000000abcd";

    fn parse(args: &str) -> Result<QueueCommand, String> {
        Cli::try_parse_from(std::iter::once("queue").chain(args.split_whitespace()))
            .map(|cli| cli.cmd)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn command_line() {
        let id = MessageId::parse(ID).expect("id");
        let table = [
            ("list", Request::List, Format::Human),
            ("list --json", Request::List, Format::Json),
            ("flush", Request::Flush, Format::Human),
            ("flush --json", Request::Flush, Format::Json),
            (
                &format!("show {ID}"),
                Request::Show(id.clone()),
                Format::Human,
            ),
            (
                &format!("show --json {ID}"),
                Request::Show(id.clone()),
                Format::Json,
            ),
            (
                &format!("retry {ID} --json"),
                Request::Retry(id.clone()),
                Format::Json,
            ),
            (
                &format!("delete {ID}"),
                Request::Delete(id.clone()),
                Format::Human,
            ),
            (
                &format!("bounce {}", ID.to_uppercase()),
                Request::Bounce(id.clone()),
                Format::Human,
            ),
        ];
        for (args, request, format) in table {
            let cmd = parse(args).unwrap_or_else(|e| panic!("{args}: {e}"));
            assert_eq!(cmd.request(), (request, format), "{args}");
        }
        let bad = [
            ("show", "required"),
            ("show 12345", "\"12345\" is not a queue id (20 hex digits)"),
            ("delete ../../etc", "is not a queue id"),
            ("retry", "required"),
            ("list extra", "unexpected argument"),
            ("purge", "unrecognized subcommand"),
        ];
        for (args, want) in bad {
            let err = parse(args).expect_err(args);
            assert!(err.contains(want), "{args}: {err}");
        }
    }

    #[test]
    fn terminal_escapes_are_shown_not_sent() {
        assert_eq!(
            printable("550 \x1b[2Jgone\r\n\tok"),
            "550 \\u{1b}[2Jgone\\u{d}\\u{a}\\u{9}ok"
        );
    }

    #[test]
    fn human_output() {
        let answer = serde_json::json!({
            "record": {
                "envelope": {
                    "id": ID,
                    "sender": "<a@local.test>",
                    "recipients": [{
                        "address": "b@remote.test",
                        "state": "pending",
                        "attempts": 2,
                        "last_result": "451 4.3.0 \u{1b}[31mbusy"
                    }],
                    "received_at": 0,
                    "size": 20,
                    "origin": {
                        "listener": "submission",
                        "peer": "192.0.2.1:5000",
                        "helo": "laptop",
                        "auth_user": "a@local.test",
                        "tls": "TLSv1.3 TLS13_AES_128_GCM_SHA256"
                    },
                    "delay_warned": false
                },
                "next_attempt_ms": 300_000
            },
            "body_size": 20,
            "headers": ["Subject: hi"]
        });
        let id = MessageId::parse(ID).expect("id");
        let text = render(&Request::Show(id.clone()), answer, Via::Server).expect("render");
        assert_eq!(
            text,
            format!(
                "id            {ID}\n\
                 from          <a@local.test>\n\
                 received      Thu, 1 Jan 1970 00:00:00 +0000 on submission from \
                 192.0.2.1:5000 (helo laptop)\n\
                 tls           TLSv1.3 TLS13_AES_128_GCM_SHA256\n\
                 auth user     a@local.test\n\
                 size          20 bytes\n\
                 next attempt  Thu, 1 Jan 1970 00:05:00 +0000\n\
                 delay notice  not sent\n\
                 recipients\n    \
                 b@remote.test  pending  attempts 2  451 4.3.0 \\u{{1b}}[31mbusy\n\
                 headers\n    \
                 Subject: hi\n"
            )
        );
        let flushed = render(
            &Request::Flush,
            serde_json::json!({ "flushed": 2 }),
            Via::Store,
        )
        .expect("render");
        assert!(flushed.starts_with("2 waiting message(s) made due now (no server"));
        let resumed = render(
            &Request::Flush,
            serde_json::json!({ "flushed": 5, "resumed": 2 }),
            Via::Server,
        )
        .expect("render");
        assert_eq!(
            resumed,
            "5 waiting message(s) made due now; 2 suspended destination(s) tried again\n"
        );
    }
}
