//! Parsing one SMTP command line (RFC 5321 §4.1.1) into a [`Command`], sans I/O.
//!
//! The input is one line without its CRLF; framing and the 512-octet limit are
//! [`super::line`]'s job. A line that does not parse becomes a [`Rejection`]: the reply to
//! send and whether to close (HTTP and proxy verbs: a cross-protocol attack, not a client).

use mta_core::address::{
    AddressError, ForwardPath, ReversePath, parse_forward_path, parse_reverse_path,
};
use mta_core::dsn::{MessageDsn, RcptDsn};
use mta_core::reply::Reply;

use super::params::{self, MailExtensions};

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// EHLO with the client's name.
    Ehlo(String),
    /// HELO with the client's name.
    Helo(String),
    /// MAIL FROM with its parameters (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8,
    /// RFC 3461 RET and ENVID, RFC 4954 AUTH).
    Mail(MailFrom),
    /// RCPT TO. `utf8` is true when the path has non-ASCII characters.
    Rcpt {
        /// The recipient.
        to: ForwardPath,
        /// The path text had non-ASCII characters (needs SMTPUTF8).
        utf8: bool,
        /// RFC 3461 NOTIFY and ORCPT.
        dsn: RcptDsn,
    },
    /// DATA.
    Data,
    /// BDAT (RFC 3030): a chunk of `size` octets follows the line.
    Bdat {
        /// The octets in the chunk.
        size: u64,
        /// `LAST`: the chunk ends the message.
        last: bool,
    },
    /// RSET.
    Rset,
    /// NOOP (its argument is ignored).
    Noop,
    /// QUIT.
    Quit,
    /// HELP (its argument is ignored).
    Help,
    /// VRFY (answered 252 whatever the argument).
    Vrfy,
    /// EXPN (never implemented: it would list mailboxes).
    Expn,
    /// STARTTLS (RFC 3207).
    StartTls,
    /// AUTH (RFC 4954) with an optional initial response (base64 text, or `=` for empty).
    Auth {
        /// The SASL mechanism.
        mechanism: Mechanism,
        /// The initial response as sent, if any.
        initial: Option<String>,
    },
}

/// MAIL FROM and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    /// The sender (`<>` allowed).
    pub from: ReversePath,
    /// `SIZE=` as declared by the client.
    pub size: Option<u64>,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
    /// `REQUIRETLS` was given (RFC 8689).
    pub require_tls: bool,
    /// `RET` and `ENVID` (RFC 3461).
    pub dsn: MessageDsn,
    /// `AUTH=` was given (RFC 4954 §5); only where AUTH is offered may it be.
    pub auth: bool,
}

/// The SASL mechanisms we offer (over TLS only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// The widely used, never standardised LOGIN.
    Login,
}

/// A line that is not a command we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// What to answer.
    pub reply: Reply,
    /// Close the connection after the reply.
    pub close: bool,
}

impl Rejection {
    fn reply(reply: Reply) -> Rejection {
        Rejection {
            reply,
            close: false,
        }
    }
}

/// Verbs of other protocols. A first line like these means a browser or proxy is being
/// pointed at us (cross-protocol attacks such as ALPACA): answer once and close.
const FOREIGN_VERBS: &[&str] = &[
    "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "CONNECT", "PATCH", "TRACE", "USER", "PASS",
];

/// Parses one command line (without CRLF).
///
/// # Errors
/// A [`Rejection`] with the RFC reply for unknown commands and bad syntax.
pub fn parse(line: &[u8]) -> Result<Command, Rejection> {
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(Rejection::reply(Reply::SYNTAX_ERROR));
    };
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Rejection::reply(Reply::SYNTAX_ERROR));
    }
    let (verb, rest) = match line.split_once(' ') {
        Some((v, r)) => (v, r),
        None => (line, ""),
    };
    let upper = verb.to_ascii_uppercase();
    let no_args = |cmd: Command| {
        if rest.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(Rejection::reply(Reply::SYNTAX_ERROR))
        }
    };
    match upper.as_str() {
        "EHLO" => client_name(rest).map(Command::Ehlo),
        "HELO" => client_name(rest).map(Command::Helo),
        "MAIL" => mail(rest),
        "RCPT" => rcpt(rest),
        "DATA" => no_args(Command::Data),
        "BDAT" => super::bdat::parse(rest)
            .map(|(size, last)| Command::Bdat { size, last })
            .map_err(|reply| Rejection { reply, close: true }),
        "RSET" => no_args(Command::Rset),
        "QUIT" => no_args(Command::Quit),
        "STARTTLS" => no_args(Command::StartTls),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "AUTH" => auth(rest),
        v if FOREIGN_VERBS.contains(&v) || v.contains(':') => Err(Rejection {
            reply: Reply::HTTP_REFUSED,
            close: true,
        }),
        _ => Err(Rejection::reply(Reply::UNKNOWN_COMMAND)),
    }
}

