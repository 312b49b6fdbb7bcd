//! Dialog files: a protocol corner case as a script, one file per case.
//!
//! ```text
//! # listener: submission        (smtp, submission or submissions; default smtp)
//! # any other line starting with # is a comment
//! C: EHLO client.test           sent with CRLF (`C:` alone sends an empty line)
//! S: 250                        the next reply must have this code…
//! C: MAIL FROM:<a@b.test>
//! S: 530 5.7.0                  …and this enhanced code (a prefix such as 5.7 also matches)
//! S: closed                     the server must close the connection now
//! ```
//!
//! The greeting is read (and must be 220) before the first line. After `C: STARTTLS`, a `220`
//! reply starts the TLS handshake. `submissions` connects with implicit TLS. Every `C:` line is
//! sent as soon as it is reached, so `C:` lines in a row are pipelined.

use std::path::{Path, PathBuf};

use crate::TestMta;
use crate::smtp::SmtpClient;

/// The listener a dialog talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Port 25 style.
    Smtp,
    /// STARTTLS submission.
    Submission,
    /// Implicit TLS submission.
    Submissions,
}

/// One step of a dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this line (CRLF added).
    Send(String),
    /// Read a reply with this code and, if given, this enhanced code (or prefix of one).
    Expect {
        /// The basic code.
        code: u16,
        /// The enhanced code or a prefix of it.
        enhanced: Option<String>,
    },
    /// The server must close the connection.
    Closed,
}

/// A parsed dialog file.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// The file name, for reports.
    pub name: String,
    /// Where to connect.
    pub listener: Listener,
    /// The steps with their 1-based line numbers.
    pub steps: Vec<(usize, Step)>,
}

/// Parses a dialog file's text.
///
/// # Errors
/// A line that is neither a comment, `C: …` nor a well-formed `S: …`, with its number.
pub fn parse(name: &str, text: &str) -> Result<Dialog, String> {
    let mut listener = Listener::Smtp;
    let mut steps = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(kind) = comment.trim().strip_prefix("listener:") {
                listener = match kind.trim() {
                    "smtp" => Listener::Smtp,
                    "submission" => Listener::Submission,
                    "submissions" => Listener::Submissions,
                    other => return Err(format!("{name}:{n}: unknown listener {other:?}")),
                };
            }
        } else if line.trim().is_empty() {
        } else if line == "C:" {
            // An empty line (inside DATA), whatever an editor did to the trailing space.
            steps.push((n, Step::Send(String::new())));
        } else if let Some(cmd) = line.strip_prefix("C: ") {
            steps.push((n, Step::Send(cmd.to_string())));
        } else if let Some(expect) = line.strip_prefix("S: ") {
            steps.push((
                n,
                parse_expect(expect).map_err(|e| format!("{name}:{n}: {e}"))?,
            ));
        } else {
            return Err(format!(
                "{name}:{n}: expected `C: `, `S: `, `#` or an empty line: {line:?}"
            ));
        }
    }
    if steps.is_empty() {
        return Err(format!("{name}: no steps"));
    }
    Ok(Dialog {
        name: name.to_string(),
        listener,
        steps,
    })
}

fn parse_expect(text: &str) -> Result<Step, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["closed"] => Ok(Step::Closed),
        [code] => Ok(Step::Expect {
            code: parse_code(code)?,
            enhanced: None,
        }),
        [code, enhanced] => {
            let ok = enhanced.split('.').all(|p| p.parse::<u16>().is_ok());
            if !ok {
                return Err(format!("bad enhanced code {enhanced:?}"));
            }
            Ok(Step::Expect {
                code: parse_code(code)?,
                enhanced: Some(enhanced.to_string()),
            })
        }
        _ => Err(format!(
            "expected `S: CODE [ENHANCED]` or `S: closed`, got {text:?}"
        )),
    }
}

fn parse_code(code: &str) -> Result<u16, String> {
    match code.parse::<u16>() {
        Ok(c) if (200..600).contains(&c) => Ok(c),
        _ => Err(format!("bad reply code {code:?}")),
    }
}

/// Runs one dialog against `mta` on a new connection.
///
/// # Errors
/// The first step that did not go as written, with the transcript so far.
pub fn run(dialog: &Dialog, mta: &TestMta) -> Result<(), String> {
    let cert = mta.cert_path();
    let mut client = match dialog.listener {
        Listener::Smtp => SmtpClient::connect(mta.smtp_addr()),
        Listener::Submission => SmtpClient::connect(mta.submission_addr()),
        Listener::Submissions => SmtpClient::connect_tls(mta.submissions_addr(), &cert),
    };
    let fail = |client: &SmtpClient, n: usize, msg: String| {
        Err(format!(
            "{}:{n}: {msg}\n    transcript:\n      {}",
            dialog.name,
            client.transcript().replace('\n', "\n      ")
        ))
    };
    match client.read_reply() {
        Ok(r) if r.code == 220 => {}
        Ok(r) => return fail(&client, 0, format!("greeting: expected 220, got {r}")),
        Err(e) => return fail(&client, 0, format!("greeting: {e}")),
    }
    let mut starttls_sent = false;
    for (n, step) in &dialog.steps {
        match step {
            Step::Send(line) => {
                if let Err(e) = client.send_line(line) {
                    return fail(&client, *n, format!("sending: {e}"));
                }
                starttls_sent = line.eq_ignore_ascii_case("STARTTLS");
            }
            Step::Expect { code, enhanced } => {
                let reply = match client.read_reply() {
                    Ok(r) => r,
                    Err(e) => {
                        return fail(&client, *n, format!("expected {code}, got no reply: {e}"));
                    }
                };
                if !reply.matches(*code, enhanced.as_deref()) {
                    let want = format!("{code} {}", enhanced.as_deref().unwrap_or(""));
                    return fail(
                        &client,
                        *n,
                        format!("expected {}, got {reply}", want.trim()),
                    );
                }
                if starttls_sent && reply.code == 220 {
                    client.upgrade_tls(&cert);
                }
                starttls_sent = false;
            }
            Step::Closed => {
                if !client.is_closed() {
                    return fail(&client, *n, "expected the connection to close".into());
                }
            }
        }
    }
    Ok(())
}

/// The `*.txt` files in `dir`, sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
}

/// Runs every dialog file in `dir` against `mta`; panics listing every one that failed.
pub fn run_dir(dir: &Path, mta: &TestMta) {
    let files = files(dir);
    assert!(!files.is_empty(), "no dialog files in {}", dir.display());
    let mut failures = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let result = parse(&name, &text).and_then(|d| run(&d, mta));
        if let Err(e) = result {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dialogs failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
