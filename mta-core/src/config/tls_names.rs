//! `[tls."mail.example.net"]` tables: the certificate served to a client that asks for that
//! name (SNI). Each key of `[tls]` other than `cert` and `key` must be such a table, named by
//! a host name, with exactly `cert` and `key`: a mistyped key is never taken for a name.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::NamedCert;
use super::checker::Checker;
use super::file::S;
use crate::address::Domain;

impl Checker<'_> {
    /// The `[tls."name"]` tables, by lower-case name.
    pub(super) fn tls_names(
        &mut self,
        names: &[(S<String>, S<toml::Value>)],
    ) -> BTreeMap<String, NamedCert> {
        let mut out = BTreeMap::new();
        let mut spelled: BTreeMap<String, &str> = BTreeMap::new();
        let mut sorted: Vec<_> = names.iter().collect();
        sorted.sort_by_key(|(name, _)| name.span().start);
        for (name, value) in sorted {
            let key = format!("tls.{:?}", name.get_ref());
            let Some(table) = value.get_ref().as_table() else {
                let msg = "is not a key of [tls] (cert, key); a certificate for a name is a \
                           table: [tls.\"mail.example.net\"] with cert and key"
                    .to_string();
                self.error(name.span(), &key, msg);
                continue;
            };
            let host = match Domain::parse(name.get_ref()) {
                Ok(d) if !d.is_literal() => Some(d.as_str().to_ascii_lowercase()),
                _ => {
                    let msg = format!(
                        "{:?} is not a host name (no wildcards, no addresses)",
                        name.get_ref()
                    );
                    self.error(name.span(), &key, msg);
                    None
                }
            };
            let files = self.named_files(table, &key, value.span());
            let (Some(host), Some((cert, key_file))) = (host, files) else {
                continue;
            };
            if let Some(first) = spelled.get(&host) {
                let msg = format!("the same name as {first:?} (case does not matter)");
                self.error(name.span(), &key, msg);
                continue;
            }
            spelled.insert(host.clone(), name.get_ref());
            out.insert(
                host,
                NamedCert {
                    cert,
                    key: key_file,
                },
            );
        }
        out
    }

    /// `cert` and `key` of one `[tls."name"]` table, both non-empty strings, and nothing else.
    fn named_files(
        &mut self,
        table: &toml::Table,
        key: &str,
        span: std::ops::Range<usize>,
    ) -> Option<(PathBuf, PathBuf)> {
        let mut ok = true;
        for other in table.keys().filter(|k| *k != "cert" && *k != "key") {
            let msg = format!("unknown key {other:?} (only cert and key)");
            self.error(span.clone(), key, msg);
            ok = false;
        }
        let mut file = |field: &str| match table.get(field).map(toml::Value::as_str) {
            Some(Some(text)) if !text.is_empty() => Some(PathBuf::from(text)),
            Some(Some(_)) => {
                self.error(
                    span.clone(),
                    &format!("{key}.{field}"),
                    "must not be empty".into(),
                );
                None
            }
            Some(None) => {
                let msg = "must be a string (a file name)".to_string();
                self.error(span.clone(), &format!("{key}.{field}"), msg);
                None
            }
            None => {
                let msg = "must be set: a certificate for a name needs cert and key".to_string();
                self.error(span.clone(), &format!("{key}.{field}"), msg);
                None
            }
        };
        let cert = file("cert");
        let private = file("key");
        match (cert, private, ok) {
            (Some(c), Some(k), true) => Some((c, k)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors, parse};
    use std::path::PathBuf;

    #[test]
    fn names_beside_the_default() {
        let text = "[tls]\ncert = \"/d.pem\"\nkey = \"/d.key\"\n\
                    [tls.\"Mail.Example.NET\"]\ncert = \"/m.pem\"\nkey = \"/m.key\"\n";
        let c = parse(text).unwrap();
        assert_eq!(c.tls.cert, Some(PathBuf::from("/d.pem")));
        let named = &c.tls.names["mail.example.net"];
        assert_eq!(named.cert, PathBuf::from("/m.pem"));
        assert_eq!(named.key, PathBuf::from("/m.key"));
        // The effective config reads back the same.
        let again = parse(&c.to_toml()).unwrap();
        assert_eq!(again.tls, c.tls);
    }

    #[test]
    fn a_name_is_never_taken_for_a_key() {
        let cases = [
            (
                "[tls]\ncerts = \"/c.pem\"\n",
                "mta.toml:2:1: tls.\"certs\": is not a key of [tls] (cert, key); a certificate \
                 for a name is a table: [tls.\"mail.example.net\"] with cert and key",
            ),
            (
                "[tls.\"*.example.net\"]\ncert = \"/c\"\nkey = \"/k\"\n",
                "mta.toml:1:6: tls.\"*.example.net\": \"*.example.net\" is not a host name (no \
                 wildcards, no addresses)",
            ),
            (
                "[tls.\"mail.example.net\"]\ncert = \"/c\"\n",
                "mta.toml:1:1: tls.\"mail.example.net\".key: must be set: a certificate for a \
                 name needs cert and key",
            ),
            (
                "[tls.\"mail.example.net\"]\ncert = \"/c\"\nkey = \"/k\"\nmode = 1\n",
                "mta.toml:1:1: tls.\"mail.example.net\": unknown key \"mode\" (only cert and key)",
            ),
            (
                "[tls.\"a.example\"]\ncert = \"/c\"\nkey = \"/k\"\n\
                 [tls.\"A.example\"]\ncert = \"/c\"\nkey = \"/k\"\n",
                "mta.toml:4:6: tls.\"A.example\": the same name as \"a.example\" (case does not \
                 matter)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(errors(text), want, "{text}");
        }
    }
}