/// The argument of EHLO/HELO: a domain or address literal in principle; in practice any
/// printable ASCII word (many clients send bare or odd names), never spaces or controls,
/// so it can go into a `Received` header as it is.
fn client_name(rest: &str) -> Result<String, Rejection> {
    let name = rest.trim();
    let printable = name.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if name.is_empty() || name.len() > 255 || !printable || name.contains(' ') {
        return Err(Rejection::reply(Reply::new(
            501,
            "5.5.4",
            "Syntax: EHLO hostname",
        )));
    }
    Ok(name.to_string())
}

/// Splits `FROM:<path> params` after the verb; tolerates one space after the colon, as
/// many clients send it.
fn path_and_params<'a>(rest: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let after = rest[keyword.len()..]
        .strip_prefix(' ')
        .unwrap_or(&rest[keyword.len()..]);
    if !after.starts_with('<') {
        return None;
    }
    // The path ends at the first '>' outside a quoted string.
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in after.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let params = &after[i + 1..];
                if !params.is_empty() && !params.starts_with(' ') {
                    return None;
                }
                return Some((&after[..=i], params.trim_start()));
            }
            _ => {}
        }
    }
    None
}

fn mail(rest: &str) -> Result<Command, Rejection> {
    let Some((path, params)) = path_and_params(rest, "FROM:") else {
        return Err(Rejection::reply(Reply::new(
            501,
            "5.5.4",
            "Syntax: MAIL FROM:<address>",
        )));
    };
    let mut size = None;
    let mut smtputf8 = false;
    let mut require_tls = false;
    let mut ext = MailExtensions::default();
    for param in params.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v)) => {
                let n = v
                    .parse::<u64>()
                    .ok()
                    .filter(|_| v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| Rejection::reply(Reply::SYNTAX_ERROR))?;
                size = Some(n);
            }
            ("BODY", Some(v))
                if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
            ("SMTPUTF8", None) => smtputf8 = true,
            ("REQUIRETLS", None) => require_tls = true,
            (key, value) => ext.take(key, value).map_err(Rejection::reply)?,
        }
    }
    if !path.is_ascii() && !smtputf8 {
        return Err(Rejection::reply(Reply::NEED_SMTPUTF8));
    }
    let from =
        parse_reverse_path(path).map_err(|e| address_rejection(e, Reply::BAD_SENDER_SYNTAX))?;
    Ok(Command::Mail(MailFrom {
        from,
        size,
        smtputf8,
        require_tls,
        dsn: ext.dsn,
        auth: ext.auth,
    }))
}

fn rcpt(rest: &str) -> Result<Command, Rejection> {
    let Some((path, params)) = path_and_params(rest, "TO:") else {
        return Err(Rejection::reply(Reply::new(
            501,
            "5.5.4",
            "Syntax: RCPT TO:<address>",
        )));
    };
    let mut dsn = RcptDsn::default();
    for param in params.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        params::rcpt_param(&mut dsn, &key.to_ascii_uppercase(), value).map_err(Rejection::reply)?;
    }
    let to =
        parse_forward_path(path).map_err(|e| address_rejection(e, Reply::BAD_RECIPIENT_SYNTAX))?;
    Ok(Command::Rcpt {
        to,
        utf8: !path.is_ascii(),
        dsn,
    })
}

fn address_rejection(error: AddressError, syntax: Reply) -> Rejection {
    let reply = match error {
        AddressError::TooLong { what: "path", .. } => Reply::new(501, "5.5.4", "Path too long"),
        AddressError::TooLong { .. } => Reply::new(
            syntax.code,
            syntax.enhanced.unwrap_or("5.1.3"),
            error.to_string(),
        ),
        AddressError::Empty
        | AddressError::BadChar(_)
        | AddressError::BadDomain(_)
        | AddressError::BadLocalPart
        | AddressError::BadPath => syntax,
    };
    Rejection::reply(reply)
}

