//! `mta queue list` one record at a time: the server reads the store as it writes to the
//! control socket, and the command prints each message as it reads it, so the first lines
//! come at once and neither side holds the whole queue in memory, however big it is.
//!
//! The request is `queue-list-stream`; the answer is JSON lines, one per record:
//! `{"record": {...}, "held": false}`, `{"corrupt": "…"}` for a record that does not decode,
//! and last `{"end": N}` (N records), or `{"error": "…"}` when the store cannot be read. A
//! listing without its `end` line is not the whole queue, and is reported as an error.

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;

use anyhow::Context as _;
use mta_core::config::Config;
use mta_queue::{Queue, Record};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;

use crate::control_client;

/// The request line.
pub const LIST: &str = "queue-list-stream";

/// Lines the server reads ahead of the socket: what it holds at most while a slow reader
/// lists a big queue.
const AHEAD: usize = 64;

/// One line of the answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    /// A queued message, and whether its user is held (`mta user hold`).
    Record {
        /// The record, its due time on the wall clock.
        record: Box<Record>,
        /// Its user is held: kept, not delivered.
        #[serde(default)]
        held: bool,
    },
    /// A record that does not decode (set aside).
    Corrupt {
        /// What is wrong with it.
        corrupt: String,
    },
    /// The end of the listing: this many records.
    End {
        /// Records listed.
        end: u64,
    },
    /// The store could not be read: the records before are not the whole queue.
    Error {
        /// Why.
        error: String,
    },
}

/// Lists `queue` into `emit`, one JSON line (with its `\n`) at a time, ending with the
/// `end` or `error` line; stops early when `emit` returns false.
pub fn lines(queue: &Queue, mut emit: impl FnMut(String) -> bool) {
    let mut count = 0u64;
    let mut line = |line: &Line| {
        let mut text = serde_json::to_string(line).expect("a listing line always serialises");
        text.push('\n');
        emit(text)
    };
    let listed = queue.list_each(|item| match item {
        Ok(record) => {
            count += 1;
            let held = record
                .envelope
                .origin
                .auth_user
                .as_deref()
                .is_some_and(|u| queue.store().is_user_held(u));
            line(&Line::Record {
                record: Box::new(record),
                held,
            })
        }
        Err(corrupt) => line(&Line::Corrupt { corrupt }),
    });
    let last = match listed {
        Ok(()) => Line::End { end: count },
        Err(e) => Line::Error {
            error: e.to_string(),
        },
    };
    line(&last);
}

/// Answers `queue-list-stream` on the control socket: the store is read on a blocking
/// thread at most [`AHEAD`] lines ahead of what the socket took.
pub async fn serve(queue: Arc<Queue>, mut write: OwnedWriteHalf) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(AHEAD);
    let reader = tokio::task::spawn_blocking(move || {
        lines(&queue, |line| tx.blocking_send(line).is_ok());
    });
    while let Some(line) = rx.recv().await {
        if write.write_all(line.as_bytes()).await.is_err() {
            break;
        }
    }
    // The reader stops at its next line once the receiver is gone.
    drop(rx);
    let _ = reader.await;
}

/// What is printed as the lines come.
pub struct Printer<W: Write> {
    out: W,
    json: bool,
    records: u64,
    corrupt: Vec<String>,
    held: Vec<String>,
    started: bool,
}

impl<W: Write> Printer<W> {
    /// Prints to `out`, as JSON when `json`.
    pub fn new(out: W, json: bool) -> Printer<W> {
        Printer {
            out,
            json,
            records: 0,
            corrupt: Vec::new(),
            held: Vec::new(),
            started: false,
        }
    }

