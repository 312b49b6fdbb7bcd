//! SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489) checks on mail from other servers, by
//! mail-auth over the same resolver configuration as delivery, made after the final dot. The
//! results become one `Authentication-Results:` field (RFC 8601) with our hostname as
//! authserv-id, and `[inbound]` decides what is refused:
//!
//! - DMARC `fail` where the `From:` domain says `p=reject`: `550 5.7.1` (`dmarc_reject`);
//!   `p=quarantine` (or `p=reject` with `dmarc_reject` off): delivered with `X-Spam-Flag: YES`.
//! - SPF `fail`: `550 5.7.23` (`spf_reject`, off by default).
//! - A DNS failure never makes a permanent refusal: when a policy that is on needs the answer,
//!   `451 4.7.1` (DMARC) or `451 4.7.24` (SPF, RFC 7372), and the client tries again.
//!
//! Fields that arrive claiming our authserv-id are removed ([`super::authres`]), so only our
//! own verdict carries our name.

use std::net::IpAddr;
use std::time::Duration;

use mail_auth::dkim::DkimError;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput, DmarcResult,
    Error, MessageAuthenticator, SpfOutput, SpfResult,
};
use mta_core::address::ReversePath;
use mta_core::config::{Config, Inbound, IpFamily};
use mta_core::reply::Reply;

use super::spf_void;
use super::vouch::{Evidence, aligned};

/// All checks of one message together may take this long; then the message is treated as if
/// DNS had failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the checks; built once when the server starts.
pub struct Checker {
    auth: MessageAuthenticator,
    hostname: String,
    policy: Inbound,
    /// Where DMARC results are counted for our reports (`[dmarc_reports.send]`), when on.
    recorder: Option<std::sync::Arc<crate::dmarc_send::Recorder>>,
}

/// What the checks decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept, with these fields (each ending in CRLF) put in front of the message.
    Accept {
        /// `Authentication-Results:`, and `X-Spam-Flag:` for a quarantined message.
        fields: String,
        /// `spf=… dkim=… dmarc=…` for the log.
        summary: String,
        /// What passed, for the decisions made after the checks ([`super::vouch`]).
        evidence: Evidence,
    },
    /// Refuse with this reply.
    Refuse {
        /// `550` or `451`.
        reply: Reply,
        /// `spf=… dkim=… dmarc=…` for the log.
        summary: String,
    },
}

impl Verdict {
    /// What a DMARC aggregate report says was done with the message: refused (`550`) is
    /// `reject`, marked as spam `quarantine`, else `none`; `None` for a message deferred
    /// (`451`), counted when it comes back.
    fn dmarc_disposition(&self) -> Option<mail_auth::report::ActionDisposition> {
        use mail_auth::report::ActionDisposition;
        Some(match self {
            Verdict::Refuse { reply, .. } if reply.is_permanent() => ActionDisposition::Reject,
            Verdict::Refuse { .. } => return None,
            Verdict::Accept { fields, .. } if fields.contains("\r\nX-Spam-Flag: YES\r\n") => {
                ActionDisposition::Quarantine
            }
            Verdict::Accept { .. } => ActionDisposition::None,
        })
    }
}

/// The message's sender as SPF and the header want it: the address, or empty for `<>`.
fn sender_text(from: &ReversePath) -> String {
    from.address().map(|a| a.to_string()).unwrap_or_default()
}

impl Checker {
    /// A checker resolving through `[dns] nameservers` (or the system resolver).
    ///
    /// # Errors
    /// The resolver could not be built.
    pub fn new(config: &Config) -> Result<Checker, String> {
        let resolver = crate::relay::mx::resolver(&config.dns.nameservers, IpFamily::Any)?;
        Ok(Checker {
            auth: MessageAuthenticator(resolver),
            hostname: config.hostname.to_string(),
            policy: config.inbound.clone(),
            recorder: None,
        })
    }

    /// The checker, counting each message's DMARC result in `recorder` when that is given.
    #[must_use]
    pub fn recording(
        mut self,
        recorder: Option<std::sync::Arc<crate::dmarc_send::Recorder>>,
    ) -> Self {
        self.recorder = recorder;
        self
    }

