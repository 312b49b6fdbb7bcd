//! The record checks of one mail domain but SPF ([`super::spf`]): MX (RFC 5321 §5.1, RFC
//! 7505), DKIM keys (RFC 6376 §3.6.1), DMARC (RFC 7489 §6.3), MTA-STS (RFC 8461 §3.1) and
//! TLS-RPT (RFC 8460 §3). Records are parsed with mail-auth's parsers, the ones our inbound
//! checks use. The MTA-STS policy itself (HTTPS) is not fetched.

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::{Dmarc, Policy};
use mail_auth::mta_sts::{MtaSts, TlsRpt};
use mta_core::config::DkimKey;
use mta_smtp::dkim::{PrivateKey, dns_record};

use super::Ctx;
use super::report::{Status, Verdict};
use crate::dkim_cmd::zone_line;

/// The verdict when DNS did not answer.
pub fn unchecked(check: &'static str, domain: &str, why: &str) -> Verdict {
    Verdict::new(
        check,
        domain,
        Status::Fail,
        format!("could not check (DNS: {why})"),
    )
}

/// A TXT record in zone-file form.
pub fn txt_line(name: &str, text: &str) -> String {
    zone_line(name, text)
}

/// `tag=value` pairs of a DKIM, DMARC or MTA-STS record (RFC 6376 §3.2): names lower case,
/// whitespace removed from values (base64 in `p=` may be split anywhere).
fn tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.chars().filter(|c| !c.is_whitespace()).collect(),
            )
        })
        .collect()
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// MX: mail for the domain reaches this host.
pub async fn mx(ctx: &Ctx<'_>, domain: &str) -> Verdict {
    let v = |status, detail| Verdict::new("mx", domain, status, detail);
    let record = format!("{domain}. IN MX 10 {}.", ctx.hostname);
    let hosts = match ctx.dns.mx(domain).await {
        Ok(hosts) => hosts,
        Err(e) => return unchecked("mx", domain, &e),
    };
    if hosts.iter().any(|(_, host)| host.is_empty()) {
        return v(
            Status::Fail,
            "null MX (RFC 7505): the domain says it receives no mail".into(),
        )
        .publish(record);
    }
    if hosts.is_empty() {
        // RFC 5321 §5.1: without MX, senders try the domain's own address.
        return match ctx.dns.ips(domain).await {
            Ok(ips) if ips.iter().any(|ip| ctx.is_ours(*ip)) => v(
                Status::Warn,
                format!("no MX record; senders fall back to {domain}'s own address (implicit MX)"),
            )
            .publish(record),
            Err(e) => unchecked("mx", domain, &e),
            Ok(_) => v(
                Status::Fail,
                "no MX record: mail for the domain cannot reach this host".into(),
            )
            .publish(record),
        };
    }
    let mut sorted = hosts;
    sorted.sort();
    let mut ours = Vec::new();
    let mut others = Vec::new();
    for (preference, host) in &sorted {
        let is_ours = host.eq_ignore_ascii_case(&ctx.hostname)
            || match ctx.dns.ips(host).await {
                Ok(ips) => ips.iter().any(|ip| ctx.is_ours(*ip)),
                Err(e) => return unchecked("mx", domain, &e),
            };
        let text = format!("MX {preference} {host}");
        if is_ours {
            ours.push(text);
        } else {
            others.push(text);
        }
    }
    if ours.is_empty() {
        v(
            Status::Fail,
            format!("{} is not this host ({})", others.join(", "), ctx.hostname),
        )
        .publish(record)
    } else if others.is_empty() {
        v(Status::Ok, format!("{} (this host)", ours.join(", ")))
    } else {
        v(
            Status::Ok,
            format!(
                "{} (this host); also {} (not this host)",
                ours.join(", "),
                others.join(", ")
            ),
        )
    }
}

/// DKIM: one verdict per configured key of the domain.
pub async fn dkim(ctx: &Ctx<'_>, domain: &str, missing: Status) -> Vec<Verdict> {
    let keys: Vec<&DkimKey> = ctx
        .config
        .dkim
        .iter()
        .filter(|k| k.domain.as_str() == domain)
        .collect();
    if keys.is_empty() {
        let why = match missing {
            Status::Fail => "no key".to_string(),
            _ => format!("no key, so bounces (From: MAILER-DAEMON@{domain}) go out unsigned"),
        };
        return vec![Verdict::new(
            "dkim",
            domain,
            missing,
            format!(
                "{why}: run mta dkim keygen --domain {domain} --selector <selector> \
                 (once with --algorithm rsa, once with ed25519)"
            ),
        )];
    }
    let mut out = Vec::new();
    for key in keys {
        out.push(dkim_key(ctx, key).await);
    }
    out
}

