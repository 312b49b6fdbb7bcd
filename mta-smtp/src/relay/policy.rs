//! Which TLS an attempt must reach and why ([`PolicySource`]): REQUIRETLS, the operator's
//! `[outbound.tls."domain"]` tables, MTA-STS, the downgrade memory, or opportunistic, in that
//! order (`docs/tls.md`); and the sender's wish from RFC 8689 ([`TlsWish`]).

use std::sync::Arc;

use mta_core::address::Domain;
use mta_core::config::TlsMode;
use mta_core::envelope::Envelope;
use tracing::warn;

use super::{Relay, mta_sts};
use crate::client::{TlsInfo, TlsPolicy, Verification};

/// Where the TLS requirement of an attempt came from; logs and queue results name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// `[outbound.tls."domain"]` (required or none), or the smarthost (always required).
    Configured,
    /// The domain took mail over verified TLS before (`outbound.tls_memory`).
    Memory,
    /// The sender asked for TLS all the way (RFC 8689 REQUIRETLS).
    RequireTls,
    /// The domain's MTA-STS policy says `enforce` (RFC 8461).
    MtaSts,
    /// Nothing asks for more: STARTTLS when offered, any certificate.
    Opportunistic,
}

impl PolicySource {
    /// `configured`, `memory` or `opportunistic`.
    pub fn name(self) -> &'static str {
        match self {
            PolicySource::Configured => "configured",
            PolicySource::Memory => "memory",
            PolicySource::RequireTls => "requiretls",
            PolicySource::MtaSts => "mta-sts",
            PolicySource::Opportunistic => "opportunistic",
        }
    }
}

impl Relay {
    /// The MTA-STS policy of `domain` when one can apply: MTA-STS on, the sender did not
    /// waive it (`TLS-Required: No`) or ask for more (REQUIRETLS), and no `[outbound.tls]`
    /// table of the operator's decides instead.
    pub(super) async fn sts_policy(
        &self,
        domain: &Domain,
        wish: TlsWish,
    ) -> Option<Arc<mta_sts::Policy>> {
        let sts = self.sts.as_ref()?;
        let configured = matches!(
            self.config.outbound.tls.get(domain).map(|t| t.mode),
            Some(TlsMode::Required | TlsMode::None)
        );
        if wish != TlsWish::Default || configured || domain.is_literal() {
            return None;
        }
        sts.policy(domain).await
    }

    /// The TLS policy for MX delivery to `domain` for a message that asks for `wish`, and
    /// where it came from: REQUIRETLS first (verified TLS, whatever else is configured), then
    /// the domain's table when it names one, then an MTA-STS `enforce` policy, then the
    /// downgrade memory (which a sender's `TLS-Required: No` waives, RFC 8689 §5), else
    /// opportunistic.
    pub(super) fn policy_for(
        &self,
        domain: &Domain,
        wish: TlsWish,
        sts: Option<&mta_sts::Policy>,
    ) -> (TlsPolicy, PolicySource) {
        let roots = self
            .domain_roots
            .get(domain)
            .cloned()
            .unwrap_or_else(|| self.webpki.clone());
        if wish == TlsWish::Require {
            return (TlsPolicy::Required { roots }, PolicySource::RequireTls);
        }
        match self.config.outbound.tls.get(domain).map(|t| t.mode) {
            Some(TlsMode::Required) => (TlsPolicy::Required { roots }, PolicySource::Configured),
            Some(TlsMode::None) => (TlsPolicy::Plaintext, PolicySource::Configured),
            _ if sts.is_some_and(|p| p.mode == mta_sts::Mode::Enforce) => {
                (TlsPolicy::Required { roots }, PolicySource::MtaSts)
            }
            _ if wish != TlsWish::Waive && self.memory.remembers(domain) => {
                (TlsPolicy::Required { roots }, PolicySource::Memory)
            }
            _ => (
                TlsPolicy::Opportunistic { roots },
                PolicySource::Opportunistic,
            ),
        }
    }
}

/// MTA-STS `testing` (RFC 8461 §5): deliver as usual, but say when `enforce` would have
/// refused this host.
pub(super) fn sts_testing_report(
    domain: &Domain,
    host: &str,
    policy: &mta_sts::Policy,
    tls: Option<&TlsInfo>,
) {
    let problem = if !policy.allows(host) {
        Some("the MX host does not match the policy".to_string())
    } else {
        match tls {
            None => Some("no TLS".to_string()),
            Some(t) => match &t.verified {
                Verification::Verified => None,
                Verification::Failed(why) => Some(format!("certificate not verified ({why})")),
            },
        }
    };
    if let Some(problem) = problem {
        warn!(%domain, mx = host, %problem, "MTA-STS testing: enforce mode would have refused this delivery");
    }
}

/// What the sender asked of TLS for this message (RFC 8689).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsWish {
    /// `MAIL FROM:<…> REQUIRETLS`: verified TLS to servers that offer REQUIRETLS.
    Require,
    /// A `TLS-Required: No` header (and no REQUIRETLS): recipient-side policies such as the
    /// downgrade memory are waived; the operator's own `[outbound.tls]` tables still apply.
    Waive,
    /// Nothing.
    Default,
}

impl TlsWish {
    pub(super) fn of(envelope: &Envelope, body: &[u8]) -> TlsWish {
        if envelope.require_tls {
            return TlsWish::Require;
        }
        let waived = crate::headers::fields(body).iter().any(|f| {
            f.name.eq_ignore_ascii_case("TLS-Required")
                && crate::headers::unfold(f.value).is_some_and(|v| v.eq_ignore_ascii_case("no"))
        });
        if waived {
            TlsWish::Waive
        } else {
            TlsWish::Default
        }
    }
}

/// The TLS level for the metrics, from [`describe_tls`]'s text.
pub(super) fn tls_level(described: &str) -> &'static str {
    if described.starts_with("plaintext") {
        "none"
    } else if described.contains(" unverified") {
        "unverified"
    } else {
        "verified"
    }
}
