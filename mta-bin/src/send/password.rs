//! The password for `--user`, from the first of: `--password-file`, `MTA_PASSWORD`, a hidden
//! prompt on the terminal, or one line of stdin when stdin is neither a terminal nor the
//! message. Never from the command line (other users see it in `ps`), and never the first
//! line of a message read from stdin.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::Path;

use anyhow::{Context as _, bail};

/// Whether stdin carries the message (`--data -`, `--body -`, `--raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    /// The message comes from stdin: the password must come from elsewhere.
    Message,
    /// Stdin is free for the password.
    Free,
}

/// The password of `user`.
///
/// # Errors
/// An unreadable or empty password file, no terminal when one is needed, an empty password.
pub fn get(user: &str, file: Option<&Path>, stdin: Stdin) -> anyhow::Result<String> {
    let password = if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "--password-file {}: cannot read it (check the path and its permissions)",
                path.display()
            )
        })?;
        first_line(&text).to_string()
    } else if let Ok(p) = std::env::var("MTA_PASSWORD") {
        p
    } else if std::io::stdin().is_terminal() || stdin == Stdin::Message {
        // rpassword reads from /dev/tty with echo off, whatever stdin is.
        rpassword::prompt_password(format!("Password for {user}: ")).map_err(|e| {
            let why = match stdin {
                Stdin::Message => "stdin carries the message",
                Stdin::Free => "stdin is a terminal",
            };
            anyhow::anyhow!(
                "no terminal to ask for the password of {user} ({e}), and {why}: \
                 give --password-file FILE or set MTA_PASSWORD"
            )
        })?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        first_line(&line).to_string()
    };
    if password.is_empty() {
        bail!(
            "the password for {user} is empty: give it in --password-file FILE, MTA_PASSWORD, \
             at the prompt or as one line on stdin"
        );
    }
    Ok(password)
}

/// The text up to the first line break.
fn first_line(text: &str) -> &str {
    text.split(['\r', '\n']).next().unwrap_or_default()
}
