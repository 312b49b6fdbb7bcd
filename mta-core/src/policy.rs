//! Relay, recipient and sender decisions as pure functions of the config, the user
//! database and what the client said. The session asks; this module answers with the reply.
//!
//! The one rule that matters most: without AUTH (port 25), only recipients in our local
//! domains are accepted — never an open relay. The domain checked is the routable form
//! ([`Domain`]), the same one delivery uses.
//!
//! A local recipient is looked up in this order, the first match deciding: an alias, a
//! user, `postmaster` (RFC 5321 §4.5.1); then, for `user+tag@` (plus-addressing), the same
//! three for `user@`; then the domain's catch-all; else `550 5.1.1`. A tag is only ever
//! stripped from a local address that is already decided to be ours, so it opens no relay
//! and no way past the unknown-user refusal. [`mailbox`] gives delivery the same answer.

use crate::address::{Address, Domain, ForwardPath, ReversePath};
use crate::auth::UserDb;
use crate::config::Config;
use crate::reply::Reply;

/// What to do with one RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptDecision {
    /// Accept; the message goes to these addresses (aliases expanded, order kept).
    Accept(Vec<Address>),
    /// Refuse with this reply.
    Reject(Reply),
}

/// Whether the client is allowed to relay to domains that are not ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayPermission {
    /// Port 25 without AUTH: local domains only.
    Denied,
    /// An authenticated submission session: any domain.
    Allowed,
}

/// Decides one recipient (RFC 5321 §4.5.1: postmaster is always accepted).
pub fn rcpt(
    config: &Config,
    users: &UserDb,
    relay: RelayPermission,
    to: &ForwardPath,
) -> RcptDecision {
    let address = match to {
        ForwardPath::Postmaster => {
            // The bare <Postmaster> is ours: at the hostname when that is a local domain,
            // else at the first local domain, so it is never routed away from us.
            let domain = if config.is_local_domain(&config.hostname) {
                &config.hostname
            } else {
                config.local_domains.first().unwrap_or(&config.hostname)
            };
            return RcptDecision::Accept(postmaster(config, domain));
        }
        ForwardPath::Address(a) => a,
    };
    let domain = address.domain();
    if !config.is_local_domain(domain) {
        return match relay {
            RelayPermission::Allowed => RcptDecision::Accept(vec![address.clone()]),
            RelayPermission::Denied => RcptDecision::Reject(Reply::RELAY_DENIED),
        };
    }
    if let Some(targets) = local_rcpt(config, users, address) {
        return RcptDecision::Accept(targets);
    }
    // `bob+tag@`: accepted when `bob@` is, and a user's copy keeps the tag (its mailbox is
    // bob's, see `mailbox`; `Delivered-To:` shows the full address).
    if let Some(base) = config.untagged(address)
        && let Some(targets) = local_rcpt(config, users, &base)
    {
        let targets = match targets.as_slice() {
            [only] if only == &base && users.contains(&base) => vec![address.clone()],
            _ => targets,
        };
        return RcptDecision::Accept(targets);
    }
    if let Some(targets) = config.expand_catch_all(domain) {
        return RcptDecision::Accept(targets);
    }
    RcptDecision::Reject(Reply::NO_SUCH_USER)
}

/// Where mail for `address` (in a local domain) goes when it is an alias, a user or
/// postmaster; `None` when it is none of them.
fn local_rcpt(config: &Config, users: &UserDb, address: &Address) -> Option<Vec<Address>> {
    if let Some(targets) = config.expand_alias(address) {
        return Some(targets);
    }
    // The DMARC report address needs no user: its mail is parsed at delivery and kept in
    // its own Maildir.
    if users.contains(address) || config.dmarc_reports.is_address(address) {
        return Some(vec![address.clone()]);
    }
    if address.local_part().eq_ignore_ascii_case("postmaster") {
        return Some(postmaster(config, address.domain()));
    }
    None
}

/// The mailbox that local delivery writes to for `rcpt`, an address [`rcpt`] accepted (or an
/// alias target): the user `rcpt` itself when there is one, else `rcpt` without its tag
/// (`bob+tag@` → `bob@`), else `rcpt`. The recipient, tag and all, stays in `Delivered-To:`.
pub fn mailbox(config: &Config, users: &UserDb, rcpt: &Address) -> Address {
    if users.contains(rcpt) {
        return rcpt.clone();
    }
    config.untagged(rcpt).unwrap_or_else(|| rcpt.clone())
}

