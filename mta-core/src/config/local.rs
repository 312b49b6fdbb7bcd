//! `[local]` from the file to [`Local`]: how local mail is delivered (Maildir, or LMTP to a
//! server such as Dovecot's, RFC 2033) and the recipient delimiter of plus-addressing, with
//! the defaults and every check. Catch-all keys (`"@example.org"`) are read with the other
//! aliases in `validate.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::checker::Checker;
use super::file::RawLocal;
use super::{LineEndings, LmtpAddress, Local, LocalDelivery};

/// Plus-addressing is on unless the file turns it off: `bob+tag@` reaches bob.
const DEFAULT_DELIMITER: char = '+';

impl Checker<'_> {
    pub(super) fn local(&mut self, raw: &RawLocal) -> Local {
        let lmtp = raw.lmtp.as_ref().and_then(|text| {
            let value = text.get_ref();
            let parsed = match value.strip_prefix('/') {
                Some(_) => Ok(LmtpAddress::Unix(PathBuf::from(value))),
                None => match value.parse::<SocketAddr>() {
                    Ok(addr) if addr.port() == 0 => Err(format!(
                        "{value:?} has port 0, which no LMTP server listens on"
                    )),
                    Ok(addr) => Ok(LmtpAddress::Tcp(addr)),
                    Err(_) => Err(format!(
                        "{value:?} is neither an IP address and port (\"127.0.0.1:24\") nor \
                         the absolute path of a Unix socket (\"/run/dovecot/lmtp\")"
                    )),
                },
            };
            parsed
                .map_err(|msg| self.error(text.span(), "local.lmtp", msg))
                .ok()
        });
        let delivery = match raw.delivery.as_ref() {
            None => LocalDelivery::Maildir,
            Some(text) => match text.get_ref().as_str() {
                "maildir" => LocalDelivery::Maildir,
                "lmtp" => match &lmtp {
                    Some(at) => LocalDelivery::Lmtp(at.clone()),
                    None => {
                        if raw.lmtp.is_none() {
                            let msg = "\"lmtp\" needs local.lmtp, the LMTP server's address";
                            self.error(text.span(), "local.delivery", msg.to_string());
                        }
                        LocalDelivery::Maildir
                    }
                },
                other => {
                    let msg = format!("{other:?} is not one of \"maildir\", \"lmtp\"");
                    self.error(text.span(), "local.delivery", msg);
                    LocalDelivery::Maildir
                }
            },
        };
        if let Some(text) = &raw.lmtp
            && raw.delivery.as_ref().is_none_or(|d| d.get_ref() != "lmtp")
        {
            let msg = "has no use without local.delivery = \"lmtp\"".to_string();
            self.error(text.span(), "local.lmtp", msg);
        }
        let recipient_delimiter = match &raw.recipient_delimiter {
            None => Some(DEFAULT_DELIMITER),
            Some(text) => {
                let value = text.get_ref();
                let mut chars = value.chars();
                match (chars.next(), chars.next()) {
                    (None, _) => None,
                    (Some(c), None) if is_delimiter(c) => Some(c),
                    _ => {
                        let msg = format!(
                            "{value:?} is not one symbol allowed in a local part, such as \"+\" \
                             or \"-\" (no letter, digit, '.' or '/'); \"\" turns \
                             plus-addressing off"
                        );
                        self.error(text.span(), "local.recipient_delimiter", msg);
                        Some(DEFAULT_DELIMITER)
                    }
                }
            }
        };
        let mail_group = self.account_name(&raw.mail_group, "local.mail_group");
        let line_endings = self.line_endings(raw);
        Local {
            delivery,
            recipient_delimiter,
            mail_group,
            line_endings,
        }
    }
}

