//! What the inbound checks showed about a message from another server ([`Evidence`]), and two
//! decisions made from it:
//!
//! - [`sender_verified`]: the envelope sender's domain passed SPF, or signed the message with
//!   a DKIM signature that verified (`d=` aligned with it). Only then may a failure after
//!   acceptance be reported to that sender; otherwise the DSN could go to a forged address
//!   (backscatter).
//! - [`spoofed_domain`]: an originator field ([`ORIGINATOR_FIELDS`]: `From:`, `Sender:`,
//!   `Resent-From:`, `Resent-Sender:`, which mail clients show as the author or "on behalf
//!   of") names one of our local domains, in an address or anywhere in the field's text (a
//!   display name such as `"ceo@example.org" <x@elsewhere>` deceives as well), and neither SPF
//!   nor a DKIM signature aligned with that domain passed. Whatever our own DMARC record says:
//!   the spoofed message is visible even under `p=none`. A mailing list's own `Sender:` names
//!   the list's domain, not ours, so list mail is not marked.
//!
//! Alignment is relaxed (RFC 7489 §3.1, without the public suffix list): the two domains are
//! the same, or one is a subdomain of the other. One of them is always ours or the envelope
//! sender's, so a shorter common parent (a public suffix) never counts.
//!
//! With `[inbound] checks = false` nothing was checked: the evidence is empty, the sender is
//! never verified and a `From:` in our domain is always taken as spoofed.

use mta_core::address::{Domain, ReversePath};
use mta_core::config::Config;

use super::mailbox::mailboxes;
use crate::headers;

/// What passed, as the checks saw it. Empty when they did not run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The domain SPF passed for (the `MAIL FROM` domain, or the `EHLO` name for `<>`).
    pub spf_pass: Option<String>,
    /// The `d=` of every DKIM signature that verified.
    pub dkim_pass: Vec<String>,
}

impl Evidence {
    /// True when SPF or a verified DKIM signature vouches for `domain` (relaxed alignment).
    pub fn vouches_for(&self, domain: &str) -> bool {
        self.spf_pass.as_deref().is_some_and(|d| aligned(d, domain))
            || self.dkim_pass.iter().any(|d| aligned(d, domain))
    }
}

/// Relaxed alignment: `a` and `b` are the same domain, or one is a subdomain of the other;
/// without case and a final dot.
pub fn aligned(a: &str, b: &str) -> bool {
    let a = a.trim_end_matches('.').to_ascii_lowercase();
    let b = b.trim_end_matches('.').to_ascii_lowercase();
    if a.is_empty() || b.is_empty() {
        return false;
    }
    a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}"))
}

/// True when the envelope sender is shown to be real: SPF passed for its domain or a DKIM
/// signature of its domain verified. Never for `<>` (nothing is ever sent to it).
pub fn sender_verified(evidence: &Evidence, from: &ReversePath) -> bool {
    from.address()
        .is_some_and(|a| evidence.vouches_for(a.domain().as_str()))
}

/// The fields that name who wrote or sent a message (RFC 5322 §3.6.2, §3.6.6), which a reader
/// takes for the originator: a forger who cannot use `From:` uses one of the others.
pub const ORIGINATOR_FIELDS: [&str; 4] = ["From", "Sender", "Resent-From", "Resent-Sender"];

/// The first of our local domains that an originator field ([`ORIGINATOR_FIELDS`]) names
/// without SPF or DKIM vouching for it, or `None`.
pub fn spoofed_domain(data: &[u8], config: &Config, evidence: &Evidence) -> Option<Domain> {
    headers::all_fields(data)
        .into_iter()
        .filter(|f| {
            ORIGINATOR_FIELDS
                .iter()
                .any(|name| f.name.eq_ignore_ascii_case(name))
        })
        .flat_map(|f| named_domains(f.value, config))
        .find(|d| !evidence.vouches_for(d.as_str()))
}

