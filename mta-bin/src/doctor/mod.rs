//! `mta doctor [DOMAIN]`: does the world have what it needs to trust our mail? Reads the
//! config and DNS only (no server needs to run, nothing is sent) and gives one verdict per
//! item, with the record to publish when one is wrong or missing (docs/dns.md explains each).
//!
//! For each mail domain (DOMAIN, or every local domain but `localhost`): MX, SPF, DKIM,
//! DMARC, MTA-STS and TLS-RPT ([`checks`], [`spf`]). For this host: the hostname's
//! addresses, reverse DNS of each outbound address ([`host`]), SPF and DKIM of the hostname
//! itself when it is not one of the mail domains (bounces are sent from `<>` as
//! `MAILER-DAEMON@hostname`), and the certificate ([`cert`]; [`acme`] for names `[acme]`
//! obtains certificates for: expiry and the renewal task's last error).
//!
//! The outbound addresses are the `--ip` flags, else the hostname's A/AAAA (as far as
//! `outbound.ip` uses them), and for a family without one the kernel's source address for
//! a route to a public address ([`route`]). DNS goes through the resolver delivery uses; a lookup that fails
//! gives "could not check", which counts as a failure: exit 1 when any verdict is FAIL, 0
//! otherwise (2 stays for config errors).

mod acme;
pub(crate) mod cert;
mod checks;
mod dns;
mod host;
mod report;
mod route;
mod spf;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use mail_auth::MessageAuthenticator;
use mta_core::address::Domain;
use mta_core::config::{Config, IpFamily};

use dns::Dns;
use report::{Status, Verdict};
use spf::Identity;

/// One check may take this long in all (an SPF evaluation makes up to ten lookups, each
/// bounded by the resolver's own timeout and attempts).
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the first question may wait for any answer before DNS is reported unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The nameservers asked, for the message when none answers: `[dns] nameservers`, else the
/// system's from /etc/resolv.conf.
fn nameservers(config: &Config) -> String {
    let list: Vec<String> = if config.dns.nameservers.is_empty() {
        std::fs::read_to_string("/etc/resolv.conf")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .map(|rest| rest.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        config
            .dns
            .nameservers
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    match list.as_slice() {
        [] => "the system resolver (no nameserver in /etc/resolv.conf)".to_string(),
        [one] => format!("the nameserver {one}"),
        many => format!("the nameservers {}", many.join(", ")),
    }
}

/// `mta doctor`
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The mail domain to check (default: every local domain except localhost).
    pub domain: Option<String>,
    /// Print the verdicts as a JSON array of {check, domain, status, detail, record?}.
    #[arg(long)]
    pub json: bool,
    /// An address our mail leaves from (repeat for several); default: the hostname's
    /// A/AAAA records.
    #[arg(long = "ip", value_name = "ADDR")]
    pub ips: Vec<IpAddr>,
}

/// Where our mail leaves from, as far as the checks can know.
pub enum Outbound {
    /// These addresses.
    Known(Vec<IpAddr>),
    /// Through this smarthost (`outbound.relay`), whose addresses are its provider's.
    Smarthost(String),
    /// Not known, and why.
    Unknown(String),
}

/// What every check needs.
pub struct Ctx<'a> {
    /// The effective config.
    pub config: &'a Config,
    /// The resolver.
    pub dns: Dns,
    /// Our hostname (EHLO name), lower case.
    pub hostname: String,
    /// The hostname's A/AAAA records: how an MX host is recognised as this one.
    pub host_ips: Vec<IpAddr>,
    /// Where mail leaves from.
    pub outbound: Outbound,
}

impl Ctx<'_> {
    /// True when `ip` is one of this host's addresses or an outbound address.
    pub fn is_ours(&self, ip: IpAddr) -> bool {
        self.host_ips.contains(&ip)
            || matches!(&self.outbound, Outbound::Known(ips) if ips.contains(&ip))
    }
}

