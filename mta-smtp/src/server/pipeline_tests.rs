//! The pipeline's contract (filters run in order, the first refusal wins and stops it, edits
//! gathered in order and made once) with test filters, the listeners' pipelines as the config
//! builds them, and field removal against a reference model.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use mta_core::address::{Address, ReversePath};
use mta_core::config::Config;
use mta_core::envelope::{ListenerKind, Vouched};
use mta_core::reply::Reply;
use mta_core::seams::{
    BoxFuture, FieldRemoval, FilterVerdict, HeaderEdits, MessageFilter, MessageView, SessionFacts,
};
use proptest::prelude::*;

use super::{Pipeline, Pipelines, remove_fields};
use crate::server::authres::remove_forged;

/// A filter that records that it ran and returns a fixed verdict.
struct Fixed {
    name: &'static str,
    verdict: FilterVerdict,
    ran: Arc<Mutex<Vec<&'static str>>>,
}

impl MessageFilter for Fixed {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check<'a>(
        &'a self,
        _session: &'a SessionFacts<'a>,
        _message: &'a MessageView<'a>,
    ) -> BoxFuture<'a, FilterVerdict> {
        self.ran.lock().unwrap().push(self.name);
        let verdict = self.verdict.clone();
        Box::pin(async move { verdict })
    }
}

