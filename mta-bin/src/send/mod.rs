//! `mta send`: one message through any SMTP server, for trying our own server and any other,
//! as swaks does: the dialogue shown both ways (`--transcript`), stopped after any step
//! (`--quit-after`), a result per recipient and an exit code per failed step. The message is
//! built with lettre ([`message`]); the dialogue is our own ([`session`] orders the steps,
//! [`dialogue`] carries them, [`auth`] logs in) so that each step can be shown, bounded and
//! stopped after. Options are all checked, and files and the password read, before
//! connecting.

mod auth;
mod dialogue;
mod message;
mod password;
mod server;
mod session;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use lettre::Address;

use auth::Mechanism;
use dialogue::Phase;
use message::Source;

/// How to talk TLS to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    /// STARTTLS, required (default port 587; also port 25).
    Starttls,
    /// TLS from the first byte (default port 465).
    Implicit,
    /// Plaintext (default port 25; for testing).
    None,
}

impl TlsMode {
    /// The port when `--server` names none.
    fn default_port(self) -> u16 {
        match self {
            TlsMode::Starttls => 587,
            TlsMode::Implicit => 465,
            TlsMode::None => 25,
        }
    }
}

/// The step after which `--quit-after` ends the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuitAfter {
    /// After the greeting (with --tls implicit, after the handshake and the greeting).
    Connect,
    /// After the first EHLO (before STARTTLS).
    Ehlo,
    /// After the TLS handshake (with --tls implicit, the same as connect).
    Starttls,
    /// After AUTH (needs --user).
    Auth,
    /// After MAIL FROM.
    Mail,
    /// After the RCPT TO commands.
    Rcpt,
    /// After DATA's 354: the connection is closed without the message, which the server
    /// must throw away (no QUIT is possible inside the data).
    Data,
}

const EXIT_CODES: &str = "\
Exit status:
   0  sent (every recipient and the message accepted), or stopped by --quit-after
   1  an unexpected local failure
   2  bad options or input (a file, an address, a header, the password)
  20  cannot connect (name, address, port, --timeout)
  21  no greeting, or not 220
  22  EHLO (and HELO) refused
  23  MAIL FROM refused
  24  every RCPT TO refused
  25  DATA refused
  26  the message refused after its data
  28  AUTH refused, or no usable mechanism
  29  TLS: STARTTLS missing or refused, handshake or certificate failure
  30  sent, but some recipients were refused (each one's reply is printed)
A lost connection or a timeout gives the code of the step it happened in.";

/// Options of `mta send`.
#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct SendArgs {
    /// The server: HOST, HOST:PORT, [IPv6]:PORT. Default port by --tls: 587 starttls, 465
    /// implicit, 25 none.
    #[arg(long, short = 's')]
    server: String,
    /// TLS mode.
    #[arg(long, value_enum, default_value = "starttls")]
    tls: TlsMode,
    /// Also trust the CA certificates (PEM) in this file, e.g. a server's self-signed
    /// certificate.
    #[arg(long)]
    cafile: Option<PathBuf>,
    /// The name to verify in the server's certificate (default: HOST from --server).
    #[arg(long)]
    tls_name: Option<String>,
    /// Do not verify the server's certificate, neither its chain nor its name (testing only).
    #[arg(long)]
    insecure: bool,
    /// Log in as this user. The password comes from --password-file, else MTA_PASSWORD, else
    /// a hidden prompt on the terminal, else one line of stdin (never from the message).
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Read the password from the first line of this file.
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
    /// The SASL mechanism (default: PLAIN if offered, else LOGIN).
    #[arg(long, value_enum, requires = "user")]
    auth: Option<Mechanism>,
    /// Envelope sender, and From: of the built message; '<>' for the null sender (From:
    /// is then MAILER-DAEMON@ the --helo name).
    #[arg(long, short = 'f')]
    from: String,
    /// Envelope recipient, and To: of the built message; repeat, or separate with commas.
    #[arg(long, short = 't', required = true, value_delimiter = ',')]
    to: Vec<String>,
    /// Subject header.
    #[arg(long, default_value = "")]
    subject: String,
    /// The message body: TEXT, @FILE, or - for stdin.
    #[arg(long, default_value = "")]
    body: String,
    /// Add a header field 'Name: value' (repeatable); it replaces one of ours of that name.
    #[arg(long, short = 'H', value_name = "NAME: VALUE")]
    header: Vec<String>,
    /// Attach a file (repeatable); its content type is guessed from its name or content.
    #[arg(long, value_name = "FILE")]
    attach: Vec<PathBuf>,
    /// Send a whole RFC 5322 message as it is: @FILE, or - for stdin. Line ends become CRLF.
    #[arg(long, value_name = "@FILE|-", conflicts_with_all = ["subject", "body", "header", "attach"])]
    data: Option<String>,
    /// The same as --data - (the message on stdin).
    #[arg(long, conflicts_with_all = ["subject", "body", "header", "attach", "data"])]
    raw: bool,
    /// Name to give in EHLO.
    #[arg(long, alias = "ehlo", default_value = "mta-send.localhost")]
    helo: String,
    /// Give up on any step (connect, each reply, each write, the TLS handshake) after this
    /// many seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Show the dialogue both ways on stderr (AUTH secrets hidden).
    #[arg(long, short = 'v', alias = "verbose")]
    transcript: bool,
    /// Stop after this step, with QUIT.
    #[arg(long, value_enum)]
    quit_after: Option<QuitAfter>,
}

/// `--user`, its password and `--auth`.
struct Login {
    user: String,
    password: String,
    mechanism: Option<Mechanism>,
}

