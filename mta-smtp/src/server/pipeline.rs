//! The stages a message passes after the final dot and before it is queued: an ordered list
//! of [`MessageFilter`]s per listener, built from the config when the server starts (and on
//! every reload). Each filter sees the session's facts and the message as the client sent
//! it; the first that refuses decides the reply and no later one runs. When all accept, their
//! header edits are made once, as the message is assembled ([`remove_fields`], then
//! [`super::message::assemble`]).
//!
//! | listener | filters, in order |
//! |---|---|
//! | `smtp` | [`HeaderChecks`], [`OwnResults`], [`InboundChecks`], [`Milters`] |
//! | `submission`, `submissions` | [`HeaderChecks`], [`OwnResults`], [`Milters`] |
//!
//! [`Milters`] is there only when `[[inbound.milter]]` names milters for that listener.

use std::sync::Arc;

use mta_core::config::Config;
use mta_core::envelope::{ListenerKind, Vouched};
use mta_core::reply::Reply;
use mta_core::seams::{FieldRemoval, FilterVerdict, MessageFilter, MessageView, SessionFacts};

use super::authcheck::Checker;
use super::filters::header::HeaderChecks;
use super::filters::inbound::InboundChecks;
use super::filters::milter::Milters;
use super::filters::own_results::OwnResults;
use crate::headers;
use mta_core::text::escape;

/// The filters of one listener, in the order they run.
#[derive(Clone, Default)]
pub struct Pipeline {
    filters: Vec<Arc<dyn MessageFilter>>,
}

/// What the filters of a pipeline that all accepted a message want done with it.
#[derive(Debug, Clone)]
pub struct Passed {
    /// Fields for the top of the message, each filter's in turn.
    pub add: String,
    /// Fields to remove from the client's data.
    pub remove: Vec<FieldRemoval>,
    /// Who vouches for the message.
    pub vouched: Vouched,
    /// The filters' summaries for the log, or `-`.
    pub summary: String,
    /// The client's data as the last filter that rewrote it left it; `None`: unchanged.
    pub rewritten: Option<Vec<u8>>,
    /// Set when a filter discarded the message (its reason): answer 250, queue nothing.
    pub discard: Option<String>,
}

impl Passed {
    /// `None` when a filter discarded the message, which is then logged (answer `250`,
    /// queue nothing); otherwise the edits.
    pub fn unless_discarded(self, message: &MessageView<'_>) -> Option<Passed> {
        let Some(reason) = &self.discard else {
            return Some(self);
        };
        let rcpts: Vec<String> = message.recipients.iter().map(|r| r.to_string()).collect();
        tracing::info!(
            from = %escape(&message.from.to_string()),
            rcpts = %escape(&rcpts.join(",")),
            reason = %escape(reason),
            "discarded by a filter: answered 250, not queued"
        );
        None
    }
}

impl Pipeline {
    /// A pipeline of `filters`, run in this order.
    pub fn new(filters: Vec<Arc<dyn MessageFilter>>) -> Pipeline {
        Pipeline { filters }
    }

    /// Runs the filters in order on one message: the first refusal, or their edits together.
    ///
    /// # Errors
    /// The reply of the first filter that refused.
    pub async fn run(
        &self,
        session: &SessionFacts<'_>,
        message: &MessageView<'_>,
    ) -> Result<Passed, Reply> {
        // Vouched for by a user when one authenticated (or the listener requires it); a
        // filter that checked the message may say more.
        let mut passed = Passed {
            add: String::new(),
            remove: Vec::new(),
            vouched: if session.listener.is_submission() || session.user.is_some() {
                Vouched::User
            } else {
                Vouched::Unverified
            },
            summary: String::new(),
            rewritten: None,
            discard: None,
        };
        for filter in &self.filters {
            // Each filter sees the data as the filters before it rewrote it.
            let view = MessageView {
                data: passed.rewritten.as_deref().unwrap_or(message.data),
                ..*message
            };
            match filter.check(session, &view).await {
                FilterVerdict::Accept(edits) => {
                    if let Some(data) = edits.rewritten {
                        passed.rewritten = Some(data);
                    }
                    passed.add.push_str(&edits.add);
                    passed.remove.extend(edits.remove);
                    if let Some(vouched) = edits.vouched {
                        passed.vouched = vouched;
                    }
                    if let Some(summary) = edits.summary {
                        if !passed.summary.is_empty() {
                            passed.summary.push(' ');
                        }
                        passed.summary.push_str(&summary);
                    }
                }
                FilterVerdict::Reject(reply) | FilterVerdict::TempFail(reply) => {
                    tracing::debug!(filter = filter.name(), reply = %reply, "filter refused");
                    return Err(reply);
                }
                FilterVerdict::Discard(reason) => {
                    tracing::debug!(filter = filter.name(), "filter discarded the message");
                    passed.discard = Some(reason);
                    return Ok(passed);
                }
            }
        }
        if passed.summary.is_empty() {
            passed.summary.push('-');
        }
        Ok(passed)
    }
}

/// The pipeline of each listener.
#[derive(Clone, Default)]
pub struct Pipelines {
    /// Port 25: mail from other servers.
    pub smtp: Pipeline,
    /// Ports 587 and 465: users' submissions.
    pub submission: Pipeline,
}

impl Pipelines {
    /// The pipelines `config` asks for; `checks` runs SPF, DKIM and DMARC on the smtp
    /// listener (`None`: `[inbound] checks = false`).
    pub fn new(config: &Arc<Config>, checks: Option<Arc<Checker>>) -> Pipelines {
        let header: Arc<dyn MessageFilter> = Arc::new(HeaderChecks::new(config.clone()));
        let own: Arc<dyn MessageFilter> = Arc::new(OwnResults::new(config));
        let inbound: Arc<dyn MessageFilter> = Arc::new(InboundChecks::new(config.clone(), checks));
        let mut smtp = vec![header.clone(), own.clone(), inbound];
        let mut submission = vec![header, own];
        let milters = |wanted| Milters::new(config, wanted).map(|m| Arc::new(m) as Arc<_>);
        smtp.extend(milters(|m| m.smtp));
        submission.extend(milters(|m| m.submission));
        Pipelines {
            smtp: Pipeline::new(smtp),
            submission: Pipeline::new(submission),
        }
    }

    /// The pipeline of `listener`.
    pub fn of(&self, listener: ListenerKind) -> &Pipeline {
        match listener {
            ListenerKind::Smtp => &self.smtp,
            ListenerKind::Submission | ListenerKind::Submissions => &self.submission,
        }
    }
}

/// Removes from `data`, in place (it never grows), every header field that one of
/// `removals` names, as a lenient reader finds fields ([`headers::all_fields`]). Returns how
/// many fields were removed.
pub fn remove_fields(data: &mut Vec<u8>, removals: &[FieldRemoval]) -> usize {
    if removals.is_empty() {
        return 0;
    }
    let ranges: Vec<_> = headers::all_fields(data)
        .into_iter()
        .filter(|f| {
            removals.iter().any(|r| {
                f.name.eq_ignore_ascii_case(&r.name) && r.when.as_ref().is_none_or(|w| w(f.value))
            })
        })
        .map(|f| f.range)
        .collect();
    super::authres::remove(data, &ranges);
    ranges.len()
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