async fn dkim_key(ctx: &Ctx<'_>, key: &DkimKey) -> Verdict {
    let domain = key.domain.as_str();
    let v = |status, detail| Verdict::new("dkim", domain, status, detail);
    let private = match PrivateKey::load(&key.key, key.algorithm) {
        Ok(k) => k,
        Err(e) => return v(Status::Fail, format!("{}: {e}", key.key.display())),
    };
    let (name, text) = dns_record(&key.domain, &key.selector, key.algorithm, &private);
    let ours = tags(&text);
    let our_p = tag(&ours, "p").unwrap_or_default();
    let records = match ctx.dns.txt(&name).await {
        Ok(r) => r,
        Err(e) => return unchecked("dkim", domain, &e),
    };
    let publish = zone_line(&name, &text);
    if records.is_empty() {
        return v(Status::Fail, format!("no TXT record at {name}")).publish(publish);
    }
    let published: Vec<Vec<(String, String)>> = records.iter().map(|r| tags(r)).collect();
    let Some(theirs) = published.iter().find(|t| tag(t, "p").is_some()) else {
        return v(
            Status::Fail,
            format!("the TXT record at {name} is not a DKIM key (no p=)"),
        )
        .publish(publish);
    };
    let their_p = tag(theirs, "p").unwrap_or_default();
    // RFC 6376 §3.6.1: k= defaults to rsa.
    let their_k = tag(theirs, "k").unwrap_or("rsa").to_ascii_lowercase();
    if their_p.is_empty() {
        v(
            Status::Fail,
            format!("{name} says the key is revoked (empty p=)"),
        )
        .publish(publish)
    } else if !same_key(their_p, our_p) {
        v(
            Status::Fail,
            format!("{name} publishes another key than {}", key.key.display()),
        )
        .publish(publish)
    } else if their_k != key.algorithm.name() {
        v(
            Status::Fail,
            format!(
                "{name} says k={their_k}, the key is {}",
                key.algorithm.name()
            ),
        )
        .publish(publish)
    } else {
        v(
            Status::Ok,
            format!(
                "{name} matches {} ({})",
                key.key.display(),
                key.algorithm.name()
            ),
        )
    }
}

/// True when the published `p=` is our key: the same base64, or, for RSA, the bare PKCS#1
/// key inside our SubjectPublicKeyInfo (some tools publish that; verifiers accept both).
fn same_key(theirs: &str, ours: &str) -> bool {
    use base64::Engine;
    let decode = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).ok();
    theirs == ours
        || match (decode(theirs), decode(ours)) {
            (Some(t), Some(o)) => t == o || (is_der_sequence(&t) && spki_holds(&o, &t)),
            _ => false,
        }
}

/// True when `b` is exactly one DER SEQUENCE (as a PKCS#1 RSAPublicKey is).
fn is_der_sequence(b: &[u8]) -> bool {
    let (header, len) = match b {
        [0x30, n, ..] if *n < 0x80 => (2, usize::from(*n)),
        [0x30, 0x81, n, ..] => (3, usize::from(*n)),
        [0x30, 0x82, hi, lo, ..] => (4, usize::from(*hi) << 8 | usize::from(*lo)),
        _ => return false,
    };
    header + len == b.len()
}

/// True when the SubjectPublicKeyInfo `spki` ends in a BIT STRING holding exactly `key`.
fn spki_holds(spki: &[u8], key: &[u8]) -> bool {
    spki.len() > key.len() && spki.ends_with(key) && spki[spki.len() - key.len() - 1] == 0
}

/// The domain's parents down to two labels, for the organizational DMARC record (RFC 7489
/// §6.6.3; without the public suffix list, the parents are tried in turn).
fn parents(domain: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = domain;
    while let Some((_, parent)) = rest.split_once('.') {
        if !parent.contains('.') {
            break;
        }
        out.push(parent);
        rest = parent;
    }
    out
}