/// Our local domains that an originator field's value names: the domains of its mailboxes when it parses,
/// and any `@domain` in its text (display names, comments, a value that does not parse).
fn named_domains(value: &[u8], config: &Config) -> Vec<Domain> {
    let text = String::from_utf8_lossy(value).replace("\r\n", "");
    let mut out: Vec<Domain> = mailboxes(text.trim())
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.domain().clone())
        .filter(|d| config.is_local_domain(d))
        .collect();
    // Encoded words are read as a mail client shows them; final dots do not make a domain
    // another one. White space and comments may stand between the parts of an address
    // (`ceo@example (x). org`, RFC 5322 §4.4), so the text is searched without them too.
    let decoded = with_decoded_words(&text).to_lowercase();
    let lower = format!("{decoded} {}", without_cfws(&text.to_lowercase()));
    for local in &config.local_domains {
        let ascii = local.as_str().to_ascii_lowercase();
        let (unicode, _) = idna::domain_to_unicode(&ascii);
        let named = [ascii, unicode.to_lowercase()].iter().any(|domain| {
            let needle = format!("@{domain}");
            lower.match_indices(&needle).any(|(at, _)| {
                let after = lower[at + needle.len()..].trim_start_matches('.');
                let next = after.chars().next();
                !next.is_some_and(|c| c.is_alphanumeric() || c == '-')
            })
        });
        if named && !out.contains(local) {
            out.push(local.clone());
        }
    }
    out
}

/// `text`, followed by the decoded text of each RFC 2047 encoded word in it
/// (`=?charset?B?…?=` or `=?charset?Q?…?=`, read as UTF-8 whatever the charset). Words
/// with only white space between them are joined, as a mail client shows them (§6.2).
fn with_decoded_words(text: &str) -> String {
    use base64::Engine as _;
    let mut out = text.to_string();
    let mut pos = 0;
    let mut last_end: Option<usize> = None;
    while let Some(found) = text[pos..].find("=?") {
        let start = pos + found;
        pos = start + 2;
        let mut parts = text[pos..].splitn(4, '?');
        let (Some(charset), Some(encoding), Some(word), Some(tail)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            break;
        };
        if !tail.starts_with('=') {
            continue;
        }
        let decoded = match encoding {
            "B" | "b" => base64::engine::general_purpose::STANDARD
                .decode(word.trim_end_matches('='))
                .or_else(|_| {
                    base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(word.trim_end_matches('='))
                })
                .unwrap_or_default(),
            "Q" | "q" => decode_q(word),
            _ => continue,
        };
        let adjacent = last_end.is_some_and(|e| text[e..start].chars().all(char::is_whitespace));
        if !adjacent {
            out.push(' ');
        }
        out.push_str(&String::from_utf8_lossy(&decoded));
        pos += charset.len() + encoding.len() + word.len() + 4;
        last_end = Some(pos);
    }
    out
}

/// `text` without white space and comments (nested, with quoted pairs).
fn without_cfws(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if depth > 0 => {
                chars.next();
            }
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            c if depth == 0 && !c.is_whitespace() => out.push(c),
            _ => {}
        }
    }
    out
}

