//! `[senders]` from the file: which further addresses a login may send as
//! ([`crate::senders::SenderPattern`]), each checked for its shape and its domain.
//!
//! A pattern must name one of `local_domains`: a login given `*@gmail.com`, or one address
//! there, would have `mta` sign and send mail in the name of a domain it does not run, which
//! that domain's SPF and DMARC would (rightly) refuse. `*@*` is not a pattern at all.

use std::collections::BTreeMap;

use super::checker::Checker;
use super::file::List;
use crate::address::{Address, Domain};
use crate::senders::SenderPattern;

impl Checker<'_> {
    /// The logins and their patterns; each bad entry is reported with its key.
    pub(super) fn senders(
        &mut self,
        raw: Option<&BTreeMap<super::file::S<String>, List>>,
        local: &[Domain],
    ) -> BTreeMap<String, Vec<SenderPattern>> {
        let mut out = BTreeMap::new();
        for (login, patterns) in raw.into_iter().flatten() {
            let key = format!("senders.{:?}", login.get_ref());
            let login_address = match Address::parse(login.get_ref()) {
                Ok(a) => a,
                Err(e) => {
                    let msg = format!("{:?} is not a login (a mail address): {e}", login.get_ref());
                    self.error(login.span(), &key, msg);
                    continue;
                }
            };
            if patterns.get_ref().is_empty() {
                let msg = "must list at least one sender (\"*@example.org\" or an address)";
                self.error(patterns.span(), &key, msg.to_string());
            }
            let mut list = Vec::new();
            for text in patterns.get_ref() {
                match SenderPattern::parse(text.get_ref()) {
                    Ok(p) if !local.contains(p.domain()) => {
                        let msg = format!(
                            "{}: {} is not one of local_domains (a login may only send as \
                             addresses of domains this server runs)",
                            p,
                            p.domain()
                        );
                        self.error(text.span(), &key, msg);
                    }
                    Ok(p) => list.push(p),
                    Err(msg) => self.error(text.span(), &key, msg),
                }
            }
            if out.insert(login_address.key(), list).is_some() {
                let msg = "the same login twice (case does not matter)".to_string();
                self.error(login.span(), &key, msg);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors, parse};
    use crate::address::Address;

    #[test]
    fn senders_table() {
        let c = parse(
            "local_domains = [\"example.org\", \"host.example.org\"]\n\
             [senders]\n\
             \"App@Example.org\" = [\"*@host.example.org\", \"alerts@example.org\"]\n",
        )
        .unwrap();
        let got: Vec<String> = c.senders["app@example.org"]
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(got, ["*@host.example.org", "alerts@example.org"]);
        let app = Address::parse("app@example.org").unwrap();
        assert!(c.senders.contains_key(&app.key()));
        // And back: the effective config lists it.
        assert!(
            c.to_toml()
                .contains("[senders]\n\"app@example.org\" = [\"*@host.example.org\", \"alerts@example.org\"]\n"),
            "{}",
            c.to_toml()
        );
    }

    #[test]
    fn bad_senders() {
        assert_eq!(
            errors(
                "local_domains = [\"example.org\"]\n\
                 [senders]\n\
                 \"app@example.org\" = [\"*@*\", \"*@gmail.com\", \"a*@example.org\"]\n\
                 \"nobody\" = [\"*@example.org\"]\n\
                 \"b@example.org\" = []\n"
            ),
            "mta.toml:3:22: senders.\"app@example.org\": \"*@*\": \"*@\" must be followed by one \
             domain name (no wildcard in the domain: \"*@example.org\")\n\
             mta.toml:3:29: senders.\"app@example.org\": *@gmail.com: gmail.com is not one of \
             local_domains (a login may only send as addresses of domains this server runs)\n\
             mta.toml:3:44: senders.\"app@example.org\": \"a*@example.org\": the only wildcard \
             is a whole local part, \"*@example.org\"\n\
             mta.toml:4:1: senders.\"nobody\": \"nobody\" is not a login (a mail address): \
             invalid local part\n\
             mta.toml:5:19: senders.\"b@example.org\": must list at least one sender \
             (\"*@example.org\" or an address)"
        );
    }
}
