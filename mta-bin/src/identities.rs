//! What `mta user show` prints about a user: the addresses it may send as (its login, the
//! aliases that reach it, its `[senders]` patterns), the same rule
//! `mta_core::policy::may_send_as` applies to `MAIL FROM` and `From:`. One function returns
//! the lines, so further facts about a user are added in one place.

use mta_core::Address;
use mta_core::config::Config;

/// The lines `mta user show` prints for `user`, a known user: `login ADDRESS`, then one
/// `alias ADDRESS` per alias whose expansion reaches the user, then one `sender PATTERN` per
/// `[senders]` entry.
pub fn lines(config: &Config, user: &Address) -> Vec<String> {
    let mut out = vec![format!("login {user}")];
    for alias in config.aliases.keys() {
        let reaches = config
            .expand_alias(alias)
            .is_some_and(|targets| targets.iter().any(|t| t.key() == user.key()));
        if reaches {
            out.push(format!("alias {alias}"));
        }
    }
    for pattern in config.senders.get(&user.key()).into_iter().flatten() {
        out.push(format!("sender {pattern}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_aliases_and_patterns() {
        let config = Config::from_toml(
            "mta.toml",
            "local_domains = [\"example.org\", \"host.example.org\"]\n\
             [aliases]\n\
             \"info@example.org\" = [\"app@example.org\", \"bob@example.org\"]\n\
             \"team@example.org\" = [\"info@example.org\"]\n\
             \"sales@example.org\" = [\"bob@example.org\"]\n\
             [senders]\n\
             \"app@example.org\" = [\"*@host.example.org\", \"alerts@example.org\"]\n",
            "buildhost",
        )
        .unwrap();
        let app = Address::parse("App@example.org").unwrap();
        assert_eq!(
            lines(&config, &app),
            [
                "login App@example.org",
                "alias info@example.org",
                "alias team@example.org",
                "sender *@host.example.org",
                "sender alerts@example.org",
            ]
        );
        let bob = Address::parse("bob@example.org").unwrap();
        assert_eq!(
            lines(&config, &bob),
            [
                "login bob@example.org",
                "alias info@example.org",
                "alias sales@example.org",
                "alias team@example.org",
            ]
        );
    }
}