/// The octets of a `Q`-encoded word: `_` is a space, `=XX` an octet in hex.
fn decode_q(word: &str) -> Vec<u8> {
    let bytes = word.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'_', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> Config {
        Config::from_toml(
            "t.toml",
            "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\", \"ours.test\"]\n",
            "x",
        )
        .unwrap()
    }

    fn evidence(spf: Option<&str>, dkim: &[&str]) -> Evidence {
        Evidence {
            spf_pass: spf.map(str::to_string),
            dkim_pass: dkim.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn our_from_needs_aligned_spf_or_dkim() {
        let cfg = config();
        let none = Evidence::default();
        let spoofed = |msg: &str, e: &Evidence| {
            spoofed_domain(msg.as_bytes(), &cfg, e).map(|d| d.to_string())
        };
        let ceo = "From: CEO <ceo@example.org>\r\nSubject: pay\r\n\r\nbody\r\n";
        assert_eq!(spoofed(ceo, &none).as_deref(), Some("example.org"));
        assert_eq!(spoofed(ceo, &evidence(Some("example.org"), &[])), None);
        assert_eq!(
            spoofed(ceo, &evidence(Some("bounces.example.org"), &[])),
            None
        );
        assert_eq!(spoofed(ceo, &evidence(None, &["EXAMPLE.org."])), None);
        // A mailing list: its own SPF and DKIM pass, ours do not.
        let list = evidence(Some("lists.test"), &["lists.test"]);
        assert_eq!(spoofed(ceo, &list).as_deref(), Some("example.org"));
        assert_eq!(
            spoofed(ceo, &evidence(None, &["example.org.evil.test"])).as_deref(),
            Some("example.org")
        );
        // Not ours.
        assert_eq!(
            spoofed("From: a@example.org.evil.test\r\n\r\n", &none),
            None
        );
        assert_eq!(spoofed("From: a@sub.example.org\r\n\r\n", &none), None);
        assert_eq!(
            spoofed("From: a@example.org..evil.test\r\n\r\n", &none),
            None
        );
        assert_eq!(
            spoofed(
                "From: =?utf-8?q?a=40example=2Eorg=2Eevil?= <a@x.test>\r\n\r\n",
                &none
            ),
            None
        );
        assert_eq!(spoofed("From: a@elsewhere.test\r\n\r\n", &none), None);
        // Display names, a second mailbox, a second domain, fields a lenient reader sees.
        for msg in [
            "From: \"ceo@example.org\" <x@elsewhere.test>\r\n\r\n",
            "From: x@elsewhere.test, ceo@Example.ORG\r\n\r\n",
            "From: ceo@example.org <<broken\r\n\r\n",
            "Subject: x\r\nnot a field\r\nFrom : ceo@example.org\r\n\r\n",
            "From: x@elsewhere.test\r\n (ceo@example.org)\r\n\r\n",
            "From: ceo@example.org.\r\n\r\n",
            "From: CEO <ceo@Example.ORG.>\r\n\r\n",
            "From: =?UTF-8?B?Y2VvQGV4YW1wbGUub3Jn?= <x@elsewhere.test>\r\n\r\n",
            "From: =?utf-8?q?ceo=40example=2Eorg?= <x@elsewhere.test>\r\n\r\n",
            "From: =?utf-8?Q?CEO_=3Cceo=40example=2Eorg=3E?=\r\n <x@elsewhere.test>\r\n\r\n",
        ] {
            assert_eq!(
                spoofed(msg, &none).as_deref(),
                Some("example.org"),
                "{msg:?}"
            );
        }
        let two = "From: a@ours.test, b@example.org\r\n\r\n";
        assert_eq!(
            spoofed(two, &evidence(Some("ours.test"), &[])).as_deref(),
            Some("example.org")
        );
        assert_eq!(
            spoofed("Subject: x\r\n\r\nFrom: a@example.org\r\n", &none),
            None
        );
    }

    /// `Sender:`, `Resent-From:` and `Resent-Sender:` name an originator too (mail clients
    /// show "on behalf of"): the same rule as for `From:`. A mailing list's own `Sender:`
    /// stays unmarked.
    #[test]
    fn sender_and_resent_fields_need_aligned_spf_or_dkim_too() {
        let cfg = config();
        let none = Evidence::default();
        let spoofed = |msg: &str, e: &Evidence| {
            spoofed_domain(msg.as_bytes(), &cfg, e).map(|d| d.to_string())
        };
        for field in [
            "Sender",
            "Resent-From",
            "Resent-Sender",
            "resent-from",
            "SENDER",
        ] {
            let msg =
                format!("From: x@elsewhere.test\r\n{field}: CEO <ceo@example.org>\r\n\r\nb\r\n");
            assert_eq!(
                spoofed(&msg, &none).as_deref(),
                Some("example.org"),
                "{msg:?}"
            );
            // A stranger's SPF or DKIM does not vouch for our domain.
            let theirs = evidence(Some("elsewhere.test"), &["elsewhere.test"]);
            assert_eq!(
                spoofed(&msg, &theirs).as_deref(),
                Some("example.org"),
                "{msg:?}"
            );
            // Aligned SPF (the MAIL FROM domain) or DKIM d= of our domain does.
            assert_eq!(spoofed(&msg, &evidence(Some("example.org"), &[])), None);
            assert_eq!(spoofed(&msg, &evidence(None, &["example.org"])), None);
            // Display-name tricks count as for From:.
            let display = format!("{field}: \"ceo@example.org\" <x@elsewhere.test>\r\n\r\n");
            assert_eq!(spoofed(&display, &none).as_deref(), Some("example.org"));
        }
        // A mailing list: the author's From:, the list's own Sender:, the list's SPF and DKIM.
        let list = evidence(Some("lists.test"), &["lists.test"]);
        let post = "From: Bob <bob@elsewhere.test>\r\nSender: list-bounces@lists.test\r\n\
                    List-Id: <l.lists.test>\r\n\r\nhi\r\n";
        assert_eq!(spoofed(post, &list), None);
        assert_eq!(spoofed(post, &none), None);
        // Other fields naming our domain are not originators.
        let other = "From: x@elsewhere.test\r\nReply-To: ceo@example.org\r\n\
                     To: a@example.org\r\nX-Sender: ceo@example.org\r\n\r\n";
        assert_eq!(spoofed(other, &none), None);
    }

    /// An address with white space or comments between its parts, encoded words split in
    /// two, and a local domain written in Unicode are read as a mail client shows them.
    #[test]
    fn split_addresses_and_unicode_domains_are_seen() {
        let cfg = Config::from_toml(
            "t.toml",
            "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\", \"bücher.test\"]\n",
            "x",
        )
        .unwrap();
        let none = Evidence::default();
        let spoofed =
            |msg: &str| spoofed_domain(msg.as_bytes(), &cfg, &none).map(|d| d.to_string());
        for msg in [
            "From: ceo@example (x).org\r\n\r\n",
            "From: ceo@example .org\r\n\r\n",
            "From: ceo@example\r\n .org\r\n\r\n",
            "From: ceo @ example . org\r\n\r\n",
            "Sender: ceo@example. (x) org\r\n\r\n",
            "From: =?utf-8?q?ceo=40exam?= =?utf-8?q?ple.org?= <x@e.test>\r\n\r\n",
            "From: =?utf-8?q?ceo=40exam?=\r\n =?utf-8?b?cGxlLm9yZw==?= <x@e.test>\r\n\r\n",
        ] {
            assert_eq!(spoofed(msg).as_deref(), Some("example.org"), "{msg:?}");
        }
        for msg in [
            "From: \"ceo@bücher.test\" <x@e.test>\r\n\r\n",
            "From: \"ceo@BÜCHER.test\" <x@e.test>\r\n\r\n",
            "From: ceo@BÜCHER.test\r\n\r\n",
        ] {
            assert_eq!(
                spoofed(msg).as_deref(),
                Some("xn--bcher-kva.test"),
                "{msg:?}"
            );
        }
        for msg in [
            "From: =?utf-8?q?ceo=40exam?= x =?utf-8?q?ple.org?= <x@e.test>\r\n\r\n",
            "From: ceo@example.organic (x)\r\n\r\n",
            "From: ceo@bücher.testing\r\n\r\n",
        ] {
            assert_eq!(spoofed(msg), None, "{msg:?}");
        }
    }

    #[test]
    fn sender_verified_by_its_own_domain() {
        let from = |t: &str| mta_core::address::parse_reverse_path(t).unwrap();
        let spf = evidence(Some("sender.test"), &[]);
        assert!(sender_verified(&spf, &from("<a@sender.test>")));
        assert!(!sender_verified(&spf, &from("<a@other.test>")));
        let dkim = evidence(None, &["sender.test"]);
        assert!(sender_verified(&dkim, &from("<a@bounces.sender.test>")));
        assert!(!sender_verified(
            &Evidence::default(),
            &from("<a@sender.test>")
        ));
        assert!(!sender_verified(&spf, &from("<>")));
    }

    /// The reference: alignment by labels, compared from the right.
    fn aligned_model(a: &str, b: &str) -> bool {
        let labels = |d: &str| -> Vec<String> {
            d.trim_end_matches('.')
                .split('.')
                .rev()
                .map(|l| l.to_ascii_lowercase())
                .collect()
        };
        let (a, b) = (labels(a), labels(b));
        if a == [""] || b == [""] {
            return false;
        }
        let n = a.len().min(b.len());
        a[..n] == b[..n]
    }

    proptest! {
        #[test]
        fn alignment_agrees_with_labels(
            // Domains (no empty label inside; a root dot or nothing at all may come up),
            // made so rather than filtered: a filter threw most of them away.
            a in "([aB]{1,2}(\\.[ab]{1,2}){0,3}\\.?)?",
            b in "([aB]{1,2}(\\.[ab]{1,2}){0,3}\\.?)?",
        ) {
            prop_assert_eq!(aligned(&a, &b), aligned_model(&a, &b), "{} {}", a, b);
        }
    }
}