/// `postmaster@domain`, through its alias when one is configured.
fn postmaster(config: &Config, domain: &Domain) -> Vec<Address> {
    let address = Address::from_parts("postmaster", domain)
        .expect("postmaster@<a parsed domain> is a valid address");
    config
        .expand_alias(&address)
        .unwrap_or_else(|| vec![address])
}

/// Whether an authenticated `user` may use `from` as MAIL FROM or in `From:` (one rule for
/// both): their own address, an alias that expands to them, or an address one of their
/// `[senders]` patterns allows ([`crate::senders`]). The null sender is not theirs to use.
pub fn may_send_as(config: &Config, user: &Address, from: &ReversePath) -> bool {
    let Some(from) = from.address() else {
        return false;
    };
    if from.key() == user.key() {
        return true;
    }
    if config
        .senders
        .get(&user.key())
        .is_some_and(|patterns| patterns.iter().any(|p| p.matches(from)))
    {
        return true;
    }
    config
        .expand_alias(from)
        .is_some_and(|targets| targets.iter().any(|t| t.key() == user.key()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{parse_forward_path, parse_reverse_path};

    fn setup() -> (Config, UserDb) {
        let config = Config::from_toml(
            "test.toml",
            r#"
hostname = "mx.example.org"
local_domains = ["example.org", "mx.example.org"]
[aliases]
"info@example.org" = ["alice@example.org", "bob@example.org"]
"postmaster@example.org" = ["alice@example.org"]
"#,
            "ignored",
        )
        .unwrap();
        let mut users = UserDb::default();
        users
            .add(
                Address::parse("alice@example.org").unwrap(),
                "correct horse",
            )
            .unwrap();
        (config, users)
    }

    fn addrs(list: &[&str]) -> Vec<Address> {
        list.iter().map(|a| Address::parse(a).unwrap()).collect()
    }

    #[test]
    fn recipients() {
        let (config, users) = setup();
        use RcptDecision::{Accept, Reject};
        let table: &[(&str, RelayPermission, RcptDecision)] = &[
            (
                "<alice@example.org>",
                RelayPermission::Denied,
                Accept(addrs(&["alice@example.org"])),
            ),
            (
                "<ALICE@EXAMPLE.ORG>",
                RelayPermission::Denied,
                Accept(addrs(&["ALICE@example.org"])),
            ),
            (
                "<info@example.org>",
                RelayPermission::Denied,
                Accept(addrs(&["alice@example.org", "bob@example.org"])),
            ),
            (
                "<Postmaster>",
                RelayPermission::Denied,
                Accept(addrs(&["postmaster@mx.example.org"])),
            ),
            (
                "<postmaster@example.org>",
                RelayPermission::Denied,
                Accept(addrs(&["alice@example.org"])),
            ),
            (
                "<PostMaster@mx.example.org>",
                RelayPermission::Denied,
                Accept(addrs(&["postmaster@mx.example.org"])),
            ),
            (
                "<nobody@example.org>",
                RelayPermission::Denied,
                Reject(Reply::NO_SUCH_USER),
            ),
            (
                "<nobody@example.org>",
                RelayPermission::Allowed,
                Reject(Reply::NO_SUCH_USER),
            ),
            (
                "<x@remote.test>",
                RelayPermission::Denied,
                Reject(Reply::RELAY_DENIED),
            ),
            (
                "<x@remote.test>",
                RelayPermission::Allowed,
                Accept(addrs(&["x@remote.test"])),
            ),
            // Classic open-relay tricks: each is a local mailbox that does not exist, or a
            // remote domain; none may relay.
            (
                "<x%remote.test@example.org>",
                RelayPermission::Denied,
                Reject(Reply::NO_SUCH_USER),
            ),
            (
                "<\"x@remote.test\"@example.org>",
                RelayPermission::Denied,
                Reject(Reply::NO_SUCH_USER),
            ),
            (
                "<remote.test!x@example.org>",
                RelayPermission::Denied,
                Reject(Reply::NO_SUCH_USER),
            ),
            (
                "<@example.org:x@remote.test>",
                RelayPermission::Denied,
                Reject(Reply::RELAY_DENIED),
            ),
            (
                "<x@[127.0.0.1]>",
                RelayPermission::Denied,
                Reject(Reply::RELAY_DENIED),
            ),
            (
                "<x@sub.example.org>",
                RelayPermission::Denied,
                Reject(Reply::RELAY_DENIED),
            ),
        ];
        for (path, relay, want) in table {
            let to = parse_forward_path(path).unwrap();
            assert_eq!(
                &rcpt(&config, &users, *relay, &to),
                want,
                "{path} {relay:?}"
            );
        }
    }

    /// Plus-addressing and the catch-all: users and aliases win, a tag reaches only what its
    /// untagged form reaches, and neither opens relaying.
    #[test]
    fn tags_and_catch_all() {
        let config = Config::from_toml(
            "test.toml",
            r#"
hostname = "mx.example.org"
local_domains = ["example.org", "other.example"]
[aliases]
"info@example.org" = ["alice@example.org", "bob@example.org"]
"alice+lists@example.org" = ["carol@example.org"]
"@other.example" = ["alice@example.org"]
"#,
            "ignored",
        )
        .unwrap();
        let mut users = UserDb::default();
        for user in ["alice@example.org", "a+b@example.org", "x@other.example"] {
            users
                .add(Address::parse(user).unwrap(), "correct horse")
                .unwrap();
        }
        use RcptDecision::{Accept, Reject};
        let table: &[(&str, RelayPermission, RcptDecision)] = &[
            (
                "<alice+tag@example.org>",
                RelayPermission::Denied,
                Accept(addrs(&["alice+tag@example.org"])),
            ),
            (
                "<ALICE+Tag@example.org>",
                RelayPermission::Denied,
                Accept(addrs(&["ALICE+Tag@example.org"])),
            ),
            // An explicit alias beats the tag, and an existing user with the delimiter in
            // its name is itself.
            (
                "<alice+lists@example.org>",
                RelayPermission::Denied,
                Accept(addrs(&["carol@example.org"])),
            ),
            (
                "<a+b@example.org>",
                RelayPermission::Denied,
                Accept(addrs(&["a+b@example.org"])),
            ),
            (
                "<info+x@example.org>",
                RelayPermission::Denied,
                Accept(addrs(&["alice@example.org", "bob@example.org"])),
            ),
            (
                "<postmaster+x@example.org>",
                RelayPermission::Denied,
                Accept(addrs(&["postmaster@example.org"])),
            ),
            // No way past the unknown-user refusal, and none to relay.
            (
                "<nobody+x@example.org>",
                RelayPermission::Denied,
                Reject(Reply::NO_SUCH_USER),
            ),
            (
                "<nobody+alice@example.org>",
                RelayPermission::Allowed,
                Reject(Reply::NO_SUCH_USER),
            ),
            (
                "<+alice@example.org>",
                RelayPermission::Denied,
                Reject(Reply::NO_SUCH_USER),
            ),
            (
                "<alice+x@remote.test>",
                RelayPermission::Denied,
                Reject(Reply::RELAY_DENIED),
            ),
            (
                "<alice+x%remote.test@example.org>",
                RelayPermission::Denied,
                Accept(addrs(&["alice+x%remote.test@example.org"])),
            ),
            // The catch-all takes unknown local parts of its domain only; users and
            // postmaster keep theirs.
            (
                "<anything@other.example>",
                RelayPermission::Denied,
                Accept(addrs(&["alice@example.org"])),
            ),
            (
                "<x@other.example>",
                RelayPermission::Denied,
                Accept(addrs(&["x@other.example"])),
            ),
            (
                "<x+tag@other.example>",
                RelayPermission::Denied,
                Accept(addrs(&["x+tag@other.example"])),
            ),
            (
                "<postmaster@other.example>",
                RelayPermission::Denied,
                Accept(addrs(&["postmaster@other.example"])),
            ),
        ];
        for (path, relay, want) in table {
            let to = parse_forward_path(path).unwrap();
            assert_eq!(
                &rcpt(&config, &users, *relay, &to),
                want,
                "{path} {relay:?}"
            );
        }
        // Delivery's mailbox for what was accepted.
        for (rcpt, want) in [
            ("alice+tag@example.org", "alice@example.org"),
            ("a+b@example.org", "a+b@example.org"),
            ("alice@example.org", "alice@example.org"),
            ("postmaster@other.example", "postmaster@other.example"),
            ("alice+x%remote.test@example.org", "alice@example.org"),
        ] {
            let got = mailbox(&config, &users, &Address::parse(rcpt).unwrap());
            assert_eq!(got, Address::parse(want).unwrap(), "{rcpt}");
        }
        // With plus-addressing off, a tag is just an unknown user.
        let off = Config::from_toml(
            "t.toml",
            "local_domains = [\"example.org\"]\n[local]\nrecipient_delimiter = \"\"\n",
            "x",
        )
        .unwrap();
        let to = parse_forward_path("<alice+tag@example.org>").unwrap();
        assert_eq!(
            rcpt(&off, &users, RelayPermission::Denied, &to),
            Reject(Reply::NO_SUCH_USER)
        );
        // A catch-all is not a way to send as anyone in its domain.
        let alice = Address::parse("alice@example.org").unwrap();
        let from = parse_reverse_path("<anything@other.example>").unwrap();
        assert!(!may_send_as(&config, &alice, &from));
    }

    /// A local domain is ours in every spelling that routes to it (upper case, U-label,
    /// A-label), and only in those.
    #[test]
    fn idna_and_case_forms_of_a_local_domain() {
        let config = Config::from_toml(
            "t.toml",
            "hostname = \"mx.bücher.example\"\nlocal_domains = [\"bücher.example\"]\n",
            "x",
        )
        .unwrap();
        let mut users = UserDb::default();
        users
            .add(Address::parse("u@bücher.example").unwrap(), "correct horse")
            .unwrap();
        for (path, accepted) in [
            ("<u@bücher.example>", true),
            ("<u@xn--bcher-kva.example>", true),
            ("<U@XN--BCHER-KVA.EXAMPLE>", true),
            ("<u@BÜCHER.example>", true),
            ("<u@bucher.example>", false),
            ("<u@xn--bcher-kva.example.evil.test>", false),
        ] {
            let to = parse_forward_path(path).unwrap();
            let got = matches!(
                rcpt(&config, &users, RelayPermission::Denied, &to),
                RcptDecision::Accept(_)
            );
            assert_eq!(got, accepted, "{path}");
        }
    }

    #[test]
    fn sending_identities_from_the_senders_table() {
        let config = Config::from_toml(
            "test.toml",
            r#"
hostname = "mx.example.org"
local_domains = ["example.org", "host.example.org", "other.example"]
[senders]
"app@example.org" = ["*@host.example.org", "Alerts@other.example"]
"#,
            "ignored",
        )
        .unwrap();
        let app = Address::parse("App@example.org").unwrap();
        let bob = Address::parse("bob@example.org").unwrap();
        let table = [
            ("<root@host.example.org>", true, false),
            ("<ROOT@Host.Example.org>", true, false),
            ("<www-data+x@host.example.org>", true, false),
            ("<alerts@other.example>", true, false),
            ("<alerts+x@other.example>", false, false),
            ("<root@example.org>", false, false),
            ("<root@sub.host.example.org>", false, false),
            ("<root@host.example.org.evil.test>", false, false),
            ("<root@evilhost.example.org>", false, false),
            ("<app@example.org>", true, false),
            ("<bob@example.org>", false, true),
            ("<>", false, false),
        ];
        for (from, for_app, for_bob) in table {
            let from = parse_reverse_path(from).unwrap();
            assert_eq!(may_send_as(&config, &app, &from), for_app, "app: {from}");
            assert_eq!(may_send_as(&config, &bob, &from), for_bob, "bob: {from}");
        }
    }

    #[test]
    fn senders() {
        let (config, _) = setup();
        let alice = Address::parse("alice@example.org").unwrap();
        let table = [
            ("<alice@example.org>", true),
            ("<Alice@Example.org>", true),
            ("<info@example.org>", true),
            ("<postmaster@example.org>", true),
            ("<bob@example.org>", false),
            ("<alice@remote.test>", false),
            ("<>", false),
        ];
        for (from, want) in table {
            let from = parse_reverse_path(from).unwrap();
            assert_eq!(may_send_as(&config, &alice, &from), want, "{from}");
        }
    }
}
