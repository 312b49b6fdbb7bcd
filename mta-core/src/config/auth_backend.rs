//! `[auth]`: where the passwords of AUTH on submission are checked: our users file (the
//! default) or Dovecot's auth service over its client socket. Only the values are checked
//! here; the Dovecot client is in `mta-smtp`.

use std::path::PathBuf;

use super::checker::Checker;
use super::file::RawAuth;

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Where passwords are checked.
    pub backend: AuthBackend,
}

/// `auth.backend`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuthBackend {
    /// The users file `mta user add` writes (argon2 hashes). The default.
    #[default]
    File,
    /// Dovecot's auth service, asked over its client socket (`auth.socket`).
    Dovecot {
        /// The absolute path of the `auth-client` socket, e.g. `/run/dovecot/auth-client`.
        socket: PathBuf,
    },
}

impl Checker<'_> {
    /// `[auth]`: `backend = "file"` or `"dovecot"` with `socket`, which only `dovecot` takes.
    pub(super) fn auth(&mut self, raw: &RawAuth) -> Auth {
        let backend = raw
            .backend
            .as_ref()
            .map_or("file", |b| b.get_ref().as_str());
        let socket = raw.socket.as_ref();
        let backend = match backend {
            "file" => {
                if let Some(s) = socket {
                    let msg = "only with backend = \"dovecot\"".to_string();
                    self.error(s.span(), "auth.socket", msg);
                }
                AuthBackend::File
            }
            "dovecot" => match socket {
                Some(s) if s.get_ref().starts_with('/') => AuthBackend::Dovecot {
                    socket: PathBuf::from(s.get_ref()),
                },
                Some(s) => {
                    let msg = format!("{:?} is not an absolute path", s.get_ref());
                    self.error(s.span(), "auth.socket", msg);
                    AuthBackend::File
                }
                None => {
                    let span = raw.backend.as_ref().map_or(0..0, |b| b.span());
                    let msg = "is required with backend = \"dovecot\"".to_string();
                    self.error(span, "auth.socket", msg);
                    AuthBackend::File
                }
            },
            other => {
                let span = raw.backend.as_ref().map_or(0..0, |b| b.span());
                let msg = format!("{other:?} is not one of file, dovecot");
                self.error(span, "auth.backend", msg);
                AuthBackend::File
            }
        };
        Auth { backend }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::tests::{errors, parse};
    use super::*;

    #[test]
    fn backends() {
        assert_eq!(parse("").unwrap().auth.backend, AuthBackend::File);
        let c = parse("[auth]\nbackend = \"dovecot\"\nsocket = \"/run/dovecot/auth-client\"\n")
            .unwrap();
        assert_eq!(
            c.auth.backend,
            AuthBackend::Dovecot {
                socket: "/run/dovecot/auth-client".into()
            }
        );
        let again = Config::from_toml("mta.toml", &c.to_toml(), "buildhost").unwrap();
        assert_eq!(again.auth, c.auth);
        for (text, want) in [
            ("backend = \"dovecot\"", "auth.socket: is required"),
            (
                "backend = \"dovecot\"\nsocket = \"run/x\"",
                "not an absolute path",
            ),
            ("socket = \"/run/x\"", "only with backend = \"dovecot\""),
            ("backend = \"ldap\"", "\"ldap\" is not one of file, dovecot"),
            ("timeout = \"5s\"", "unknown field"),
        ] {
            let e = errors(&format!("[auth]\n{text}\n"));
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