/// Everything checked and read before connecting.
struct Plan {
    host: String,
    port: u16,
    tls: TlsMode,
    tls_config: Option<std::sync::Arc<rustls::ClientConfig>>,
    tls_name: String,
    login: Option<Login>,
    from: Option<Address>,
    to: Vec<Address>,
    message: Vec<u8>,
    helo: String,
    timeout: Duration,
    transcript: bool,
    quit_after: Option<QuitAfter>,
}

/// Runs `mta send` and gives its exit code (the list is in `EXIT_CODES`).
pub fn run(args: SendArgs) -> ExitCode {
    let plan = match plan(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mta send: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mta send: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(session::run(&plan)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("mta send: {}: {}", phase_name(f.phase), f.message);
            ExitCode::from(f.phase.exit_code())
        }
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Connect => "connect",
        Phase::Greeting => "greeting",
        Phase::Ehlo => "EHLO",
        Phase::Tls => "TLS",
        Phase::Auth => "AUTH",
        Phase::Mail => "MAIL FROM",
        Phase::Rcpt => "RCPT TO",
        Phase::Data => "DATA",
        Phase::Message => "message",
    }
}

fn parse_address(flag: &str, text: &str) -> anyhow::Result<Address> {
    text.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .parse()
        .map_err(|e| {
            anyhow::anyhow!("{flag} {text:?} is not an address like user@example.org ({e})")
        })
}

/// Options that contradict each other or have no effect together.
fn check_flags(args: &SendArgs) -> anyhow::Result<()> {
    if args.tls == TlsMode::None {
        for (set, flag) in [
            (args.cafile.is_some(), "--cafile"),
            (args.tls_name.is_some(), "--tls-name"),
            (args.insecure, "--insecure"),
        ] {
            if set {
                bail!(
                    "{flag} has no effect with --tls none: drop it, or use --tls starttls|implicit"
                );
            }
        }
        if args.quit_after == Some(QuitAfter::Starttls) {
            bail!("--quit-after starttls needs TLS: use --tls starttls, or --quit-after ehlo");
        }
    }
    if args.quit_after == Some(QuitAfter::Auth) && args.user.is_none() {
        bail!("--quit-after auth needs --user (there is no AUTH without it)");
    }
    if args.cafile.is_some() && args.insecure {
        bail!("--cafile and --insecure together: --insecure trusts any certificate; drop one");
    }
    Ok(())
}

/// The message to send: the one given whole (`--data`, `--raw`), or one built from
/// `--subject`, `--body`, `--header` and `--attach`.
fn message_of(
    args: &SendArgs,
    data: Option<Source>,
    body: &Source,
    from: Option<&Address>,
    to: &[Address],
) -> anyhow::Result<Vec<u8>> {
    Ok(match data {
        Some(source) => {
            let raw = source.read(if args.raw { "--raw" } else { "--data" })?;
            if raw.is_empty() {
                bail!("--data: the message is empty");
            }
            message::wire_form(&raw)
        }
        None => {
            let headers = args
                .header
                .iter()
                .map(|h| message::parse_header(h))
                .collect::<anyhow::Result<Vec<_>>>()?;
            message::build(&message::Parts {
                from,
                to,
                subject: &args.subject,
                body: message::wire_form(&body.read("--body")?),
                headers: &headers,
                attach: &args.attach,
                helo: &args.helo,
            })?
        }
    })
}

/// Checks every option and reads every file and the password, so that nothing wrong is
/// found halfway through the dialogue.
fn plan(args: SendArgs) -> anyhow::Result<Plan> {
    let (host, port) = server::parse(&args.server, args.tls.default_port())?;
    check_flags(&args)?;
    let tls_name = args.tls_name.clone().unwrap_or_else(|| host.clone());
    let tls_config = match args.tls {
        TlsMode::None => None,
        _ => {
            tls::server_name(&tls_name)?;
            Some(tls::client_config(args.cafile.as_deref(), args.insecure)?)
        }
    };
    if mta_core::address::Domain::parse(&args.helo).is_err() {
        bail!(
            "--helo {:?} is not a host name (e.g. client.example.org)",
            args.helo
        );
    }
    let from = match args.from.trim() {
        "<>" | "" => None,
        f => Some(parse_address("--from", f)?),
    };
    let to = args
        .to
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| parse_address("--to", t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if to.is_empty() {
        bail!("--to: no recipient given");
    }
    let data = if args.raw {
        Some(Source::Stdin)
    } else {
        match args.data.as_deref().map(Source::parse) {
            Some(Source::Text(t)) => bail!(
                "--data {t:?}: give @FILE or - (stdin); for a text body use --body and --subject"
            ),
            other => other,
        }
    };
    let body = Source::parse(&args.body);
    let stdin = if data == Some(Source::Stdin) || body == Source::Stdin {
        password::Stdin::Message
    } else {
        password::Stdin::Free
    };
    let login = match &args.user {
        None => None,
        Some(user) => {
            let password = password::get(user, args.password_file.as_deref(), stdin)?;
            Some(Login {
                user: user.clone(),
                password,
                mechanism: args.auth,
            })
        }
    };
    let message = message_of(&args, data, &body, from.as_ref(), &to)?;
    Ok(Plan {
        host,
        port,
        tls: args.tls,
        tls_config,
        tls_name,
        login,
        from,
        to,
        message,
        helo: args.helo,
        timeout: Duration::from_secs(args.timeout),
        transcript: args.transcript,
        quit_after: args.quit_after,
    })
}
