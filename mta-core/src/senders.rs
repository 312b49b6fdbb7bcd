//! Sending identities beyond a user's own address and the aliases that reach it (`[senders]`
//! in the config, Postfix's `smtpd_sender_login_maps`): a pattern `*@example.org` lets a
//! machine account send as any address of that one domain, and an address pattern lets it
//! send as that address.
//!
//! Matching is exact on the domain, compared in routable form (lower-case A-labels, so
//! `Example.ORG` and an internationalised name in U-labels match their canonical form): there
//! is no suffix rule, so `*@example.org` never matches `host.example.org`,
//! `example.org.evil.test` or `evilexample.org`. An address pattern matches that address in
//! any letter case, and with no `+tag` (a tag names a different sender). Only a whole local
//! part may be a wildcard: `*@*`, `a*@example.org` and `*.example.org` are not patterns.

use std::fmt;

use crate::address::{Address, Domain};

/// One entry of a `[senders]` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderPattern {
    /// `*@domain`: any address of exactly this domain.
    Domain(Domain),
    /// `local@domain`: this address (letter case aside).
    Address(Address),
}

impl SenderPattern {
    /// Parses `*@domain` or an address.
    ///
    /// # Errors
    /// Why `text` is not a pattern.
    pub fn parse(text: &str) -> Result<SenderPattern, String> {
        if let Some(domain) = text.strip_prefix("*@") {
            return match Domain::parse(domain) {
                Ok(d) if d.is_literal() => Err(format!(
                    "{text:?}: an address literal is not a domain anyone sends as"
                )),
                Ok(d) => Ok(SenderPattern::Domain(d)),
                Err(_) => Err(format!(
                    "{text:?}: \"*@\" must be followed by one domain name (no wildcard in \
                     the domain: \"*@example.org\")"
                )),
            };
        }
        if text.contains('*') {
            return Err(format!(
                "{text:?}: the only wildcard is a whole local part, \"*@example.org\""
            ));
        }
        match Address::parse(text) {
            Ok(a) if a.domain().is_literal() => Err(format!(
                "{text:?}: an address literal is not a domain anyone sends as"
            )),
            Ok(a) => Ok(SenderPattern::Address(a)),
            Err(e) => Err(format!("{text:?} is not a mail address: {e}")),
        }
    }

    /// The domain the pattern speaks for.
    pub fn domain(&self) -> &Domain {
        match self {
            SenderPattern::Domain(d) => d,
            SenderPattern::Address(a) => a.domain(),
        }
    }

    /// Whether `from` is an address this pattern allows.
    pub fn matches(&self, from: &Address) -> bool {
        match self {
            SenderPattern::Domain(d) => from.domain() == d,
            SenderPattern::Address(a) => from.key() == a.key(),
        }
    }
}

impl fmt::Display for SenderPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SenderPattern::Domain(d) => write!(f, "*@{d}"),
            SenderPattern::Address(a) => write!(f, "{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pattern(text: &str) -> SenderPattern {
        SenderPattern::parse(text).unwrap()
    }

    fn addr(text: &str) -> Address {
        Address::parse(text).unwrap()
    }

    #[test]
    fn patterns_and_what_they_match() {
        let p = pattern("*@Example.ORG");
        assert_eq!(p.to_string(), "*@example.org");
        for yes in ["root@example.org", "ROOT@EXAMPLE.org", "a+tag@example.org"] {
            assert!(p.matches(&addr(yes)), "{yes}");
        }
        for no in [
            "root@host.example.org",
            "root@example.org.evil.test",
            "root@evilexample.org",
            "root@example.com",
        ] {
            assert!(!p.matches(&addr(no)), "{no}");
        }
        let p = pattern("Alerts@other.example");
        assert!(p.matches(&addr("alerts@OTHER.example")));
        assert!(p.matches(&addr("ALERTS@other.example")));
        assert!(!p.matches(&addr("alerts+x@other.example")));
        assert!(!p.matches(&addr("alerts@sub.other.example")));
        // An internationalised domain in either form is the same domain.
        let p = pattern("*@bücher.example");
        assert!(p.matches(&addr("info@xn--bcher-kva.example")));
        assert!(p.matches(&addr("info@BÜCHER.example")));
    }

    #[test]
    fn what_is_not_a_pattern() {
        for bad in [
            "*@*",
            "*@",
            "*",
            "a*@example.org",
            "*.example.org",
            "*@*.example.org",
            "*@[127.0.0.1]",
            "root@[127.0.0.1]",
            "example.org",
            "@example.org",
        ] {
            assert!(SenderPattern::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    /// The obvious model: the text after the last `@`, lower-cased, equal to the domain
    /// (for `*@`), or the whole address lower-cased equal to the pattern (ASCII only, where
    /// the model is obviously right).
    fn model(pattern: &str, from: &str) -> bool {
        let lower = |s: &str| s.to_ascii_lowercase();
        match pattern.strip_prefix("*@") {
            Some(domain) => lower(from.rsplit_once('@').unwrap().1) == lower(domain),
            None => lower(from) == lower(pattern),
        }
    }

    fn label() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("example".to_string()),
            Just("Example".to_string()),
            Just("org".to_string()),
            Just("evil".to_string()),
            Just("evilexample".to_string()),
            Just("host".to_string()),
            "[a-cA-C]{1,3}",
        ]
    }

    fn domain() -> impl Strategy<Value = String> {
        prop::collection::vec(label(), 1..4).prop_map(|l| l.join("."))
    }

    fn local() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("root".to_string()),
            Just("Root".to_string()),
            Just("root+tag".to_string()),
            "[a-bA-B]{1,3}",
        ]
    }

    proptest! {
        #[test]
        fn matches_the_model(
            wildcard in any::<bool>(),
            p_local in local(),
            p_domain in domain(),
            f_local in local(),
            f_domain in domain(),
        ) {
            let text = match wildcard {
                true => format!("*@{p_domain}"),
                false => format!("{p_local}@{p_domain}"),
            };
            let from_text = format!("{f_local}@{f_domain}");
            let p = SenderPattern::parse(&text).unwrap();
            let from = addr(&from_text);
            prop_assert_eq!(p.matches(&from), model(&text, &from_text), "{} {}", text, from_text);
        }

        /// A wildcard pattern never matches an address of any other domain, in particular
        /// one that ends or begins with it.
        #[test]
        fn never_another_domain(d in domain(), extra in label(), f_local in local()) {
            let p = SenderPattern::parse(&format!("*@{d}")).unwrap();
            for other in [format!("{extra}.{d}"), format!("{d}.{extra}"), format!("{extra}{d}")] {
                let from = addr(&format!("{f_local}@{other}"));
                prop_assert!(!p.matches(&from), "*@{} matched {}", d, other);
            }
        }
    }
}