    /// Checks one message from `ip`, which said `helo` and `MAIL FROM:<from>`.
    pub async fn check(&self, ip: IpAddr, helo: &str, from: &ReversePath, data: &[u8]) -> Verdict {
        match tokio::time::timeout(CHECK_TIMEOUT, self.run(ip, helo, from, data)).await {
            Ok(verdict) => verdict,
            Err(_) => {
                let summary = "timed out".to_string();
                if self.policy.dmarc_reject || self.policy.spf_reject {
                    let reply = Reply::new(
                        451,
                        "4.7.1",
                        "Authentication checks timed out, try again later",
                    );
                    return Verdict::Refuse { reply, summary };
                }
                let fields = format!(
                    "Authentication-Results: {}; none (checks timed out)\r\n",
                    self.hostname
                );
                let evidence = Evidence::default();
                Verdict::Accept {
                    fields,
                    summary,
                    evidence,
                }
            }
        }
    }

    async fn run(&self, ip: IpAddr, helo: &str, from: &ReversePath, data: &[u8]) -> Verdict {
        let sender = sender_text(from);
        let spf = spf_void::verify_spf(&self.auth, ip, helo, &self.hostname, &sender).await;
        let mut message = AuthenticatedMessage::parse(data);
        if let Some(m) = &mut message {
            let from = m.from.first().map(String::as_str).unwrap_or("");
            let skipped = keep_signatures(&mut m.dkim_headers, from, MAX_SIGNATURES);
            if skipped > 0 {
                tracing::info!(
                    skipped,
                    verified = MAX_SIGNATURES,
                    "too many DKIM signatures; only the first aligned with From: are verified"
                );
            }
        }
        let dkim: Vec<DkimOutput<'_>> = match &message {
            Some(m) => self.auth.verify_dkim(m).await,
            None => Vec::new(),
        };
        // DMARC's SPF identity is the MAIL FROM domain, or the HELO name for `<>`.
        let spf_domain = from
            .address()
            .map(|a| a.domain().to_string())
            .unwrap_or_else(|| helo.to_ascii_lowercase());
        let dmarc = match &message {
            Some(m) => Some(
                self.auth
                    .verify_dmarc(DmarcParameters::new(m, &dkim, &spf_domain, &spf))
                    .await,
            ),
            None => None,
        };
        let outputs = Outputs {
            spf: &spf,
            dkim: &dkim,
            dmarc: dmarc.as_ref(),
        };
        let verdict = self.decide(&outputs, ip, &sender, helo);
        if let (Some(recorder), Some(dmarc), Some(disposition)) =
            (&self.recorder, &dmarc, verdict.dmarc_disposition())
        {
            crate::dmarc_send::record_verdict(
                recorder,
                disposition,
                ip,
                &spf_domain,
                &spf,
                &dkim,
                dmarc,
            );
        }
        verdict
    }

    /// The verdict on what the checks found: the refusal the policies ask for, or our fields.
    fn decide(&self, out: &Outputs<'_, '_>, ip: IpAddr, sender: &str, helo: &str) -> Verdict {
        let summary = out.summary();
        if out.spf.result() == SpfResult::TempError
            || matches!(out.dmarc_result(), DmarcResult::TempError(_))
        {
            mta_core::metrics::METRICS.dns_error("inbound");
        }
        if let Some(refusal) = self.refusal(out, &summary) {
            return refusal;
        }
        let mut fields = format!(
            "Authentication-Results: {}\r\n",
            out.results(&self.hostname, ip, sender, helo)
        );
        let dmarc_failed = matches!(out.dmarc_result(), DmarcResult::Fail(_));
        if dmarc_failed && matches!(out.policy(), Policy::Quarantine | Policy::Reject) {
            fields.push_str("X-Spam-Flag: YES\r\n");
        }
        let evidence = Evidence {
            spf_pass: (out.spf.result() == SpfResult::Pass).then(|| out.spf.domain().to_string()),
            dkim_pass: out
                .dkim
                .iter()
                .filter(|o| o.result() == &DkimResult::Pass)
                .filter_map(|o| o.signature().map(|s| s.d.clone()))
                .collect(),
        };
        Verdict::Accept {
            fields,
            summary,
            evidence,
        }
    }

    /// What the policies refuse, most certain first; `None` when they refuse nothing.
    fn refusal(&self, out: &Outputs<'_, '_>, summary: &str) -> Option<Verdict> {
        let summary = summary.to_string();
        let spf = out.spf;
        if self.policy.spf_reject {
            match spf.result() {
                SpfResult::Fail => {
                    let text = format!("SPF of {} does not allow this host to send", spf.domain());
                    return Some(refuse(550, "5.7.23", text, summary));
                }
                SpfResult::TempError => {
                    let text = format!(
                        "SPF of {} could not be checked (DNS), try again later",
                        spf.domain()
                    );
                    return Some(refuse(451, "4.7.24", text, summary));
                }
                _ => {}
            }
        }
        if !self.policy.dmarc_reject {
            return None;
        }
        let domain = out
            .dmarc
            .map(|d| d.domain().to_string())
            .unwrap_or_default();
        let policy = out.policy();
        let dkim_unsure = out
            .dkim
            .iter()
            .any(|o| matches!(o.result(), DkimResult::TempError(_)));
        // The policy could not be read, or it says reject and the failure may be DNS's.
        let unsure = match out.dmarc_result() {
            DmarcResult::TempError(_) => policy != Policy::None && policy != Policy::Quarantine,
            DmarcResult::Fail(_) => dkim_unsure && policy == Policy::Reject,
            _ => false,
        };
        if unsure {
            let text = format!("DMARC of {domain} could not be checked (DNS), try again later");
            return Some(refuse(451, "4.7.1", text, summary));
        }
        if matches!(out.dmarc_result(), DmarcResult::Fail(_)) && policy == Policy::Reject {
            let text = format!("Message refused: it fails the DMARC policy (p=reject) of {domain}");
            return Some(refuse(550, "5.7.1", text, summary));
        }
        None
    }
}

