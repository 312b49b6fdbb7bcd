//! `[[inbound.milter]]`: the milters (Sendmail's mail filter protocol) a message passes after
//! our own checks, in the order the file lists them. Only the values are checked here; the
//! client is in `mta-smtp`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::checker::Checker;
use super::file::RawMilter;

/// One `[[inbound.milter]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Milter {
    /// Where the milter listens.
    pub address: MilterAddress,
    /// Run on mail from other servers (the `smtp` listener). Default true.
    pub smtp: bool,
    /// Run on users' submissions (ports 587 and 465). Default false.
    pub submission: bool,
    /// How long we wait for each reply. Default 30 s; a whole conversation takes at most four
    /// times this, whatever progress the milter reports.
    pub timeout: Duration,
    /// What a message gets when the milter cannot be asked (down, too slow, broken replies).
    pub on_failure: OnFailure,
}

/// `address`: `inet:host:port` or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MilterAddress {
    /// A TCP address (an IP and a port: no name is looked up).
    Inet(SocketAddr),
    /// A Unix socket.
    Unix(PathBuf),
}

impl std::fmt::Display for MilterAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MilterAddress::Inet(a) => write!(f, "inet:{a}"),
            MilterAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl MilterAddress {
    /// Reads `inet:IP:PORT` (`inet:[v6]:port` too) or `unix:/absolute/path`.
    pub fn parse(text: &str) -> Result<MilterAddress, String> {
        if let Some(rest) = text.strip_prefix("inet:") {
            return rest
                .parse::<SocketAddr>()
                .map(MilterAddress::Inet)
                .map_err(|_| format!("{text:?}: after inet: an IP address and a port"));
        }
        if let Some(rest) = text.strip_prefix("unix:") {
            if rest.starts_with('/') {
                return Ok(MilterAddress::Unix(PathBuf::from(rest)));
            }
            return Err(format!("{text:?}: after unix: an absolute path"));
        }
        Err(format!("{text:?} is neither inet:IP:PORT nor unix:/path"))
    }
}

/// `on_failure`: what a message gets when its milter cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// `451 4.7.1`: the client tries again later. The default: no mail passes unfiltered.
    Tempfail,
    /// Go on as if the milter had accepted it (logged).
    Accept,
}

impl OnFailure {
    /// The name in the config file.
    pub fn name(self) -> &'static str {
        match self {
            OnFailure::Tempfail => "tempfail",
            OnFailure::Accept => "accept",
        }
    }
}

/// The default `timeout`.
const TIMEOUT: Duration = Duration::from_secs(30);

impl Checker<'_> {
    /// `[[inbound.milter]]`: each table's values; a table with an error is left out (the
    /// error is reported with the others, so the config does not load).
    pub(super) fn milters(&mut self, raw: &[RawMilter]) -> Vec<Milter> {
        raw.iter().filter_map(|m| self.milter(m)).collect()
    }

    fn milter(&mut self, raw: &RawMilter) -> Option<Milter> {
        const KEY: &str = "inbound.milter";
        let Some(address) = &raw.address else {
            // No span of its own: the table's position is not kept, so the error points at
            // the start of the file like other missing keys.
            self.error(0..0, "inbound.milter.address", "is required".to_string());
            return None;
        };
        let address = match MilterAddress::parse(address.get_ref()) {
            Ok(a) => Some(a),
            Err(msg) => {
                self.error(address.span(), &format!("{KEY}.address"), msg);
                None
            }
        };
        let (mut smtp, mut submission) = (true, false);
        let mut listeners_ok = true;
        if let Some(list) = &raw.listeners {
            (smtp, submission) = (false, false);
            for name in list.get_ref() {
                match name.get_ref().as_str() {
                    "smtp" => smtp = true,
                    "submission" => submission = true,
                    other => {
                        let msg = format!("{other:?} is not one of smtp, submission");
                        self.error(name.span(), &format!("{KEY}.listeners"), msg);
                        listeners_ok = false;
                    }
                }
            }
        }
        let timeout = self.duration(&raw.timeout, &format!("{KEY}.timeout"), TIMEOUT);
        const CHOICES: [OnFailure; 2] = [OnFailure::Tempfail, OnFailure::Accept];
        let on_failure = match &raw.on_failure {
            None => Some(OnFailure::Tempfail),
            Some(s) => self.choice(s, &format!("{KEY}.on_failure"), &CHOICES, OnFailure::name),
        };
        Some(Milter {
            address: address?,
            smtp,
            submission,
            timeout,
            on_failure: on_failure?,
        })
        .filter(|_| listeners_ok)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::tests::{errors, parse};
    use super::*;

    #[test]
    fn milters_in_order_with_defaults() {
        let c = parse(
            "[[inbound.milter]]\naddress = \"inet:127.0.0.1:11332\"\n\
             [[inbound.milter]]\naddress = \"unix:/run/m.sock\"\nlisteners = [\"submission\"]\n\
             timeout = \"5s\"\non_failure = \"accept\"\n",
        )
        .unwrap();
        assert_eq!(
            c.inbound.milters,
            vec![
                Milter {
                    address: MilterAddress::Inet("127.0.0.1:11332".parse().unwrap()),
                    smtp: true,
                    submission: false,
                    timeout: TIMEOUT,
                    on_failure: OnFailure::Tempfail,
                },
                Milter {
                    address: MilterAddress::Unix("/run/m.sock".into()),
                    smtp: false,
                    submission: true,
                    timeout: Duration::from_secs(5),
                    on_failure: OnFailure::Accept,
                },
            ]
        );
        // One table without the double brackets is one milter.
        let one = parse("[inbound.milter]\naddress = \"inet:[::1]:1\"\n").unwrap();
        assert_eq!(one.inbound.milters.len(), 1);
        // Written out and read back, the same.
        let again = Config::from_toml("mta.toml", &c.to_toml(), "buildhost").unwrap();
        assert_eq!(again.inbound.milters, c.inbound.milters);
    }

    #[test]
    fn milter_errors() {
        for (text, want) in [
            ("timeout = \"5s\"", "inbound.milter.address: is required"),
            ("address = \"inet:localhost:1\"", "an IP address and a port"),
            ("address = \"unix:rel\"", "an absolute path"),
            ("address = \"tcp:1.2.3.4:5\"", "neither inet"),
            (
                "address = \"inet:127.0.0.1:1\"\nlisteners = [\"mx\"]",
                "\"mx\" is not one of smtp, submission",
            ),
            (
                "address = \"inet:127.0.0.1:1\"\ntimeout = \"0s\"",
                "is not a duration",
            ),
            (
                "address = \"inet:127.0.0.1:1\"\non_failure = \"drop\"",
                "\"drop\" is not one of tempfail, accept",
            ),
            ("address = \"inet:127.0.0.1:1\"\nport = 1", "unknown field"),
        ] {
            let e = errors(&format!("[[inbound.milter]]\n{text}\n"));
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
