//! `Authentication-Results:` fields that arrive claiming our hostname or one of our local
//! domains are removed on every listener ([`crate::server::authres`], RFC 8601 §5), whether
//! the checks run or not: only our own verdict speaks in our name, and a user cannot speak in
//! it either.

use std::sync::Arc;

use mta_core::config::Config;
use mta_core::seams::{
    BoxFuture, FieldRemoval, FilterVerdict, HeaderEdits, MessageFilter, MessageView, SessionFacts,
};

use crate::server::authres::claims_ours;

/// Removes forged `Authentication-Results:` fields.
pub struct OwnResults {
    removal: FieldRemoval,
}

impl OwnResults {
    /// Our names from `config`: the hostname and the local domains.
    pub fn new(config: &Config) -> OwnResults {
        let mut ours = vec![config.hostname.as_str().to_string()];
        ours.extend(config.local_domains.iter().map(|d| d.as_str().to_string()));
        let when = move |value: &[u8]| {
            let names: Vec<&str> = ours.iter().map(String::as_str).collect();
            claims_ours(value, &names)
        };
        OwnResults {
            removal: FieldRemoval {
                name: "Authentication-Results".to_string(),
                when: Some(Arc::new(when)),
            },
        }
    }
}

impl MessageFilter for OwnResults {
    fn name(&self) -> &'static str {
        "own-results"
    }

    fn check<'a>(
        &'a self,
        _session: &'a SessionFacts<'a>,
        _message: &'a MessageView<'a>,
    ) -> BoxFuture<'a, FilterVerdict> {
        let edits = HeaderEdits {
            remove: vec![self.removal.clone()],
            ..HeaderEdits::default()
        };
        Box::pin(async move { FilterVerdict::Accept(edits) })
    }
}