/// DMARC: a record exists at `_dmarc.DOMAIN` (or its organizational domain), parses, and asks
/// receivers to act on failures.
pub async fn dmarc(ctx: &Ctx<'_>, domain: &str) -> Verdict {
    let v = |status, detail| Verdict::new("dmarc", domain, status, detail);
    let name = format!("_dmarc.{domain}");
    // As docs/dns.md advises: start with p=none and reports; from p=none, move to quarantine.
    let suggest = |rua: Option<&str>, policy: &str| {
        let rua = rua.map_or_else(|| format!("mailto:postmaster@{domain}"), str::to_string);
        txt_line(&name, &format!("v=DMARC1; p={policy}; rua={rua}"))
    };
    let mut found = None;
    for candidate in std::iter::once(domain).chain(parents(domain)) {
        let at = format!("_dmarc.{candidate}");
        let records = match ctx.dns.txt(&at).await {
            Ok(r) => r,
            Err(e) => return unchecked("dmarc", domain, &e),
        };
        let dmarc: Vec<String> = records
            .into_iter()
            .filter(|r| r.starts_with("v=DMARC1"))
            .collect();
        if !dmarc.is_empty() {
            found = Some((candidate, at, dmarc));
            break;
        }
    }
    let Some((owner, at, records)) = found else {
        return v(Status::Fail, format!("no DMARC record at {name}"))
            .publish(suggest(None, "none"));
    };
    if records.len() > 1 {
        return v(
            Status::Fail,
            format!(
                "{} DMARC records at {at}: receivers then apply none (RFC 7489 §6.6.3)",
                records.len()
            ),
        )
        .publish(suggest(None, "none"));
    }
    let text = &records[0];
    let record = match Dmarc::parse(text.as_bytes()) {
        Ok(r) => r,
        Err(_) => {
            return v(Status::Fail, format!("{text:?} at {at} does not parse"))
                .publish(suggest(None, "none"));
        }
    };
    let tags = tags(text);
    let rua = tag(&tags, "rua");
    let (policy, key) = if owner != domain && record.sp != Policy::Unspecified {
        (record.sp, "sp")
    } else {
        (record.p, "p")
    };
    let source = if owner == domain {
        String::new()
    } else {
        format!(" (inherited from {at})")
    };
    let reports = match rua {
        Some(rua) => format!("aggregate reports to {rua}"),
        None => "no rua=, so no reports reach you".to_string(),
    };
    match policy {
        Policy::Reject | Policy::Quarantine => v(
            Status::Ok,
            format!("{key}={}{source}; {reports}", policy_word(policy)),
        ),
        Policy::None => v(
            Status::Warn,
            format!(
                "{key}=none{source}: forged mail is still delivered; move to quarantine once \
                 the reports show only your own mail"
            ),
        )
        .publish(suggest(rua, "quarantine")),
        Policy::Unspecified => {
            v(Status::Fail, format!("{text:?} at {at} has no p= tag")).publish(suggest(rua, "none"))
        }
    }
}

fn policy_word(p: Policy) -> &'static str {
    match p {
        Policy::None => "none",
        Policy::Quarantine => "quarantine",
        Policy::Reject => "reject",
        Policy::Unspecified => "unspecified",
    }
}

/// A fresh MTA-STS id: letters and digits, changed whenever the policy changes.
fn sts_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs}")
}

