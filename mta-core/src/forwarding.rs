//! What forwarded mail gets: the envelope sender a copy relayed off-site by an alias or
//! catch-all leaves with ([`relay_sender`], for the router), and the answer to `RCPT` for an
//! SRS address of ours ([`rcpt_decision`], for the session). The addresses themselves are
//! [`crate::srs`]'s.

use crate::address::{Address, ForwardPath, ReversePath};
use crate::config::Config;
use crate::envelope::Envelope;
use crate::policy::RcptDecision;
use crate::reply::Reply;
use crate::srs::{ForwardError, Invalid, Reverse, forward, looks_srs, reverse};

/// The envelope sender of a copy relayed to another domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelaySender {
    /// As it came: `<>`, one of our own domains, an authenticated user's submission, a
    /// message we wrote, or SRS off.
    Keep,
    /// Mail from another server that an alias forwards off-site: this SRS address instead.
    Rewrite(Address),
    /// Would be rewritten, but cannot be; it leaves as it came.
    Unrewritable(ForwardError),
}

/// Whether a copy of the message of `envelope` relayed to another domain leaves with its own
/// sender or an SRS address made on `today`. Only mail from another server reaches a remote
/// recipient on the smtp listener, and only through an alias or catch-all (or a bounce that
/// [`rcpt_decision`] passes back, which is from `<>`): so this is exactly forwarded mail.
pub fn relay_sender(config: &Config, envelope: &Envelope, today: u64) -> RelaySender {
    let (true, Some(keys), Some(sender)) = (
        config.srs.enabled,
        config.srs.keys.as_ref(),
        envelope.sender.address(),
    ) else {
        return RelaySender::Keep;
    };
    // Our DKIM key signs exactly what is ours to send (a user's submission, our own
    // messages): such mail keeps its sender, which our SPF record already covers.
    if envelope.may_sign() || config.is_local_domain(sender.domain()) {
        return RelaySender::Keep;
    }
    match forward(keys, &config.srs.domain, sender, today) {
        Ok(srs) => RelaySender::Rewrite(srs),
        Err(e) => RelaySender::Unrewritable(e),
    }
}

