//! The header section's limits and, for an authenticated user, its originator fields
//! ([`crate::server::inspect`]), as the first filter of every listener. Configured by
//! `[limits]` (`max_header_size`, `max_headers`, `max_received`).

use std::sync::Arc;

use mta_core::config::Config;
use mta_core::seams::{
    BoxFuture, FilterVerdict, HeaderEdits, MessageFilter, MessageView, SessionFacts,
};
use tracing::warn;

use crate::server::inspect;
use crate::server::log_text::escape;

/// Refuses a message whose header section is too large, loops, or (from a user) names
/// someone else as its author.
pub struct HeaderChecks {
    config: Arc<Config>,
}

impl HeaderChecks {
    /// The checks with `config`'s limits.
    pub fn new(config: Arc<Config>) -> HeaderChecks {
        HeaderChecks { config }
    }
}

impl MessageFilter for HeaderChecks {
    fn name(&self) -> &'static str {
        "header"
    }

    fn check<'a>(
        &'a self,
        session: &'a SessionFacts<'a>,
        message: &'a MessageView<'a>,
    ) -> BoxFuture<'a, FilterVerdict> {
        Box::pin(async move {
            match inspect::check(message.data, &self.config, session.user) {
                Ok(()) => FilterVerdict::Accept(HeaderEdits::default()),
                Err(reply) => {
                    warn!(
                        from = %escape(&message.from.to_string()),
                        user = %escape(&session.user.map(|u| u.to_string()).unwrap_or_default()),
                        reply = %reply,
                        "message refused after DATA"
                    );
                    FilterVerdict::refuse(reply)
                }
            }
        })
    }
}
