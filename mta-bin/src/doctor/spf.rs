//! The SPF check (RFC 7208): the domain's one SPF record parses and passes, as mail-auth
//! evaluates it (following `include:`, `a`, `mx` and `redirect=`), for every outbound address,
//! for `MAIL FROM:<postmaster@DOMAIN>` or, for the hostname, for our EHLO name. When it does
//! not, the record to publish: the existing one with the missing addresses added, or a fresh
//! one.

use std::net::IpAddr;

use mail_auth::SpfResult;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::spf::Spf;
use mail_auth::spf::verify::SpfParameters;

use super::checks::{txt_line, unchecked};
use super::report::{Status, Verdict};
use super::{Ctx, Outbound};

/// Whose SPF is checked: the `MAIL FROM` domain, or our EHLO name (which is what bounces,
/// sent from `<>`, are checked against: RFC 7208 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// `postmaster@DOMAIN` as MAIL FROM.
    MailFrom,
    /// The hostname as EHLO.
    Helo,
}

/// SPF: the domain's record passes for each outbound address.
pub async fn spf(ctx: &Ctx<'_>, domain: &str, identity: Identity) -> Verdict {
    let v = |status, detail| Verdict::new("spf", domain, status, detail);
    let ips = match &ctx.outbound {
        Outbound::Known(ips) => ips,
        Outbound::Smarthost(host) => {
            return v(
                Status::Info,
                format!(
                    "not checked: mail leaves through the smarthost {host}, whose provider says \
                     what SPF must include (or give its addresses with --ip)"
                ),
            );
        }
        Outbound::Unknown(why) => return v(Status::Warn, format!("not checked: {why}")),
    };
    // What a missing record is worth: required for our mail, advised for our EHLO name.
    let missing = match identity {
        Identity::MailFrom => Status::Fail,
        Identity::Helo => Status::Warn,
    };
    let records = match ctx.dns.txt(domain).await {
        Ok(r) => r,
        Err(e) => return unchecked("spf", domain, &e),
    };
    let spf: Vec<&String> = records.iter().filter(|r| is_spf(r)).collect();
    let one = match spf.as_slice() {
        [one] => one.as_str(),
        [] => {
            return v(missing, "no SPF record".into()).publish(txt_line(
                domain,
                &fresh_spf(ctx, domain, identity, ips).await,
            ));
        }
        many => {
            return v(
                Status::Fail,
                format!(
                    "{} SPF records: there must be exactly one (RFC 7208 §4.5)",
                    many.len()
                ),
            )
            .publish(txt_line(
                domain,
                &fresh_spf(ctx, domain, identity, ips).await,
            ));
        }
    };
    if Spf::parse(one.as_bytes()).is_err() {
        return v(Status::Fail, format!("{one:?} does not parse")).publish(txt_line(
            domain,
            &fresh_spf(ctx, domain, identity, ips).await,
        ));
    }
    evaluate(ctx, domain, identity, one, ips).await
}

/// The domain's one SPF record, evaluated for each outbound address as the receivers do.
async fn evaluate(
    ctx: &Ctx<'_>,
    domain: &str,
    identity: Identity,
    one: &str,
    ips: &[IpAddr],
) -> Verdict {
    let v = |status, detail| Verdict::new("spf", domain, status, detail);
    let sender = format!("postmaster@{domain}");
    let mut bad = Vec::new();
    for ip in ips {
        let params = match identity {
            Identity::MailFrom => {
                SpfParameters::verify_mail_from(*ip, &ctx.hostname, &ctx.hostname, &sender)
            }
            Identity::Helo => SpfParameters::verify_ehlo(*ip, &ctx.hostname, &ctx.hostname),
        };
        match ctx.dns.auth().verify_spf(params).await.result() {
            SpfResult::Pass => {}
            SpfResult::TempError => {
                return unchecked(
                    "spf",
                    domain,
                    &format!("evaluating {one:?} for {ip} gave temperror"),
                );
            }
            other => bad.push((*ip, other)),
        }
    }
    if bad.is_empty() {
        let list: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        return v(
            Status::Ok,
            format!("{one:?} passes for {}", list.join(", ")),
        );
    }
    let results: Vec<String> = bad
        .iter()
        .map(|(ip, r)| format!("{} for {ip}", spf_word(*r)))
        .collect();
    let missing_ips: Vec<IpAddr> = bad.iter().map(|(ip, _)| *ip).collect();
    v(
        Status::Fail,
        format!("{one:?} gives {}", results.join(", ")),
    )
    .publish(txt_line(domain, &amend_spf(one, &missing_ips)))
}

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => {
            "permerror (a broken term, an include without SPF, or over 10 DNS lookups)"
        }
        SpfResult::None => "none",
    }
}

/// RFC 7208 §4.5: a record is the one that starts with `v=spf1` and a space, or is only that.
fn is_spf(record: &str) -> bool {
    let lower = record.to_ascii_lowercase();
    lower == "v=spf1" || lower.starts_with("v=spf1 ")
}

/// `ip4:` / `ip6:` terms for addresses.
fn ip_terms(ips: &[IpAddr]) -> Vec<String> {
    ips.iter()
        .map(|ip| match ip {
            IpAddr::V4(a) => format!("ip4:{a}"),
            IpAddr::V6(a) => format!("ip6:{a}"),
        })
        .collect()
}

/// An existing record with terms for `missing` added right after `v=spf1`, so they match
/// before any `all`.
fn amend_spf(record: &str, missing: &[IpAddr]) -> String {
    let rest = record.get(6..).unwrap_or("").trim_start();
    let mut terms = vec!["v=spf1".to_string()];
    terms.extend(ip_terms(missing));
    if !rest.is_empty() {
        terms.push(rest.to_string());
    }
    terms.join(" ")
}

/// A record to start with: `mx` (or `a` for the EHLO name) when that already names every
/// outbound address, else the addresses themselves.
async fn fresh_spf(ctx: &Ctx<'_>, domain: &str, identity: Identity, ips: &[IpAddr]) -> String {
    let (mechanism, covered) = match identity {
        Identity::Helo => ("a", ips.iter().all(|ip| ctx.host_ips.contains(ip))),
        Identity::MailFrom => {
            let mut mx_ips = Vec::new();
            for (_, host) in ctx.dns.mx(domain).await.unwrap_or_default() {
                mx_ips.extend(ctx.dns.ips(&host).await.unwrap_or_default());
            }
            ("mx", ips.iter().all(|ip| mx_ips.contains(ip)))
        }
    };
    if covered {
        format!("v=spf1 {mechanism} -all")
    } else {
        format!("v=spf1 {} -all", ip_terms(ips).join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spf_records_are_amended_before_all() {
        let ips: Vec<IpAddr> = vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ];
        assert_eq!(
            amend_spf("v=spf1 include:_spf.example.net ~all", &ips),
            "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 include:_spf.example.net ~all"
        );
        assert_eq!(amend_spf("v=spf1", &ips[..1]), "v=spf1 ip4:192.0.2.10");
        assert!(is_spf("V=SPF1 -all"));
        assert!(!is_spf("v=spf10 -all"));
    }
}