/// The answer to `RCPT TO:<to>` in a transaction from `from` when `to` is an SRS address of
/// our SRS domain (`None` when it is not, or SRS is off: the other lookups decide). A valid
/// one is accepted and goes to the original sender, which is relayed even on port 25: the
/// hash shows we made the address, so the destination was never the client's choice.
pub fn rcpt_decision(
    config: &Config,
    from: &ReversePath,
    to: &ForwardPath,
    today: u64,
) -> Option<RcptDecision> {
    let ForwardPath::Address(to) = to else {
        return None;
    };
    let srs = &config.srs;
    if !srs.enabled || to.domain() != &srs.domain {
        return None;
    }
    let verdict = match &srs.keys {
        Some(keys) => reverse(keys, to.local_part(), today, srs.max_age.as_secs() / 86_400),
        None if looks_srs(to.local_part()) => Reverse::Invalid(Invalid::BadHash),
        None => Reverse::NotSrs,
    };
    match verdict {
        Reverse::NotSrs => None,
        Reverse::Invalid(_) => Some(RcptDecision::Reject(Reply::SRS_INVALID)),
        Reverse::Valid(_) if *from != ReversePath::Null => {
            Some(RcptDecision::Reject(Reply::SRS_BOUNCES_ONLY))
        }
        Reverse::Valid(original) => Some(RcptDecision::Accept(vec![original])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Domain;
    use crate::srs::{Keys, SECRET_LEN, Secret};

    fn keys() -> Keys {
        Keys {
            current: Secret::new([7; SECRET_LEN]),
            previous: None,
        }
    }

    fn ours() -> Domain {
        Domain::parse("example.test").unwrap()
    }

    fn addr(text: &str) -> Address {
        Address::parse(text).unwrap()
    }

    fn srs_config(extra: &str) -> Config {
        let text = format!(
            "hostname = \"mx.example.test\"\nlocal_domains = [\"example.test\"]\n\
             [aliases]\n\"fwd@example.test\" = [\"bob@remote.test\"]\n{extra}"
        );
        let mut config = Config::from_toml("t.toml", &text, "x").unwrap();
        config.srs.keys = Some(keys());
        config
    }

    /// The envelope of a message from `from`, vouched for as `vouched`.
    fn envelope(from: &str, vouched: crate::envelope::Vouched) -> Envelope {
        let mut e = Envelope::generated(
            crate::envelope::MessageId::generate(1),
            vec![addr("bob@remote.test")],
            "mx.example.test",
            1,
            10,
        );
        e.sender = crate::address::parse_reverse_path(from).unwrap();
        e.vouched = vouched;
        e
    }

    /// Only mail from another server, from a sender in someone else's domain, is rewritten;
    /// `<>`, our own domains, users' submissions and our own messages keep their sender.
    #[test]
    fn who_is_rewritten() {
        use crate::envelope::Vouched;
        let config = srs_config("");
        let day = 20_000;
        let want = forward(&keys(), &ours(), &addr("someone@third.test"), day).unwrap();
        let table = [
            (
                "<someone@third.test>",
                Vouched::SenderVerified,
                RelaySender::Rewrite(want.clone()),
            ),
            (
                "<someone@third.test>",
                Vouched::Unverified,
                RelaySender::Rewrite(want),
            ),
            ("<someone@third.test>", Vouched::User, RelaySender::Keep),
            ("<>", Vouched::Generated, RelaySender::Keep),
            ("<>", Vouched::Unverified, RelaySender::Keep),
            (
                "<alice@example.test>",
                Vouched::Unverified,
                RelaySender::Keep,
            ),
            (
                &format!("<{}@third.test>", "a".repeat(50)),
                Vouched::Unverified,
                RelaySender::Unrewritable(ForwardError::TooLong),
            ),
        ];
        for (from, vouched, want) in table {
            assert_eq!(
                relay_sender(&config, &envelope(from, vouched), day),
                want,
                "{from} {vouched:?}"
            );
        }
        let off = srs_config("[srs]\nenabled = false\n");
        let e = envelope("<someone@third.test>", Vouched::Unverified);
        assert_eq!(relay_sender(&off, &e, day), RelaySender::Keep);
        let mut no_keys = srs_config("");
        no_keys.srs.keys = None;
        assert_eq!(relay_sender(&no_keys, &e, day), RelaySender::Keep);
    }

    /// RCPT to an SRS address: ours and young goes back to the sender (from `<>` only); forged,
    /// expired, SRS1 or with SRS off: refused or left to the other lookups.
    #[test]
    fn rcpt_to_srs_addresses() {
        use crate::address::{parse_forward_path, parse_reverse_path};
        let config = srs_config("");
        let day = 20_000;
        let original = addr("someone@third.test");
        let srs = forward(&keys(), &ours(), &original, day).unwrap();
        let null = parse_reverse_path("<>").unwrap();
        let stranger = parse_reverse_path("<x@spam.test>").unwrap();
        let to = |t: &str| parse_forward_path(&format!("<{t}>")).unwrap();
        let forged = format!("SRS0=AAAA{}", &srs.to_string()[9..]);
        let other_domain = format!("{}@other.test", srs.local_part());
        let table: &[(&ReversePath, String, u64, Option<RcptDecision>)] = &[
            (
                &null,
                srs.to_string(),
                day + 21,
                Some(RcptDecision::Accept(vec![original.clone()])),
            ),
            (
                &null,
                srs.to_string().to_lowercase(),
                day,
                Some(RcptDecision::Accept(vec![addr("someone@third.test")])),
            ),
            (
                &null,
                srs.to_string(),
                day + 22,
                Some(RcptDecision::Reject(Reply::SRS_INVALID)),
            ),
            (
                &null,
                forged,
                day,
                Some(RcptDecision::Reject(Reply::SRS_INVALID)),
            ),
            (
                &stranger,
                srs.to_string(),
                day,
                Some(RcptDecision::Reject(Reply::SRS_BOUNCES_ONLY)),
            ),
            (
                &null,
                "SRS1=xxxx=fwd.test==abcd=AB=x.test=y@example.test".into(),
                day,
                Some(RcptDecision::Reject(Reply::SRS_INVALID)),
            ),
            (&null, "alice@example.test".into(), day, None),
            (&null, other_domain, day, None),
        ];
        for (from, rcpt, today, want) in table {
            assert_eq!(
                &rcpt_decision(&config, from, &to(rcpt), *today),
                want,
                "{rcpt} {today}"
            );
        }
        assert_eq!(
            rcpt_decision(&config, &null, &ForwardPath::Postmaster, day),
            None
        );
        let off = srs_config("[srs]\nenabled = false\n");
        assert_eq!(rcpt_decision(&off, &null, &to(&srs.to_string()), day), None);
        let mut no_keys = srs_config("");
        no_keys.srs.keys = None;
        assert_eq!(
            rcpt_decision(&no_keys, &null, &to(&srs.to_string()), day),
            Some(RcptDecision::Reject(Reply::SRS_INVALID))
        );
    }

    use crate::envelope::Vouched;
    use proptest::prelude::*;

    fn vouched() -> impl Strategy<Value = Vouched> {
        prop_oneof![
            Just(Vouched::User),
            Just(Vouched::Generated),
            Just(Vouched::SenderVerified),
            Just(Vouched::Unverified),
        ]
    }

    proptest! {
        /// Reference: rewritten exactly when SRS is on, the sender is not `<>`, nothing of
        /// ours vouches for the message (no user submitted it, we did not write it) and the
        /// sender's domain is not ours; then to the address `forward` makes.
        #[test]
        fn relay_sender_model(
            enabled in any::<bool>(),
            null in any::<bool>(),
            local in "[a-z]{1,10}",
            domain in prop_oneof![Just("example.test"), Just("third.test"), Just("a.b.test")],
            vouched in vouched(),
            day in 0u64..100_000,
        ) {
            let config = srs_config(if enabled { "" } else { "[srs]\nenabled = false\n" });
            let sender = addr(&format!("{local}@{domain}"));
            let from = if null { "<>".to_string() } else { format!("<{sender}>") };
            let got = relay_sender(&config, &envelope(&from, vouched), day);
            let ours_to_send = matches!(vouched, Vouched::User | Vouched::Generated);
            let want = if enabled && !null && !ours_to_send && domain != "example.test" {
                RelaySender::Rewrite(forward(&keys(), &ours(), &sender, day).unwrap())
            } else {
                RelaySender::Keep
            };
            prop_assert_eq!(got, want);
        }

        /// Reference: a bounce to an address we made is taken exactly when it is from `<>`,
        /// its hash is the one we wrote (in any case) and it is at most 21 days old.
        #[test]
        fn rcpt_model(
            local in "[a-z0-9]{1,4}(\\.[a-z0-9]{1,4}){0,2}",
            made in 0u64..100_000,
            age in 0u64..1100,
            null in any::<bool>(),
            change in proptest::option::of((0usize..4, "[A-Za-z0-9+/]")),
        ) {
            use crate::address::{parse_forward_path, parse_reverse_path};
            let config = srs_config("");
            let sender = addr(&format!("{local}@third.test"));
            let srs = forward(&keys(), &ours(), &sender, made).unwrap();
            let mut text = srs.to_string();
            let mut same_hash = true;
            if let Some((at, c)) = change {
                let at = 5 + at;
                if !text[at..at + 1].eq_ignore_ascii_case(&c) {
                    same_hash = false;
                }
                text.replace_range(at..at + 1, &c);
            }
            let from = parse_reverse_path(if null { "<>" } else { "<x@spam.test>" }).unwrap();
            let to = parse_forward_path(&format!("<{text}>")).unwrap();
            let got = rcpt_decision(&config, &from, &to, made + age);
            let fresh = age % 1024 <= 21;
            let want = if !same_hash || !fresh {
                RcptDecision::Reject(Reply::SRS_INVALID)
            } else if !null {
                RcptDecision::Reject(Reply::SRS_BOUNCES_ONLY)
            } else {
                RcptDecision::Accept(vec![sender])
            };
            prop_assert_eq!(got, Some(want));
        }
    }
}