/// Runs the checks and prints the report; the exit code says whether anything failed.
///
/// # Errors
/// A DOMAIN that is not a domain name, a resolver that cannot be built.
pub fn run(args: &DoctorArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let domains: Vec<String> = match &args.domain {
        Some(d) => match Domain::parse(d) {
            Ok(d) if !d.is_literal() => vec![d.to_string()],
            _ => bail!("{d:?} is not a domain name"),
        },
        // The hostname is checked as this host (address, reverse DNS, EHLO SPF, bounce
        // DKIM), not as a mail domain: it is local so that postmaster@ reaches someone, and
        // needs no MX or DMARC of its own. `mta doctor HOSTNAME` checks it as one.
        None => config
            .local_domains
            .iter()
            .map(Domain::to_string)
            .filter(|d| d != "localhost" && d != config.hostname.as_str())
            .collect(),
    };
    let resolver = mta_smtp::relay::mx::resolver(&config.dns.nameservers, IpFamily::Any)
        .map_err(|e| anyhow::anyhow!("DNS: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let dns = Dns::new(MessageAuthenticator(resolver));
    // A resolver that does not answer would make every check wait for its own timeouts and
    // then fail alike: one line that says so instead, within PROBE_TIMEOUT.
    let probe = runtime.block_on(async {
        match tokio::time::timeout(PROBE_TIMEOUT, dns.probe()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        }
    });
    if let Err(why) = probe {
        let servers = nameservers(config);
        let verdict = Verdict::new(
            "dns",
            &config.hostname.to_string(),
            Status::Fail,
            format!(
                "DNS unreachable: {why} from {servers}; nothing else was checked (fix [dns] \
                 nameservers, /etc/resolv.conf or the network, then run mta doctor again)"
            ),
        );
        if args.json {
            print!("{}", report::json(std::slice::from_ref(&verdict)));
        } else {
            print!("{}", report::one(&verdict));
        }
        return Ok(ExitCode::FAILURE);
    }
    let mut notes = Vec::new();
    if let Some(d) = &args.domain
        && !config
            .local_domains
            .iter()
            .any(|l| l.as_str() == domains[0])
    {
        notes.push(Verdict::new(
            "domain",
            &domains[0],
            Status::Warn,
            format!(
                "{d} is not one of local_domains: mta does not receive mail for it; its records \
                 are checked as if mta sent and received its mail"
            ),
        ));
    }
    let (header, mut verdicts) = runtime.block_on(examine(config, dns, &domains, &args.ips));
    notes.append(&mut verdicts);
    let verdicts = notes;
    if args.json {
        print!("{}", report::json(&verdicts));
    } else {
        print!("{}", report::text(&header, &verdicts));
    }
    Ok(if verdicts.iter().any(|v| v.status == Status::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A check, or "could not check" when it took longer than [`CHECK_TIMEOUT`].
async fn bounded<F>(check: &'static str, domain: &str, f: F) -> Vec<Verdict>
where
    F: Future<Output = Vec<Verdict>>,
{
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => vec![checks::unchecked(
            check,
            domain,
            &format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
        )],
    }
}

/// Where mail leaves from, and how that was found out (for the header): the `--ip` flags,
/// else the smarthost, else the hostname's addresses of the families `outbound.ip` uses,
/// and for a family the hostname has no address of, the public source address the kernel
/// picks for it (`routed`, from [`route::sources`]).
fn outbound(
    config: &Config,
    given: &[IpAddr],
    host_ips: &[IpAddr],
    routed: &[IpAddr],
) -> (Outbound, &'static str) {
    if !given.is_empty() {
        return (Outbound::Known(given.to_vec()), "--ip");
    }
    if let Some(relay) = &config.outbound.relay {
        return (Outbound::Smarthost(relay.host.clone()), "smarthost");
    }
    let mut family: Vec<IpAddr> = host_ips
        .iter()
        .copied()
        .filter(|ip| config.outbound.ip.allows(*ip))
        .collect();
    let routed: Vec<IpAddr> = routed
        .iter()
        .copied()
        .filter(|ip| config.outbound.ip.allows(*ip))
        .filter(|ip| !family.iter().any(|h| h.is_ipv4() == ip.is_ipv4()))
        .collect();
    let source = match routed.is_empty() {
        true => "the hostname's A/AAAA",
        false => "the hostname's A/AAAA and the routes' source addresses",
    };
    family.extend(routed);
    if family.is_empty() {
        let why = format!(
            "no outbound address known ({} has none; give them with --ip)",
            config.hostname
        );
        (Outbound::Unknown(why), "unknown")
    } else {
        (Outbound::Known(family), source)
    }
}

/// The report's first line: who we are and where mail leaves from.
fn header(hostname: &str, outbound: &Outbound, source: &str) -> String {
    match outbound {
        Outbound::Known(ips) => {
            let list: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
            format!(
                "mta doctor: hostname {hostname}, outbound {} ({source})",
                list.join(", ")
            )
        }
        Outbound::Smarthost(relay) => {
            format!("mta doctor: hostname {hostname}, outbound through the smarthost {relay}")
        }
        Outbound::Unknown(_) => {
            format!("mta doctor: hostname {hostname}, outbound addresses unknown")
        }
    }
}

/// The checks of one mail domain, run at once, in the report's order.
async fn domain_checks(ctx: &Ctx<'_>, d: &str, hostname: &str) -> Vec<Verdict> {
    let (mx, spf, dkim, dmarc, sts, rpt) = tokio::join!(
        bounded("mx", d, async { vec![checks::mx(ctx, d).await] }),
        bounded("spf", d, async {
            vec![spf::spf(ctx, d, Identity::MailFrom).await]
        }),
        // The hostname as a mail domain mostly sends bounces, which its EHLO SPF covers.
        bounded(
            "dkim",
            d,
            checks::dkim(
                ctx,
                d,
                if d == hostname {
                    Status::Warn
                } else {
                    Status::Fail
                }
            )
        ),
        bounded("dmarc", d, async { vec![checks::dmarc(ctx, d).await] }),
        bounded("mta-sts", d, async { vec![checks::mta_sts(ctx, d).await] }),
        bounded("tls-rpt", d, async { vec![checks::tls_rpt(ctx, d).await] }),
    );
    [mx, spf, dkim, dmarc, sts, rpt].concat()
}

/// All verdicts, host first, then each domain; and the report's header line.
async fn examine(
    config: &Config,
    dns: Dns,
    domains: &[String],
    given: &[IpAddr],
) -> (String, Vec<Verdict>) {
    let hostname = config.hostname.to_string();
    let host_answer = match tokio::time::timeout(CHECK_TIMEOUT, dns.ips(&hostname)).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("address lookup for {hostname} took over a minute")),
    };
    let host_ips = host_answer.clone().unwrap_or_default();
    let routed = route::sources(config.outbound.ip, host::is_public);
    let (outbound, source) = outbound(config, given, &host_ips, &routed);
    let header = header(&hostname, &outbound, source);
    let ctx = Ctx {
        config,
        dns,
        hostname: hostname.clone(),
        host_ips,
        outbound,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));

    let mut verdicts = vec![host::address(&hostname, &host_answer, given)];
    let host_is_domain = domains.contains(&hostname);
    let (ptr, helo_spf, bounce_dkim) = tokio::join!(
        bounded("ptr", &hostname, host::ptr(&ctx)),
        bounded("spf", &hostname, async {
            if host_is_domain {
                Vec::new()
            } else {
                vec![spf::spf(&ctx, &hostname, Identity::Helo).await]
            }
        }),
        bounded("dkim", &hostname, async {
            if host_is_domain {
                Vec::new()
            } else {
                checks::dkim(&ctx, &hostname, Status::Info).await
            }
        }),
    );
    verdicts.extend(ptr);
    verdicts.extend(helo_spf);
    verdicts.extend(bounce_dkim);
    if !acme::covers_hostname(config) {
        verdicts.push(cert::check(config, now));
    }
    verdicts.extend(cert::check_named(config, now));
    verdicts.extend(acme::check(config, now));
    verdicts.extend(
        bounded("tlsa", &hostname, async {
            vec![cert::tlsa(&ctx.dns, config).await]
        })
        .await,
    );
    verdicts.extend(
        bounded("dnssec", &hostname, async {
            vec![host::dnssec(config, &hostname).await]
        })
        .await,
    );

    for domain in domains {
        verdicts.extend(domain_checks(&ctx, domain, &hostname).await);
    }
    (header, verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml("mta.toml", text, "buildhost").unwrap()
    }

    #[test]
    fn outbound_addresses_come_from_ip_flags_smarthost_or_hostname() {
        let v4: IpAddr = "192.0.2.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let plain = config("hostname = \"mx.example.org\"\n");
        let known = |o: Outbound| match o {
            Outbound::Known(ips) => ips,
            _ => panic!("not known"),
        };
        let (o, source) = outbound(&plain, &[], &[v6, v4], &[]);
        assert_eq!((known(o), source), (vec![v6, v4], "the hostname's A/AAAA"));
        let (o, source) = outbound(&plain, &[v4], &[v6], &[]);
        assert_eq!((known(o), source), (vec![v4], "--ip"));
        let only4 = config("hostname = \"mx.example.org\"\n[outbound]\nip = \"ipv4\"\n");
        assert_eq!(known(outbound(&only4, &[], &[v6, v4], &[]).0), vec![v4]);
        let (o, _) = outbound(&only4, &[], &[v6], &[]);
        assert!(matches!(o, Outbound::Unknown(why) if why.contains("--ip")));
        // The kernel's source address stands in for a family the hostname has none of.
        let routed: IpAddr = "192.0.2.99".parse().unwrap();
        let (o, source) = outbound(&only4, &[], &[v6], &[routed, v6]);
        assert_eq!(known(o), vec![routed]);
        assert_eq!(
            source,
            "the hostname's A/AAAA and the routes' source addresses"
        );
        let (o, _) = outbound(&plain, &[], &[v4], &[routed, v6]);
        assert_eq!(known(o), vec![v4, v6]);
        let relay =
            config("hostname = \"mx.example.org\"\n[outbound]\nrelay = \"smtp.example.net:587\"\n");
        let (o, source) = outbound(&relay, &[], &[v4], &[]);
        assert!(matches!(&o, Outbound::Smarthost(h) if h == "smtp.example.net"));
        assert_eq!(
            header("mx.example.org", &o, source),
            "mta doctor: hostname mx.example.org, outbound through the smarthost smtp.example.net"
        );
    }
}