fn auth(rest: &str) -> Result<Command, Rejection> {
    let mut words = rest.split(' ').filter(|w| !w.is_empty());
    let mechanism = match words.next().map(str::to_ascii_uppercase).as_deref() {
        Some("PLAIN") => Mechanism::Plain,
        Some("LOGIN") => Mechanism::Login,
        Some(_) => return Err(Rejection::reply(Reply::UNKNOWN_MECHANISM)),
        None => return Err(Rejection::reply(Reply::SYNTAX_ERROR)),
    };
    let initial = words.next().map(str::to_string);
    if words.next().is_some() {
        return Err(Rejection::reply(Reply::SYNTAX_ERROR));
    }
    Ok(Command::Auth { mechanism, initial })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_core::address::Address;

    fn addr(a: &str) -> Address {
        Address::parse(a).unwrap()
    }

    #[test]
    fn commands() {
        let table: Vec<(&str, Command)> = vec![
            ("EHLO client.test", Command::Ehlo("client.test".into())),
            ("ehlo [127.0.0.1]", Command::Ehlo("[127.0.0.1]".into())),
            ("HELO x", Command::Helo("x".into())),
            (
                "MAIL FROM:<a@b.test>",
                Command::Mail(MailFrom {
                    from: ReversePath::Address(addr("a@b.test")),
                    size: None,
                    smtputf8: false,
                    require_tls: false,
                    dsn: MessageDsn::default(),
                    auth: false,
                }),
            ),
            (
                "mail from: <a@b.test> SIZE=1000 BODY=8BITMIME",
                Command::Mail(MailFrom {
                    from: ReversePath::Address(addr("a@b.test")),
                    size: Some(1000),
                    smtputf8: false,
                    require_tls: false,
                    dsn: MessageDsn::default(),
                    auth: false,
                }),
            ),
            (
                "MAIL FROM:<> SMTPUTF8",
                Command::Mail(MailFrom {
                    from: ReversePath::Null,
                    size: None,
                    smtputf8: true,
                    require_tls: false,
                    dsn: MessageDsn::default(),
                    auth: false,
                }),
            ),
            (
                "MAIL FROM:<ñ@b.test> SMTPUTF8",
                Command::Mail(MailFrom {
                    from: ReversePath::Address(addr("ñ@b.test")),
                    size: None,
                    smtputf8: true,
                    require_tls: false,
                    dsn: MessageDsn::default(),
                    auth: false,
                }),
            ),
            (
                "MAIL FROM:<\"a> b\"@b.test>",
                Command::Mail(MailFrom {
                    from: ReversePath::Address(addr("\"a> b\"@b.test")),
                    size: None,
                    smtputf8: false,
                    require_tls: false,
                    dsn: MessageDsn::default(),
                    auth: false,
                }),
            ),
            (
                "RCPT TO:<c@d.test>",
                Command::Rcpt {
                    to: ForwardPath::Address(addr("c@d.test")),
                    utf8: false,
                    dsn: RcptDsn::default(),
                },
            ),
            (
                "RCPT TO:<Postmaster>",
                Command::Rcpt {
                    to: ForwardPath::Postmaster,
                    utf8: false,
                    dsn: RcptDsn::default(),
                },
            ),
            (
                "RCPT TO:<ñ@d.test>",
                Command::Rcpt {
                    to: ForwardPath::Address(addr("ñ@d.test")),
                    utf8: true,
                    dsn: RcptDsn::default(),
                },
            ),
            ("DATA", Command::Data),
            ("rset", Command::Rset),
            ("NOOP anything", Command::Noop),
            ("QUIT", Command::Quit),
            ("HELP MAIL", Command::Help),
            ("VRFY root", Command::Vrfy),
            ("EXPN staff", Command::Expn),
            ("STARTTLS", Command::StartTls),
            (
                "AUTH PLAIN",
                Command::Auth {
                    mechanism: Mechanism::Plain,
                    initial: None,
                },
            ),
            (
                "AUTH plain AGFsaWNlAHB3",
                Command::Auth {
                    mechanism: Mechanism::Plain,
                    initial: Some("AGFsaWNlAHB3".into()),
                },
            ),
            (
                "AUTH LOGIN",
                Command::Auth {
                    mechanism: Mechanism::Login,
                    initial: None,
                },
            ),
        ];
        for (line, want) in table {
            assert_eq!(parse(line.as_bytes()), Ok(want), "{line}");
        }
    }

    #[test]
    fn rejections() {
        let table: &[(&[u8], u16, &str, bool)] = &[
            (b"FOO", 500, "5.5.1", false),
            (b"", 500, "5.5.1", false),
            (b"EHLO", 501, "5.5.4", false),
            (b"EHLO a b", 501, "5.5.4", false),
            (b"MAIL TO:<a@b.test>", 501, "5.5.4", false),
            (b"MAIL FROM:a@b.test", 501, "5.5.4", false),
            (b"MAIL FROM:<a@b.test>junk", 501, "5.5.4", false),
            (b"MAIL FROM:<a@@b.test>", 501, "5.1.7", false),
            (b"MAIL FROM:<a@b.test> SIZE=abc", 501, "5.5.4", false),
            (
                b"MAIL FROM:<a@b.test> SIZE=99999999999999999999999",
                501,
                "5.5.4",
                false,
            ),
            (b"MAIL FROM:<a@b.test> FOO=1", 555, "5.5.4", false),
            (b"MAIL FROM:<a@b.test> RET=BOTH", 501, "5.5.4", false),
            (
                b"MAIL FROM:<a@b.test> RET=HDRS RET=FULL",
                501,
                "5.5.4",
                false,
            ),
            (b"MAIL FROM:<a@b.test> ENVID=a ENVID=a", 501, "5.5.4", false),
            (b"MAIL FROM:<a@b.test> ENVID=+zz", 501, "5.5.4", false),
            (b"MAIL FROM:<a@b.test> ENVID=+2", 501, "5.5.4", false),
            (b"MAIL FROM:<a@b.test> ENVID=a=b", 501, "5.5.4", false),
            (b"MAIL FROM:<a@b.test> ENVID=\xc3\xa9", 501, "5.5.4", false),
            (
                b"MAIL FROM:<a@b.test> ENVID=a+0D+0AX:+20y",
                501,
                "5.5.4",
                false,
            ),
            (b"MAIL FROM:<a@b.test> AUTH=a=b", 501, "5.5.4", false),
            (b"MAIL FROM:<a@b.test> AUTH=<> AUTH=<>", 501, "5.5.4", false),
            (
                b"RCPT TO:<a@b.test> NOTIFY=NEVER,SUCCESS",
                501,
                "5.5.4",
                false,
            ),
            (
                b"RCPT TO:<a@b.test> NOTIFY=SUCCESS NOTIFY=DELAY",
                501,
                "5.5.4",
                false,
            ),
            (
                b"RCPT TO:<a@b.test> NOTIFY=NEVER NOTIFY=NEVER",
                501,
                "5.5.4",
                false,
            ),
            (b"RCPT TO:<a@b.test> ORCPT=x400;a", 501, "5.5.4", false),
            (b"RCPT TO:<a@b.test> ORCPT=rfc822;+2", 501, "5.5.4", false),
            (b"RCPT TO:<a@b.test> FOO", 555, "5.5.4", false),
            (b"MAIL FROM:<\xc3\xb1@b.test>", 553, "5.6.7", false),
            (b"RCPT TO:<>", 501, "5.1.3", false),
            (b"RCPT TO:<a@b.test.>", 501, "5.1.3", false),
            (b"DATA now", 501, "5.5.4", false),
            (b"AUTH CRAM-MD5", 504, "5.5.4", false),
            (b"AUTH", 501, "5.5.4", false),
            (b"\xff\xfe", 501, "5.5.4", false),
            (b"NOOP \x00", 501, "5.5.4", false),
            (b"GET / HTTP/1.1", 500, "5.5.1", true),
            (b"POST /x HTTP/1.1", 500, "5.5.1", true),
            (b"CONNECT a:25 HTTP/1.1", 500, "5.5.1", true),
            (b"Host: example.org", 500, "5.5.1", true),
            (b"USER alice", 500, "5.5.1", true),
        ];
        for (line, code, enh, close) in table {
            let r = parse(line).expect_err(&String::from_utf8_lossy(line));
            assert_eq!(
                (r.reply.code, r.reply.enhanced, r.close),
                (*code, Some(*enh), *close),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let long = format!("RCPT TO:<{}@{}.test>", "a".repeat(64), "b".repeat(190));
        assert_eq!(parse(long.as_bytes()).unwrap_err().reply.code, 501);
        let envid = format!("MAIL FROM:<a@b.test> ENVID={}", "e".repeat(101));
        assert_eq!(parse(envid.as_bytes()).unwrap_err().reply.code, 501);
    }

    #[test]
    fn dsn_and_auth_parameters() {
        let Ok(Command::Mail(mail)) =
            parse(b"MAIL FROM:<a@b.test> ret=hdrs ENVID=QQ+2B1 AUTH=<> SIZE=10")
        else {
            panic!("MAIL with DSN parameters refused");
        };
        assert_eq!(mail.dsn.ret, Some(mta_core::dsn::Ret::Hdrs));
        assert_eq!(mail.dsn.envid.as_deref(), Some("QQ+1"));
        assert!(mail.auth);
        let Ok(Command::Rcpt { dsn, .. }) =
            parse(b"RCPT TO:<c@d.test> NOTIFY=success,DELAY ORCPT=rfc822;c+2Bx@d.test")
        else {
            panic!("RCPT with DSN parameters refused");
        };
        let notify = dsn.notify.unwrap();
        assert!(notify.success && notify.delay && !notify.failure);
        assert_eq!(dsn.orcpt.unwrap().address, "c+x@d.test");
        let Ok(Command::Rcpt { dsn, .. }) = parse(b"RCPT TO:<c@d.test> NOTIFY=NEVER") else {
            panic!("NOTIFY=NEVER refused");
        };
        assert_eq!(dsn.notify, Some(mta_core::dsn::Notify::default()));
    }
}
