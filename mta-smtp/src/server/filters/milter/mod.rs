//! The milters of `[[inbound.milter]]` as one stage of a listener's pipeline
//! ([`MessageFilter`]): each message passes them in the order the config lists them, each
//! seeing the data as the ones before it changed it. The whole conversation happens at the end
//! of DATA, so a filter's refusal at any step (a recipient's, too) refuses the message there.
//! A milter that cannot be asked (down, too slow, broken replies) gets its `on_failure`.

pub mod client;
pub mod codec;
pub mod edits;

use std::sync::Arc;

use mta_core::config::{Config, Milter, OnFailure};
use mta_core::reply::Reply;
use mta_core::seams::{
    BoxFuture, FilterVerdict, HeaderEdits, MessageFilter, MessageView, SessionFacts,
};
use tracing::{info, warn};

use client::{Decision, Server};

/// The milters of one listener.
pub struct Milters {
    config: Arc<Config>,
    milters: Vec<Milter>,
}

impl Milters {
    /// The milters of `config` that `wanted` picks for a listener, or `None` when there are
    /// none (the pipeline then has no milter stage).
    pub fn new(config: &Arc<Config>, wanted: fn(&Milter) -> bool) -> Option<Milters> {
        let milters: Vec<Milter> = config
            .inbound
            .milters
            .iter()
            .filter(|m| wanted(m))
            .cloned()
            .collect();
        (!milters.is_empty()).then(|| Milters {
            config: config.clone(),
            milters,
        })
    }

    async fn run(&self, session: &SessionFacts<'_>, message: &MessageView<'_>) -> FilterVerdict {
        let server = Server {
            hostname: self.config.hostname.as_str(),
            max_size: usize::try_from(self.config.limits.max_message_size).unwrap_or(usize::MAX),
            max_edits: self.config.limits.max_headers,
        };
        let mut rewritten: Option<Vec<u8>> = None;
        for milter in &self.milters {
            let view = MessageView {
                data: rewritten.as_deref().unwrap_or(message.data),
                ..*message
            };
            let at = milter.address.to_string();
            match client::ask(milter, server, session, &view).await {
                Ok(Decision::Accept(Some(data))) => rewritten = Some(data),
                Ok(Decision::Accept(None)) => {}
                Ok(Decision::Reject(reply)) => {
                    info!(milter = %at, reply = %reply, "milter rejected the message");
                    return FilterVerdict::Reject(reply);
                }
                Ok(Decision::TempFail(reply)) => {
                    info!(milter = %at, reply = %reply, "milter deferred the message");
                    return FilterVerdict::TempFail(reply);
                }
                Ok(Decision::Discard) => {
                    return FilterVerdict::Discard(format!("milter {at} discarded it"));
                }
                Ok(Decision::Quarantine(reason)) => {
                    // The queue has no hold state: a quarantined message is dropped like a
                    // discarded one, and the reason (printable ASCII) is logged.
                    return FilterVerdict::Discard(format!(
                        "milter {at} quarantined it ({reason}); we hold no quarantine, so dropped"
                    ));
                }
                Err(e) => match milter.on_failure {
                    OnFailure::Tempfail => {
                        warn!(milter = %at, error = %e, "milter failed; deferring the message");
                        return FilterVerdict::TempFail(Reply::FILTER_UNAVAILABLE);
                    }
                    OnFailure::Accept => {
                        warn!(milter = %at, error = %e, "milter failed; accepting unfiltered");
                    }
                },
            }
        }
        FilterVerdict::Accept(HeaderEdits {
            rewritten,
            ..HeaderEdits::default()
        })
    }
}

impl MessageFilter for Milters {
    fn name(&self) -> &'static str {
        "milter"
    }

    fn check<'a>(
        &'a self,
        session: &'a SessionFacts<'a>,
        message: &'a MessageView<'a>,
    ) -> BoxFuture<'a, FilterVerdict> {
        Box::pin(self.run(session, message))
    }
}

#[cfg(test)]
#[path = "seam_tests.rs"]
mod seam_tests;