/// RFC 8461 §3.1: `id` is 1 to 32 letters and digits.
fn sts_id_ok(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// MTA-STS: optional; when there is a `_mta-sts` record it must be exactly one, and parse.
pub async fn mta_sts(ctx: &Ctx<'_>, domain: &str) -> Verdict {
    let v = |status, detail| Verdict::new("mta-sts", domain, status, detail);
    let name = format!("_mta-sts.{domain}");
    let publish = txt_line(&name, &format!("v=STSv1; id={}", sts_id()));
    let records = match ctx.dns.txt(&name).await {
        Ok(r) => r,
        Err(e) => return unchecked("mta-sts", domain, &e),
    };
    if records.is_empty() {
        return v(
            Status::Info,
            "no MTA-STS record (optional; mta does not host the policy file yet, see docs/dns.md)"
                .into(),
        );
    }
    let sts: Vec<&String> = records
        .iter()
        .filter(|r| r.starts_with("v=STSv1"))
        .collect();
    match sts.as_slice() {
        [] => v(
            Status::Fail,
            format!("{:?} at {name} is not an MTA-STS record", records[0]),
        )
        .publish(publish),
        [one] => match MtaSts::parse(one.as_bytes()) {
            Ok(p) if sts_id_ok(&p.id) => v(
                Status::Ok,
                format!(
                    "id={}; the policy at https://mta-sts.{domain}/.well-known/mta-sts.txt \
                     is not fetched by mta doctor",
                    p.id
                ),
            ),
            _ => v(
                Status::Fail,
                format!(
                    "{one:?} at {name} does not parse (needs v=STSv1; id=<1-32 letters or digits>)"
                ),
            )
            .publish(publish),
        },
        many => v(
            Status::Fail,
            format!(
                "{} MTA-STS records at {name}: senders then use none (RFC 8461 §3.1)",
                many.len()
            ),
        )
        .publish(publish),
    }
}

/// TLS-RPT: optional; when there is a `_smtp._tls` record it must be exactly one, and parse.
pub async fn tls_rpt(ctx: &Ctx<'_>, domain: &str) -> Verdict {
    let v = |status, detail| Verdict::new("tls-rpt", domain, status, detail);
    let name = format!("_smtp._tls.{domain}");
    let publish = txt_line(
        &name,
        &format!("v=TLSRPTv1; rua=mailto:postmaster@{domain}"),
    );
    let records = match ctx.dns.txt(&name).await {
        Ok(r) => r,
        Err(e) => return unchecked("tls-rpt", domain, &e),
    };
    if records.is_empty() {
        return v(
            Status::Info,
            "no TLS-RPT record (optional: with one, senders report TLS failures to you)".into(),
        )
        .publish(publish);
    }
    let rpt: Vec<&String> = records
        .iter()
        .filter(|r| r.starts_with("v=TLSRPTv1"))
        .collect();
    match rpt.as_slice() {
        [one] => match TlsRpt::parse(one.as_bytes()) {
            Ok(_) => v(Status::Ok, format!("{one:?}")),
            Err(_) => v(
                Status::Fail,
                format!("{one:?} at {name} does not parse (needs rua=mailto:… or https:…)"),
            )
            .publish(publish),
        },
        [] => v(
            Status::Fail,
            format!("{:?} at {name} is not a TLS-RPT record", records[0]),
        )
        .publish(publish),
        many => v(
            Status::Fail,
            format!(
                "{} TLS-RPT records at {name}: there must be one (RFC 8460 §3)",
                many.len()
            ),
        )
        .publish(publish),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_strip_whitespace() {
        let t = tags("v=DKIM1; k=ed25519;\tp=AB CD\r\n EF ; ");
        assert_eq!(tag(&t, "k"), Some("ed25519"));
        assert_eq!(tag(&t, "p"), Some("ABCDEF"));
        assert_eq!(tag(&t, "x"), None);
    }

    #[test]
    fn rsa_keys_match_as_spki_or_pkcs1() {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut pkcs1 = vec![0x30, 0x81, 137];
        pkcs1.extend(0..137u8);
        let mut spki = vec![0x30, 0x81, 0x9f, 0x03, 0x81, 141, 0x00];
        spki.extend(&pkcs1);
        assert!(same_key(&b64(&spki), &b64(&spki)));
        assert!(same_key(&b64(&pkcs1), &b64(&spki)));
        assert!(!same_key(&b64(&spki[spki.len() - 100..]), &b64(&spki)));
        assert!(!same_key(&b64(&pkcs1[..pkcs1.len() - 1]), &b64(&spki)));
        assert!(!same_key(&b64(&[1, 2, 3]), &b64(&spki)));
        assert!(!same_key("not base64!", &b64(&spki)));
    }

    #[test]
    fn dmarc_parents_stop_at_two_labels() {
        assert_eq!(parents("a.b.example.org"), ["b.example.org", "example.org"]);
        assert!(parents("example.org").is_empty());
    }

    #[test]
    fn sts_ids() {
        assert!(sts_id_ok(&sts_id()));
        assert!(!sts_id_ok(""));
        assert!(!sts_id_ok("2026-11-29"));
    }
}
