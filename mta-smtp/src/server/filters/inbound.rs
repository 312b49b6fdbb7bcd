//! The checks on mail from other servers (the smtp listener, no AUTH): SPF, DKIM and DMARC
//! ([`crate::server::authcheck`]) with our `Authentication-Results:` put in front, and a
//! `From:` (or `Sender:`, `Resent-From:`, `Resent-Sender:`) naming one of our local domains
//! without SPF or DKIM for it marked with `X-Spoofed-From:` or refused
//! ([`crate::server::vouch`]). Configured by `[inbound]`: `checks`, `dmarc_reject`,
//! `spf_reject`, `spoofed_from`. A message from an authenticated user is not checked.

use std::sync::Arc;

use mta_core::config::{Config, SpoofedFrom};
use mta_core::envelope::Vouched;
use mta_core::reply::Reply;
use mta_core::seams::{
    BoxFuture, FilterVerdict, HeaderEdits, MessageFilter, MessageView, SessionFacts,
};
use tracing::warn;

use crate::server::authcheck::{Checker, Verdict};
use crate::server::log_text::escape;
use crate::server::vouch::{Evidence, sender_verified, spoofed_domain};

/// SPF, DKIM, DMARC and spoofed-`From:` checks.
pub struct InboundChecks {
    config: Arc<Config>,
    /// `None` when `[inbound] checks = false`: nothing vouches for any message.
    checker: Option<Arc<Checker>>,
}

impl InboundChecks {
    /// The checks `config` asks for, made by `checker`.
    pub fn new(config: Arc<Config>, checker: Option<Arc<Checker>>) -> InboundChecks {
        InboundChecks { config, checker }
    }

    async fn decide(&self, session: &SessionFacts<'_>, message: &MessageView<'_>) -> FilterVerdict {
        if session.user.is_some() {
            return FilterVerdict::Accept(HeaderEdits::default());
        }
        let (fields, summary, evidence) = match &self.checker {
            None => (String::new(), "-".to_string(), Evidence::default()),
            Some(checker) => {
                let ip = session.peer.ip();
                match checker
                    .check(ip, session.helo, message.from, message.data)
                    .await
                {
                    Verdict::Refuse { reply, summary } => {
                        warn!(
                            from = %escape(&message.from.to_string()),
                            auth = %summary,
                            reply = %reply,
                            "message refused after DATA"
                        );
                        return FilterVerdict::refuse(reply);
                    }
                    Verdict::Accept {
                        fields,
                        summary,
                        evidence,
                    } => (fields, summary, evidence),
                }
            }
        };
        let mark = match self.spoof_mark(message, &evidence, &summary) {
            Ok(mark) => mark,
            Err(reply) => return FilterVerdict::refuse(reply),
        };
        let vouched = if sender_verified(&evidence, message.from) {
            Vouched::SenderVerified
        } else {
            Vouched::Unverified
        };
        FilterVerdict::Accept(HeaderEdits {
            add: fields + &mark,
            vouched: Some(vouched),
            summary: Some(summary),
            ..HeaderEdits::default()
        })
    }

    /// The `X-Spoofed-From:` field for a message whose originator fields name our domain
    /// without SPF or DKIM for it (empty when none does), or the refusal
    /// (`spoofed_from = reject`).
    fn spoof_mark(
        &self,
        message: &MessageView<'_>,
        evidence: &Evidence,
        summary: &str,
    ) -> Result<String, Reply> {
        let action = self.config.inbound.spoofed_from;
        if action == SpoofedFrom::Off {
            return Ok(String::new());
        }
        let Some(domain) = spoofed_domain(message.data, &self.config, evidence) else {
            return Ok(String::new());
        };
        warn!(
            from = %escape(&message.from.to_string()),
            domain = %domain,
            auth = %summary,
            action = action.name(),
            "From: (or Sender:, Resent-From:, Resent-Sender:) names our domain but neither SPF \
             nor DKIM vouches for it"
        );
        if action == SpoofedFrom::Reject {
            return Err(Reply::SPOOFED_OWN_DOMAIN);
        }
        Ok(format!(
            "X-Spoofed-From: {domain} (neither SPF nor DKIM of {domain} passed)\r\n"
        ))
    }
}

impl MessageFilter for InboundChecks {
    fn name(&self) -> &'static str {
        "inbound"
    }

    fn check<'a>(
        &'a self,
        session: &'a SessionFacts<'a>,
        message: &'a MessageView<'a>,
    ) -> BoxFuture<'a, FilterVerdict> {
        Box::pin(self.decide(session, message))
    }
}
