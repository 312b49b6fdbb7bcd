//! The top-level keys about the process itself: which user it serves as (`user`, `group`),
//! whether it may stay root (`allow_root`), and whether it sandboxes itself (`sandbox`).
//! `mta-bin` acts on them (`privileges.rs`, `sandbox.rs`); here they are only read and
//! checked.

use super::checker::Checker;
use super::file::{RawConfig, S};

/// How the serving process runs (`user`, `group`, `allow_root`, `sandbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Started as root, `mta serve` binds its ports and then switches to this user (a name
    /// from the system's user database). `None` (the default): it keeps the user it was
    /// started as, which must then not be root unless [`Process::allow_root`].
    pub user: Option<String>,
    /// The group to switch to with [`Process::user`]; `None`: that user's primary group.
    /// Supplementary groups are always dropped.
    pub group: Option<String>,
    /// Keep serving as root when no [`Process::user`] is set. Default false: refused.
    pub allow_root: bool,
    /// Restrict the process after start-up with Landlock and a seccomp allow-list (Linux).
    /// Default true; false only for debugging.
    pub sandbox: bool,
}

/// Longest user or group name accepted (what `useradd` allows).
const MAX_NAME: usize = 32;

impl Checker<'_> {
    pub(super) fn process(&mut self, raw: &RawConfig) -> Process {
        let user = self.account_name(&raw.user, "user");
        let group = self.account_name(&raw.group, "group");
        if let (Some(g), None) = (&raw.group, &raw.user) {
            let msg = "set without user: the group is only switched to together with a user";
            self.error(g.span(), "group", msg.to_string());
        }
        Process {
            user,
            group,
            allow_root: raw.allow_root.unwrap_or(false),
            sandbox: raw.sandbox.unwrap_or(true),
        }
    }

    /// A user or group name as the system's databases spell them: letters, digits, `_`,
    /// `-` and `.`, not starting with `-`, at most 32 characters.
    pub(super) fn account_name(&mut self, name: &Option<S<String>>, key: &str) -> Option<String> {
        let name = name.as_ref()?;
        let text = name.get_ref();
        let ok = !text.is_empty()
            && text.len() <= MAX_NAME
            && !text.starts_with('-')
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            let msg = format!(
                "{text:?} is not a user or group name (letters, digits, '_', '-', '.', \
                 at most {MAX_NAME} characters)"
            );
            self.error(name.span(), key, msg);
            return None;
        }
        Some(text.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors, parse};
    use super::*;

    #[test]
    fn defaults_keep_the_starting_user_and_sandbox() {
        let c = parse("").unwrap();
        let want = Process {
            user: None,
            group: None,
            allow_root: false,
            sandbox: true,
        };
        assert_eq!(c.process, want);
    }

    #[test]
    fn reads_every_key() {
        let c = parse("user = \"mta\"\ngroup = \"mail\"\nallow_root = true\nsandbox = false\n")
            .unwrap();
        let want = Process {
            user: Some("mta".into()),
            group: Some("mail".into()),
            allow_root: true,
            sandbox: false,
        };
        assert_eq!(c.process, want);
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn refuses_bad_names_and_a_lone_group() {
        assert_eq!(
            errors("user = \"m ta\"\ngroup = \"\"\n"),
            "mta.toml:1:8: user: \"m ta\" is not a user or group name (letters, digits, '_', \
             '-', '.', at most 32 characters)\n\
             mta.toml:2:9: group: \"\" is not a user or group name (letters, digits, '_', '-', \
             '.', at most 32 characters)"
        );
        assert_eq!(
            errors("group = \"mta\"\n"),
            "mta.toml:1:9: group: set without user: the group is only switched to together \
             with a user"
        );
        assert!(errors("user = \"-rf\"").contains("user: \"-rf\" is not a user"));
        assert!(errors(&format!("user = \"{}\"", "a".repeat(33))).contains("at most 32"));
    }
}