/// What SPF, DKIM and DMARC found for one message.
struct Outputs<'a, 'm> {
    spf: &'a SpfOutput,
    dkim: &'a [DkimOutput<'m>],
    /// `None` when the message could not be parsed.
    dmarc: Option<&'a DmarcOutput>,
}

impl Outputs<'_, '_> {
    fn dmarc_result(&self) -> DmarcResult {
        self.dmarc.map_or(DmarcResult::None, DmarcOutput::result)
    }

    /// The `From:` domain's DMARC policy; unspecified when no record was read (none
    /// published, or the lookup failed).
    fn policy(&self) -> Policy {
        match self.dmarc {
            Some(d) if d.dmarc_record().is_some() => d.policy(),
            _ => Policy::Unspecified,
        }
    }

    /// The value of our `Authentication-Results:` field (RFC 8601).
    fn results(&self, hostname: &str, ip: IpAddr, sender: &str, helo: &str) -> String {
        let mut results = AuthenticationResults::new(hostname)
            .with_spf_mailfrom_result(self.spf, ip, sender, helo)
            .to_string();
        if self.dkim.is_empty() {
            results.push_str(";\r\n\tdkim=none");
        }
        for output in self.dkim {
            results.push_str(&dkim_part(output));
        }
        match self.dmarc {
            Some(d) if !d.domain().is_empty() => {
                results += &AuthenticationResults::new("")
                    .with_dmarc_result(d)
                    .to_string();
            }
            _ => results.push_str(";\r\n\tdmarc=none"),
        }
        results
    }

    /// `spf=… dkim=… dmarc=… p=…` for the log.
    fn summary(&self) -> String {
        format!(
            "spf={} dkim={} dmarc={}{}",
            spf_word(self.spf.result()),
            dkim_word(self.dkim),
            dmarc_word(&self.dmarc_result()),
            match self.policy() {
                Policy::Reject => " p=reject",
                Policy::Quarantine => " p=quarantine",
                Policy::None => " p=none",
                Policy::Unspecified => "",
            }
        )
    }
}

/// Verify at most this many DKIM signatures of one message (OpenDKIM's default too): each
/// costs a DNS query for a name the sender chose, and a message can carry hundreds.
pub const MAX_SIGNATURES: usize = 3;

