//! What the milters need from the pipeline: a filter's rewritten data is what later filters
//! see and what is queued, and a discard answers 250 without running later filters.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use mta_core::address::{Address, ReversePath};
use mta_core::envelope::ListenerKind;
use mta_core::seams::{
    BoxFuture, FilterVerdict, HeaderEdits, MessageFilter, MessageView, SessionFacts,
};

use crate::server::pipeline::{Passed, Pipeline};

/// Records the data it was shown, then returns its verdict.
struct Seen {
    verdict: FilterVerdict,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl MessageFilter for Seen {
    fn name(&self) -> &'static str {
        "seen"
    }

    fn check<'a>(
        &'a self,
        _session: &'a SessionFacts<'a>,
        message: &'a MessageView<'a>,
    ) -> BoxFuture<'a, FilterVerdict> {
        self.seen.lock().unwrap().push(message.data.to_vec());
        let verdict = self.verdict.clone();
        Box::pin(async move { verdict })
    }
}

fn run(
    verdicts: Vec<FilterVerdict>,
    data: &[u8],
) -> (Result<Passed, mta_core::reply::Reply>, Vec<Vec<u8>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let filters = verdicts
        .into_iter()
        .map(|verdict| {
            Arc::new(Seen {
                verdict,
                seen: seen.clone(),
            }) as Arc<dyn MessageFilter>
        })
        .collect();
    let from = ReversePath::Address(Address::parse("bob@elsewhere.test").unwrap());
    let facts = SessionFacts {
        listener: ListenerKind::Smtp,
        peer: "192.0.2.1:40000".parse::<SocketAddr>().unwrap(),
        helo: "client.test",
        user: None,
    };
    let view = MessageView {
        from: &from,
        recipients: &[],
        data,
    };
    let passed = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(Pipeline::new(filters).run(&facts, &view));
    let seen = seen.lock().unwrap().clone();
    (passed, seen)
}

fn rewrite(data: &[u8]) -> FilterVerdict {
    FilterVerdict::Accept(HeaderEdits {
        rewritten: Some(data.to_vec()),
        ..HeaderEdits::default()
    })
}

#[test]
fn later_filters_see_the_rewritten_data_and_it_is_queued() {
    let accept = FilterVerdict::Accept(HeaderEdits::default());
    let (passed, seen) = run(
        vec![
            accept.clone(),
            rewrite(b"A: 2\r\n\r\n"),
            accept,
            rewrite(b"A: 3\r\n\r\n"),
        ],
        b"A: 1\r\n\r\n",
    );
    assert_eq!(
        seen,
        [
            &b"A: 1\r\n\r\n"[..],
            b"A: 1\r\n\r\n",
            b"A: 2\r\n\r\n",
            b"A: 2\r\n\r\n"
        ]
    );
    let passed = passed.unwrap();
    assert_eq!(passed.rewritten.as_deref(), Some(&b"A: 3\r\n\r\n"[..]));
    assert!(passed.discard.is_none());
}

#[test]
fn a_discard_stops_the_pipeline_and_is_not_a_refusal() {
    let (passed, seen) = run(
        vec![
            FilterVerdict::Discard("by test".to_string()),
            FilterVerdict::Reject(mta_core::reply::Reply::FILTER_REJECT),
        ],
        b"\r\n",
    );
    assert_eq!(seen.len(), 1);
    assert_eq!(passed.unwrap().discard.as_deref(), Some("by test"));
}