impl Checker<'_> {
    /// `local.line_endings`: `"lf"` (the default) or `"crlf"`.
    fn line_endings(&mut self, raw: &RawLocal) -> LineEndings {
        let Some(text) = raw.line_endings.as_ref() else {
            return LineEndings::Lf;
        };
        match text.get_ref().as_str() {
            "lf" => LineEndings::Lf,
            "crlf" => LineEndings::Crlf,
            other => {
                let msg = format!("{other:?} is not one of \"lf\", \"crlf\"");
                self.error(text.span(), "local.line_endings", msg);
                LineEndings::Lf
            }
        }
    }
}

/// RFC 5322 atext that is neither a letter nor a digit, and not `/` (a path separator in a
/// Maildir name).
fn is_delimiter(c: char) -> bool {
    "!#$%&'*+-=?^_`{|}~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{addr, addrs, domain, errors, parse};
    use super::*;

    #[test]
    fn delivery_and_delimiter() {
        let c = parse("").unwrap();
        assert_eq!(c.local.delivery, LocalDelivery::Maildir);
        assert_eq!(c.local.recipient_delimiter, Some('+'));
        let c = parse("[local]\ndelivery = \"lmtp\"\nlmtp = \"127.0.0.1:24\"\n").unwrap();
        let tcp = LmtpAddress::Tcp("127.0.0.1:24".parse().unwrap());
        assert_eq!(c.local.delivery, LocalDelivery::Lmtp(tcp));
        let c = parse("[local]\ndelivery = \"lmtp\"\nlmtp = \"/run/dovecot/lmtp\"\n").unwrap();
        let unix = LmtpAddress::Unix(PathBuf::from("/run/dovecot/lmtp"));
        assert_eq!(c.local.delivery, LocalDelivery::Lmtp(unix));
        let c = parse("[local]\nrecipient_delimiter = \"\"\n").unwrap();
        assert_eq!(c.local.recipient_delimiter, None);
        let c = parse("[local]\nrecipient_delimiter = \"-\"\n").unwrap();
        assert_eq!(c.local.recipient_delimiter, Some('-'));
        assert_eq!(c.local.mail_group, None);
        assert_eq!(c.local.line_endings, LineEndings::Lf);
        let c = parse("[local]\nline_endings = \"crlf\"\n").unwrap();
        assert_eq!(c.local.line_endings, LineEndings::Crlf);
        assert_eq!(
            errors("[local]\nline_endings = \"cr\"\n"),
            "mta.toml:2:16: local.line_endings: \"cr\" is not one of \"lf\", \"crlf\""
        );
        let c = parse("[local]\nmail_group = \"mta-mail\"\n").unwrap();
        assert_eq!(c.local.mail_group.as_deref(), Some("mta-mail"));
        // What check-config prints reads back to the same config.
        for text in [
            "[local]\ndelivery = \"lmtp\"\nlmtp = \"[::1]:24\"\nrecipient_delimiter = \"\"\n",
            "local_domains = [\"example.org\"]\n[aliases]\n\"@example.org\" = [\"a@example.org\"]\n",
            "[local]\nmail_group = \"mta-mail\"\n",
        ] {
            let c = parse(text).unwrap();
            assert_eq!(parse(&c.to_toml()).unwrap(), c, "{text}");
        }
    }

    #[test]
    fn local_errors() {
        let table = [
            (
                "[local]\ndelivery = \"mbox\"\n",
                "mta.toml:2:12: local.delivery: \"mbox\" is not one of \"maildir\", \"lmtp\"",
            ),
            (
                "[local]\ndelivery = \"lmtp\"\n",
                "mta.toml:2:12: local.delivery: \"lmtp\" needs local.lmtp, the LMTP server's address",
            ),
            (
                "[local]\nlmtp = \"127.0.0.1:24\"\n",
                "mta.toml:2:8: local.lmtp: has no use without local.delivery = \"lmtp\"",
            ),
            (
                "[local]\ndelivery = \"lmtp\"\nlmtp = \"localhost:24\"\n",
                "mta.toml:3:8: local.lmtp: \"localhost:24\" is neither an IP address and port \
                 (\"127.0.0.1:24\") nor the absolute path of a Unix socket (\"/run/dovecot/lmtp\")",
            ),
            (
                "[local]\ndelivery = \"lmtp\"\nlmtp = \"127.0.0.1:0\"\n",
                "mta.toml:3:8: local.lmtp: \"127.0.0.1:0\" has port 0, which no LMTP server listens on",
            ),
            (
                "[local]\nmail_group = \"-x\"\n",
                "mta.toml:2:14: local.mail_group: \"-x\" is not a user or group name (letters, \
                 digits, '_', '-', '.', at most 32 characters)",
            ),
        ];
        for (text, want) in table {
            assert_eq!(errors(text), want, "{text}");
        }
        for bad in ["++", "a", "7", ".", "/", "@", " ", "é"] {
            let text = format!("[local]\nrecipient_delimiter = {bad:?}\n");
            let e = errors(&text);
            assert!(
                e.starts_with("mta.toml:2:23: local.recipient_delimiter: "),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn catch_all() {
        let c = parse(
            "local_domains = [\"example.org\", \"other.example\"]\n[aliases]\n\
             \"@example.org\" = [\"postmaster@example.org\", \"bob@example.org\"]\n\
             \"postmaster@example.org\" = [\"alice@example.org\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.expand_catch_all(&domain("example.org")),
            Some(addrs(&["alice@example.org", "bob@example.org"]))
        );
        assert_eq!(c.expand_catch_all(&domain("other.example")), None);
        // A catch-all is not an alias of any one address.
        assert_eq!(c.expand_alias(&addr("nobody@example.org")), None);
        let table = [
            (
                "\"@remote.test\" = [\"a@example.org\"]",
                "mta.toml:3:1: aliases.\"@remote.test\": remote.test is not one of local_domains",
            ),
            (
                "\"@\" = [\"a@example.org\"]",
                "mta.toml:3:1: aliases.\"@\": \"@\" is not a catch-all: \"@\" must be followed by a local domain",
            ),
            (
                "\"@EXAMPLE.org\" = [\"a@example.org\"]\n\"@example.org\" = [\"b@example.org\"]",
                "mta.toml:4:1: aliases.\"@example.org\": a second catch-all for example.org",
            ),
            (
                "\"@example.org\" = []",
                "mta.toml:3:18: aliases.\"@example.org\": must list at least one target address",
            ),
        ];
        for (aliases, want) in table {
            let text = format!("local_domains = [\"example.org\"]\n[aliases]\n{aliases}\n");
            assert_eq!(errors(&text), want, "{aliases}");
        }
    }

    #[test]
    fn tags() {
        let c = parse(
            "local_domains = [\"example.org\"]\n[aliases]\n\
             \"team@example.org\" = [\"alice@example.org\", \"bob@example.org\"]\n\
             \"lists@example.org\" = [\"team+lists@example.org\"]\n",
        )
        .unwrap();
        let table = [
            ("bob+tag@example.org", Some("bob@example.org")),
            ("bob+@example.org", Some("bob@example.org")),
            ("a+b+c@example.org", Some("a@example.org")),
            ("bob@example.org", None),
            ("+tag@example.org", None),
            // Quotes that are not needed are dropped when parsing: this is bob+tag.
            ("\"bob+tag\"@example.org", Some("bob@example.org")),
            ("\"bob +tag\"@example.org", None),
            ("bob.+tag@example.org", None),
        ];
        for (a, want) in table {
            assert_eq!(c.untagged(&addr(a)), want.map(addr), "{a}");
        }
        // A tagged alias target follows the alias of its untagged form.
        assert_eq!(
            c.expand_alias(&addr("lists@example.org")),
            Some(addrs(&["alice@example.org", "bob@example.org"]))
        );
        let off = parse("[local]\nrecipient_delimiter = \"\"\n").unwrap();
        assert_eq!(off.untagged(&addr("bob+tag@localhost")), None);
    }
}
