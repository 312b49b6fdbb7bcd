//! The server's EHLO reply as a list of extensions we use, sans I/O.
//!
//! RFC 5321 §4.1.1.1 (`ehlo-ok-rsp`: the first line greets, each further line is `keyword
//! *(SP param)`, keywords case-insensitive), RFC 2920 PIPELINING, RFC 1870 SIZE (§4: `SIZE`
//! with no number or `0` means no fixed limit), RFC 6152 8BITMIME, RFC 6531 SMTPUTF8,
//! RFC 3207 STARTTLS, RFC 2034 ENHANCEDSTATUSCODES, RFC 3030 CHUNKING, RFC 4954 §3 AUTH (and
//! the pre-standard `AUTH=` form some old servers still send). Unknown keywords are ignored.

use super::reply::ServerReply;

/// What the server offered in its last EHLO reply. After STARTTLS this is replaced by the
/// list from the new EHLO (RFC 3207 §4.2); after a HELO fallback it is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// RFC 2920 PIPELINING.
    pub pipelining: bool,
    /// RFC 1870 SIZE: `None` when not offered, `Some(0)` when offered without a fixed limit
    /// (or with a limit we cannot read), `Some(n)` for a limit of `n` octets.
    pub size: Option<u64>,
    /// RFC 6152 8BITMIME.
    pub eight_bit_mime: bool,
    /// RFC 6531 SMTPUTF8.
    pub smtputf8: bool,
    /// RFC 3207 STARTTLS.
    pub starttls: bool,
    /// RFC 2034 ENHANCEDSTATUSCODES.
    pub enhanced_status_codes: bool,
    /// RFC 4954 SASL mechanisms, upper case, in the server's order, no duplicates.
    pub auth: Vec<String>,
    /// RFC 8689 REQUIRETLS.
    pub require_tls: bool,
    /// RFC 3030 CHUNKING (BDAT).
    pub chunking: bool,
    /// RFC 3461 DSN.
    pub dsn: bool,
}

impl Extensions {
    /// Reads the extensions from a 2xx EHLO reply.
    pub fn parse(reply: &ServerReply) -> Extensions {
        let mut ext = Extensions::default();
        // The first line is the server's name and greeting, not a keyword.
        for line in reply.lines().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let keyword = keyword.to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "REQUIRETLS" => ext.require_tls = true,
                "CHUNKING" => ext.chunking = true,
                "DSN" => ext.dsn = true,
                "STARTTLS" => ext.starttls = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                "AUTH" => ext.add_mechanisms(words),
                // Pre-RFC 4954 servers: `AUTH=LOGIN PLAIN`.
                k if k.starts_with("AUTH=") => {
                    ext.add_mechanisms(std::iter::once(&k["AUTH=".len()..]).chain(words));
                }
                _ => {}
            }
        }
        ext
    }

    fn add_mechanisms<'a>(&mut self, words: impl Iterator<Item = &'a str>) {
        for mech in words.filter(|m| !m.is_empty()) {
            let mech = mech.to_ascii_uppercase();
            if !self.auth.contains(&mech) {
                self.auth.push(mech);
            }
        }
    }

    /// True when the server offers this SASL mechanism (case-insensitive).
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(lines: &[&str]) -> Extensions {
        Extensions::parse(&ServerReply {
            code: 250,
            enhanced: None,
            text: lines.join("\n"),
        })
    }

    #[test]
    fn keywords() {
        let none = Extensions::default();
        let table: Vec<(&[&str], Extensions)> = vec![
            (&["mx.example.test"], none.clone()),
            (&["mx.example.test Hello"], none.clone()),
            // The greeting line is never a keyword.
            (&["PIPELINING"], none.clone()),
            (
                &[
                    "mx",
                    "PIPELINING",
                    "8BITMIME",
                    "SMTPUTF8",
                    "STARTTLS",
                    "ENHANCEDSTATUSCODES",
                ],
                Extensions {
                    pipelining: true,
                    eight_bit_mime: true,
                    smtputf8: true,
                    starttls: true,
                    enhanced_status_codes: true,
                    ..none.clone()
                },
            ),
            (
                &["mx", "pipelining", "starttls"],
                Extensions {
                    pipelining: true,
                    starttls: true,
                    ..none.clone()
                },
            ),
            (
                &["mx", "SIZE 35882577"],
                Extensions {
                    size: Some(35_882_577),
                    ..none.clone()
                },
            ),
            (
                &["mx", "SIZE"],
                Extensions {
                    size: Some(0),
                    ..none.clone()
                },
            ),
            (
                &["mx", "SIZE 0"],
                Extensions {
                    size: Some(0),
                    ..none.clone()
                },
            ),
            (
                &["mx", "SIZE lots"],
                Extensions {
                    size: Some(0),
                    ..none.clone()
                },
            ),
            (
                &[
                    "mx",
                    "AUTH PLAIN LOGIN",
                    "AUTH=LOGIN",
                    "auth cram-md5 plain",
                ],
                Extensions {
                    auth: vec!["PLAIN".into(), "LOGIN".into(), "CRAM-MD5".into()],
                    ..none.clone()
                },
            ),
            (
                &["mx", "AUTH=PLAIN LOGIN"],
                Extensions {
                    auth: vec!["PLAIN".into(), "LOGIN".into()],
                    ..none.clone()
                },
            ),
            (
                &["mx", "", "  ", "X-UNKNOWN 1 2", "BINARYMIME"],
                none.clone(),
            ),
            (
                &["mx", "dsn"],
                Extensions {
                    dsn: true,
                    ..none.clone()
                },
            ),
            (
                &["mx", "chunking"],
                Extensions {
                    chunking: true,
                    ..none.clone()
                },
            ),
            // Words that only contain a keyword are not it.
            (&["mx", "PIPELININGX", "XSTARTTLS"], none.clone()),
        ];
        for (lines, want) in table {
            assert_eq!(ehlo(lines), want, "{lines:?}");
        }
    }

    #[test]
    fn offers_auth_ignores_case() {
        let ext = ehlo(&["mx", "AUTH login"]);
        assert!(ext.offers_auth("LOGIN"));
        assert!(!ext.offers_auth("PLAIN"));
    }
}