/// Keeps the first `max` signatures, those whose `d=` is aligned with the `From:` domain
/// first (they are the ones DMARC needs), in their order otherwise; how many were dropped.
pub fn keep_signatures<T: SignatureDomain>(
    signatures: &mut Vec<T>,
    from: &str,
    max: usize,
) -> usize {
    let from_domain = from.rsplit_once('@').map_or("", |(_, d)| d);
    // A stable sort: aligned ones first, each group in message order.
    signatures.sort_by_key(|s| !aligned(s.domain(), from_domain));
    let dropped = signatures.len().saturating_sub(max);
    signatures.truncate(max);
    dropped
}

/// The `d=` of a parsed signature (a trait so that [`keep_signatures`] can be tested alone).
pub trait SignatureDomain {
    /// The signing domain.
    fn domain(&self) -> &str;
}

impl SignatureDomain for mail_auth::common::headers::Header<'_, mail_auth::dkim::Signature> {
    fn domain(&self) -> &str {
        &self.header.d
    }
}

fn refuse(code: u16, status: &'static str, text: String, summary: String) -> Verdict {
    Verdict::Refuse {
        reply: Reply::new(code, status, text),
        summary,
    }
}

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_word(outputs: &[DkimOutput<'_>]) -> String {
    if outputs.is_empty() {
        return "none".to_string();
    }
    let words: Vec<&str> = outputs.iter().map(|o| dkim_verdict(o.result()).0).collect();
    words.join(",")
}

/// The RFC 8601 §2.7.1 result of one signature and why. mail-auth calls a body that no
/// longer matches its hash `neutral`; the RFC's word for a signature that does not verify is
/// `fail`, which is what readers act on.
fn dkim_verdict(result: &DkimResult) -> (&'static str, Option<String>) {
    match result {
        DkimResult::Pass => ("pass", None),
        DkimResult::Neutral(Error::Dkim(DkimError::FailedBodyHashMatch)) => {
            ("fail", Some("body hash did not verify".into()))
        }
        DkimResult::Neutral(e) => ("neutral", Some(e.to_string())),
        DkimResult::Fail(e) => ("fail", Some(e.to_string())),
        DkimResult::PermError(e) => ("permerror", Some(e.to_string())),
        DkimResult::TempError(e) => ("temperror", Some(e.to_string())),
        DkimResult::None => ("none", None),
    }
}

/// `;\r\n\tdkim=RESULT (reason) header.d=… header.s=… header.b=…` for one signature.
fn dkim_part(output: &DkimOutput<'_>) -> String {
    use base64::Engine as _;
    let (word, reason) = dkim_verdict(output.result());
    let mut part = format!(";\r\n\tdkim={word}");
    if let Some(reason) = reason {
        // A comment may not hold unbalanced parentheses or line breaks.
        let clean: String = reason
            .chars()
            .filter(|c| !matches!(c, '(' | ')' | '\\') && !c.is_control())
            .collect();
        part.push_str(&format!(" ({clean})"));
    }
    if let Some(sig) = output.signature() {
        let printable = |t: &str| t.chars().all(|c| c.is_ascii_graphic() && c != ';');
        if printable(&sig.d) && printable(&sig.s) {
            part.push_str(&format!(" header.d={} header.s={}", sig.d, sig.s));
        }
        let b = base64::engine::general_purpose::STANDARD.encode(&sig.b);
        if let Some(prefix) = b.get(..8) {
            part.push_str(&format!(" header.b={prefix}"));
        }
    }
    part
}

fn dmarc_word(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl SignatureDomain for (&str, usize) {
        fn domain(&self) -> &str {
            self.0
        }
    }

    #[test]
    fn at_most_three_signatures_aligned_first() {
        let mut sigs: Vec<(&str, usize)> = (0..900).map(|i| ("junk.test", i)).collect();
        sigs.insert(500, ("example.org", 9000));
        sigs.insert(700, ("mail.example.org", 9001));
        let dropped = keep_signatures(&mut sigs, "ceo@Example.org", MAX_SIGNATURES);
        assert_eq!(dropped, 899);
        assert_eq!(
            sigs,
            [
                ("example.org", 9000),
                ("mail.example.org", 9001),
                ("junk.test", 0)
            ]
        );
        let mut few = vec![("a.test", 1), ("b.test", 2)];
        assert_eq!(keep_signatures(&mut few, "x@c.test", MAX_SIGNATURES), 0);
        assert_eq!(few, [("a.test", 1), ("b.test", 2)]);
    }
}