fn pipeline(
    filters: Vec<(&'static str, FilterVerdict)>,
) -> (Pipeline, Arc<Mutex<Vec<&'static str>>>) {
    let ran = Arc::new(Mutex::new(Vec::new()));
    let filters = filters
        .into_iter()
        .map(|(name, verdict)| {
            Arc::new(Fixed {
                name,
                verdict,
                ran: ran.clone(),
            }) as Arc<dyn MessageFilter>
        })
        .collect();
    (Pipeline::new(filters), ran)
}

fn add(field: &str) -> FilterVerdict {
    FilterVerdict::Accept(HeaderEdits {
        add: field.to_string(),
        ..HeaderEdits::default()
    })
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

const PEER: &str = "192.0.2.1:40000";

/// Runs `p` on `data` from `<bob@elsewhere.test>` on `listener`, as `user` if given.
fn run(
    p: &Pipeline,
    listener: ListenerKind,
    user: Option<&Address>,
    data: &[u8],
) -> Result<super::Passed, Reply> {
    let from = ReversePath::Address(Address::parse("bob@elsewhere.test").unwrap());
    let facts = SessionFacts {
        listener,
        peer: PEER.parse::<SocketAddr>().unwrap(),
        helo: "client.test",
        user,
    };
    let view = MessageView {
        from: &from,
        recipients: &[],
        data,
    };
    block_on(p.run(&facts, &view))
}

#[test]
fn filters_run_in_order_and_their_fields_are_added_in_order() {
    let (p, ran) = pipeline(vec![
        ("a", add("X-A: 1\r\n")),
        ("b", add("")),
        ("c", add("X-C: 3\r\n")),
    ]);
    let passed = run(&p, ListenerKind::Smtp, None, b"Subject: x\r\n\r\nbody\r\n").unwrap();
    assert_eq!(*ran.lock().unwrap(), ["a", "b", "c"]);
    assert_eq!(passed.add, "X-A: 1\r\nX-C: 3\r\n");
    assert_eq!(passed.summary, "-");
    assert_eq!(passed.vouched, Vouched::Unverified);
}

#[test]
fn the_first_refusal_wins_and_stops_the_pipeline() {
    let rejected = Reply::SPOOFED_OWN_DOMAIN;
    let (p, ran) = pipeline(vec![
        ("a", add("X-A: 1\r\n")),
        ("b", FilterVerdict::Reject(rejected.clone())),
        ("c", FilterVerdict::TempFail(Reply::LOCAL_ERROR)),
    ]);
    assert_eq!(
        run(&p, ListenerKind::Smtp, None, b"\r\n").unwrap_err(),
        rejected
    );
    assert_eq!(*ran.lock().unwrap(), ["a", "b"]);
}

#[test]
fn a_tempfail_answers_with_its_4xx() {
    let (p, ran) = pipeline(vec![
        ("a", FilterVerdict::TempFail(Reply::LOCAL_ERROR)),
        ("b", FilterVerdict::Reject(Reply::SPOOFED_OWN_DOMAIN)),
    ]);
    let refused = run(&p, ListenerKind::Submission, None, b"\r\n").unwrap_err();
    assert_eq!(refused.code / 100, 4);
    assert_eq!(*ran.lock().unwrap(), ["a"]);
    assert!(matches!(
        FilterVerdict::refuse(Reply::LOCAL_ERROR),
        FilterVerdict::TempFail(_)
    ));
    assert!(matches!(
        FilterVerdict::refuse(Reply::SPOOFED_OWN_DOMAIN),
        FilterVerdict::Reject(_)
    ));
}

#[test]
fn removals_vouching_and_summaries_are_gathered_in_order() {
    let remove = |name: &str| FieldRemoval {
        name: name.to_string(),
        when: None,
    };
    let (p, _) = pipeline(vec![
        (
            "a",
            FilterVerdict::Accept(HeaderEdits {
                remove: vec![remove("X-Old")],
                vouched: Some(Vouched::SenderVerified),
                summary: Some("a=1".into()),
                ..HeaderEdits::default()
            }),
        ),
        (
            "b",
            FilterVerdict::Accept(HeaderEdits {
                remove: vec![remove("X-Older")],
                vouched: Some(Vouched::Unverified),
                summary: Some("b=2".into()),
                ..HeaderEdits::default()
            }),
        ),
    ]);
    let passed = run(&p, ListenerKind::Smtp, None, b"\r\n").unwrap();
    let names: Vec<&str> = passed.remove.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["X-Old", "X-Older"]);
    assert_eq!(passed.vouched, Vouched::Unverified);
    assert_eq!(passed.summary, "a=1 b=2");
    let mut data =
        b"X-Old: 1\r\nSubject: s\r\nx-older: 2\r\n\tmore\r\n\r\nX-Old: body\r\n".to_vec();
    assert_eq!(remove_fields(&mut data, &passed.remove), 2);
    assert_eq!(data, b"Subject: s\r\n\r\nX-Old: body\r\n");
}

#[test]
fn with_no_filter_a_user_or_a_submission_listener_vouches() {
    let (p, _) = pipeline(Vec::new());
    let alice = Address::parse("alice@example.org").unwrap();
    let vouched = |l, u| run(&p, l, u, b"\r\n").unwrap().vouched;
    assert_eq!(vouched(ListenerKind::Smtp, None), Vouched::Unverified);
    assert_eq!(vouched(ListenerKind::Smtp, Some(&alice)), Vouched::User);
    assert_eq!(
        vouched(ListenerKind::Submission, Some(&alice)),
        Vouched::User
    );
    assert_eq!(vouched(ListenerKind::Submissions, None), Vouched::User);
}

fn config(extra: &str) -> Arc<Config> {
    let text = format!("hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n{extra}");
    Arc::new(Config::from_toml("t.toml", &text, "x").unwrap())
}

const SPOOFED: &[u8] = b"Authentication-Results: mx.example.org; spf=pass\r\n\
    Authentication-Results: other.test; spf=fail\r\n\
    From: alice@example.org\r\nSubject: s\r\n\r\nbody\r\n";

#[test]
fn the_smtp_listener_marks_a_spoofed_from_and_removes_our_forged_results() {
    let pipelines = Pipelines::new(&config(""), None);
    let passed = run(&pipelines.smtp, ListenerKind::Smtp, None, SPOOFED).unwrap();
    assert_eq!(
        passed.add,
        "X-Spoofed-From: example.org (neither SPF nor DKIM of example.org passed)\r\n"
    );
    assert_eq!(passed.vouched, Vouched::Unverified);
    let mut data = SPOOFED.to_vec();
    assert_eq!(remove_fields(&mut data, &passed.remove), 1);
    assert!(data.starts_with(b"Authentication-Results: other.test;"));

    let rejecting = Pipelines::new(&config("[inbound]\nspoofed_from = \"reject\"\n"), None);
    let refused = run(&rejecting.smtp, ListenerKind::Smtp, None, SPOOFED);
    assert_eq!(refused.unwrap_err(), Reply::SPOOFED_OWN_DOMAIN);
    let off = Pipelines::new(&config("[inbound]\nspoofed_from = \"off\"\n"), None);
    let passed = run(&off.smtp, ListenerKind::Smtp, None, SPOOFED).unwrap();
    assert_eq!(passed.add, "");
}

#[test]
fn submissions_and_users_are_not_checked_but_lose_forged_results() {
    let pipelines = Pipelines::new(&config("[inbound]\nspoofed_from = \"reject\"\n"), None);
    let alice = Address::parse("alice@example.org").unwrap();
    let on_smtp = run(&pipelines.smtp, ListenerKind::Smtp, Some(&alice), SPOOFED);
    let on_587 = run(
        pipelines.of(ListenerKind::Submission),
        ListenerKind::Submission,
        None,
        SPOOFED,
    );
    for passed in [on_smtp.unwrap(), on_587.unwrap()] {
        assert_eq!(passed.add, "");
        assert_eq!(passed.vouched, Vouched::User);
        let mut data = SPOOFED.to_vec();
        assert_eq!(remove_fields(&mut data, &passed.remove), 1);
    }
    // The header checks come first, on every listener.
    let no_from = b"Subject: s\r\n\r\nbody\r\n";
    let refused = run(
        &pipelines.submission,
        ListenerKind::Submission,
        Some(&alice),
        no_from,
    );
    assert_eq!(refused.unwrap_err(), Reply::NO_FROM_HEADER);
}

/// The reference for removing every field called one of `names`: over a header section of
/// whole fields (a name, a colon, a value, continuation lines), the fields kept are those
/// whose name is none of them.
fn reference(fields: &[(String, Vec<String>)], body: &str, names: &[&str]) -> Vec<u8> {
    let mut out = String::new();
    for (line, continuations) in fields {
        let name = line.split(':').next().unwrap().trim_end();
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
        for c in continuations {
            out.push_str(c);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

fn field() -> impl Strategy<Value = (String, Vec<String>)> {
    let name = prop::sample::select(vec![
        "From",
        "x-old",
        "X-OLD",
        "Authentication-Results",
        "Subject",
        "Received",
    ]);
    let value = "[ -9;-~]{0,12}";
    let space = prop::sample::select(vec!["", " ", "\t"]);
    (
        name,
        space,
        value,
        prop::collection::vec("[ \t][!-~]{1,8}", 0..3),
    )
        .prop_map(|(n, s, v, c)| (format!("{n}{s}:{v}"), c))
}

proptest! {
    #[test]
    fn removal_by_name_matches_the_reference(
        fields in prop::collection::vec(field(), 0..8),
        body in "(X-Old: b\r\n|[a-z ]{0,10}\r\n){0,3}",
    ) {
        let mut data = reference(&fields, &body, &[]);
        let removals = [FieldRemoval { name: "X-Old".into(), when: None }];
        remove_fields(&mut data, &removals);
        prop_assert_eq!(data, reference(&fields, &body, &["x-old"]));
    }

    #[test]
    fn forged_results_are_removed_as_before(
        fields in prop::collection::vec(field(), 0..8),
        ids in prop::collection::vec(
            prop::sample::select(vec!["mx.example.org", "Example.ORG.", "other.test", "(c) x", ""]),
            0..4,
        ),
    ) {
        // Mail without a user must name one clear author (else it is refused before any
        // removal); the removal is what is compared here.
        let fields: Vec<_> = fields
            .into_iter()
            .filter(|f| !f.0.to_ascii_lowercase().starts_with("from"))
            .collect();
        let mut data = String::new();
        for id in &ids {
            data.push_str(&format!("Authentication-Results: {id}; spf=pass\r\n"));
        }
        let mut data = data.into_bytes();
        data.extend(reference(&fields, "body\r\n", &[]));
        let own = Pipelines::new(&config(""), None);
        let passed = run(&own.submission, ListenerKind::Submission, None, &data).unwrap();
        let mut before = data.clone();
        let n = remove_forged(&mut before, &["mx.example.org", "example.org"]);
        prop_assert_eq!(remove_fields(&mut data, &passed.remove), n);
        prop_assert_eq!(data, before);
    }
}

/// One generated filter's verdict: accept adding a field, or refuse with this code.
#[derive(Debug, Clone)]
enum Kind {
    Add(String),
    Refuse(u16),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        "X-[A-Z]{1,3}: [a-z]{0,4}\r\n".prop_map(Kind::Add),
        (400u16..600).prop_map(Kind::Refuse),
    ]
}

proptest! {
    /// The pipeline against the obvious model: filters run in order up to and including the
    /// first refusal, whose reply is the answer; with none, the fields in filter order.
    #[test]
    fn the_pipeline_matches_its_model(kinds in prop::collection::vec(kind(), 0..6)) {
        let names: [&'static str; 6] = ["f0", "f1", "f2", "f3", "f4", "f5"];
        let filters = kinds
            .iter()
            .zip(names)
            .map(|(k, name)| {
                let verdict = match k {
                    Kind::Add(field) => add(field),
                    Kind::Refuse(code) => {
                        FilterVerdict::refuse(Reply::new(*code, "4.0.0", format!("by {name}")))
                    }
                };
                (name, verdict)
            })
            .collect();
        let (p, ran) = pipeline(filters);
        let got = run(&p, ListenerKind::Smtp, None, b"\r\n");

        let mut expected_ran = Vec::new();
        let mut expected = Ok(String::new());
        for (k, name) in kinds.iter().zip(names) {
            expected_ran.push(name);
            match k {
                Kind::Add(field) => {
                    if let Ok(fields) = &mut expected {
                        fields.push_str(field);
                    }
                }
                Kind::Refuse(code) => {
                    expected = Err((*code, format!("by {name}")));
                    break;
                }
            }
        }
        prop_assert_eq!(&*ran.lock().unwrap(), &expected_ran);
        match (got, expected) {
            (Ok(passed), Ok(fields)) => prop_assert_eq!(passed.add, fields),
            (Err(reply), Err((code, text))) => {
                prop_assert_eq!(reply.code, code);
                prop_assert_eq!(reply.text.as_ref(), text.as_str());
            }
            (got, expected) => prop_assert!(false, "got {:?}, expected {:?}", got.map(|p| p.add), expected),
        }
    }

    /// A refusal is a tempfail exactly when its code is 4xx.
    #[test]
    fn refusals_are_classed_by_their_code(code in 400u16..600) {
        let verdict = FilterVerdict::refuse(Reply::new(code, "4.0.0", "x"));
        prop_assert_eq!(matches!(verdict, FilterVerdict::TempFail(_)), code / 100 == 4);
    }
}