    /// Prints one line of the answer; `Ok(true)` when it was the last.
    ///
    /// # Errors
    /// An `error` line, a line that cannot be read, or stdout closed.
    pub fn line(&mut self, text: &str) -> anyhow::Result<bool> {
        let line: Line = serde_json::from_str(text)
            .with_context(|| format!("unreadable listing line {text:?}"))?;
        match line {
            Line::Error { error } => anyhow::bail!("{error}"),
            Line::Record { record, held } => {
                self.start()?;
                if held {
                    self.held.push(record.envelope.id.to_string());
                }
                if self.json {
                    let sep = if self.records == 0 { "" } else { "," };
                    writeln!(self.out, "{sep}{}", serde_json::to_string(&record)?)?;
                } else {
                    self.out
                        .write_all(crate::queue_text::render_record(&record, held).as_bytes())?;
                }
                self.records += 1;
                // The first lines show at once; then in blocks.
                if self.records <= 16 || self.records.is_multiple_of(256) {
                    self.out.flush()?;
                }
            }
            Line::Corrupt { corrupt } => {
                self.start()?;
                self.corrupt.push(corrupt);
            }
            Line::End { .. } => {
                self.start()?;
                self.finish()?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn start(&mut self) -> std::io::Result<()> {
        if self.json && !self.started {
            writeln!(self.out, "{{\"records\": [")?;
        }
        self.started = true;
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        if self.json {
            writeln!(
                self.out,
                "], \"errors\": {}, \"held\": {}}}",
                serde_json::json!(self.corrupt),
                serde_json::json!(self.held)
            )?;
        } else {
            for err in &self.corrupt {
                writeln!(
                    self.out,
                    "corrupt: {}",
                    mta_core::text::terminal(err, false)
                )?;
            }
            writeln!(self.out, "{} message(s) queued", self.records)?;
        }
        self.out.flush()
    }
}

/// `mta queue list [--json]`: asks the running server, or reads the store when none runs,
/// and prints each message as it comes.
///
/// # Errors
/// The queue cannot be reached or read, or the listing ends before its last line.
pub fn list(config: &Config, json: bool) -> anyhow::Result<()> {
    let mut printer = Printer::new(std::io::stdout().lock(), json);
    if let Some(stream) = control_client::send(&config.data_dir, LIST)? {
        for line in BufReader::new(stream).lines() {
            let line = line.context("reading the listing from the running server")?;
            if printer.line(&line)? {
                return Ok(());
            }
        }
        anyhow::bail!("the server closed the control socket before the end of the list");
    }
    let Some(queue) = crate::queue_store::open(config)? else {
        // No server ever made a queue here: an empty one.
        printer.line(&serde_json::to_string(&Line::End { end: 0 })?)?;
        return Ok(());
    };
    let mut failed = None;
    lines(&queue, |line| match printer.line(line.trim_end()) {
        Ok(_) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Against the listing as one answer (`queue-list`), which reads the whole queue at
    /// once: the streamed JSON holds the same records and errors.
    #[tokio::test]
    async fn streamed_json_is_the_whole_listing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let queue = crate::control::tests::queue_with_one(&dir).await;
        let mut streamed = Vec::new();
        let mut printer = Printer::new(&mut streamed, true);
        let mut last = false;
        lines(&queue, |line| {
            last = printer.line(line.trim_end()).expect("a listing line");
            true
        });
        assert!(last, "the listing ends with its end line");
        let mut streamed: Value = serde_json::from_slice(&streamed).expect("valid JSON");
        let mut whole =
            serde_json::to_value(crate::control::listing(&queue).expect("listing")).expect("JSON");
        // The two listings are read at different moments, and a due time far off is shown
        // relative to the moment of reading: compare them apart from it.
        for listing in [&mut streamed, &mut whole] {
            for record in listing["records"].as_array_mut().expect("records") {
                let due = record
                    .as_object_mut()
                    .expect("a record")
                    .remove("next_attempt_ms");
                assert!(due.is_some_and(|d| d.is_u64()), "{record}");
            }
        }
        assert_eq!(streamed["records"], whole["records"]);
        assert_eq!(streamed["errors"], whole["errors"]);
        assert_eq!(streamed["held"], whole["held"]);
    }

    #[test]
    fn a_listing_cut_short_is_an_error() {
        let mut out = Vec::new();
        let mut printer = Printer::new(&mut out, false);
        let error = printer
            .line(r#"{"error": "the store cannot be read"}"#)
            .expect_err("an error line");
        assert!(error.to_string().contains("cannot be read"));
        assert!(!printer.line(r#"{"corrupt": "x"}"#).expect("a line"));
        assert!(printer.line(r#"{"end": 0}"#).expect("the end"));
        assert_eq!(
            String::from_utf8(out).expect("text"),
            "corrupt: x\n0 message(s) queued\n"
        );
    }
}
