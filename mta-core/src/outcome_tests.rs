use proptest::prelude::*;

use super::*;

fn relay(verdict: Verdict, code: u16, enhanced: &str, text: &str) -> Outcome {
    Outcome::status(verdict, enhanced, text)
        .with_code(code)
        .with_remote(Remote {
            host: Some("mx.example.org".into()),
            at: "mx.example.org [192.0.2.1] TLSv1.3 policy=mta-sts".into(),
        })
}

#[test]
fn display_is_the_text_kept_before_outcomes_were_typed() {
    let failed = relay(Verdict::Failed, 550, "5.1.1", "no such user");
    assert_eq!(
        failed.to_string(),
        "550 5.1.1 no such user (from mx.example.org [192.0.2.1] TLSv1.3 policy=mta-sts)"
    );
    let delivered = relay(Verdict::Delivered, 250, "2.0.0", "ok");
    assert_eq!(
        delivered.to_string(),
        "mx.example.org [192.0.2.1] TLSv1.3 policy=mta-sts: 250 2.0.0 ok"
    );
    assert_eq!(
        Outcome::failed("5.1.2", "no such domain").to_string(),
        "5.1.2 no such domain"
    );
    assert_eq!(
        Outcome::new(Verdict::Delivered, "maildir /m/new/1").to_string(),
        "maildir /m/new/1"
    );
    assert_eq!(failed.answer(), "550 5.1.1 no such user");
}

#[test]
fn old_texts_read_back_typed() {
    let old = "550 5.1.1 no such user (from mx.example.org [192.0.2.1] TLSv1.3 policy=mta-sts)";
    assert_eq!(
        Outcome::from_text(Verdict::Failed, old),
        relay(Verdict::Failed, 550, "5.1.1", "no such user")
    );
    // A status code in the prose is not the status (RFC 2034 §4 puts it first).
    let prose = Outcome::from_text(Verdict::Deferred, "451 try later, not 5.1.1");
    assert_eq!((prose.code, prose.enhanced.as_deref()), (Some(451), None));
    // Nor is one of another class than the reply code.
    let mixed = Outcome::from_text(Verdict::Deferred, "451 5.1.1 odd");
    assert_eq!((mixed.code, mixed.enhanced.as_deref()), (Some(451), None));
    let lmtp = Outcome::from_text(Verdict::Deferred, "452 4.2.2 full (from lmtp 127.0.0.1:24)");
    let remote = lmtp.remote.expect("remote");
    assert_eq!(
        (remote.host, remote.at.as_str()),
        (None, "lmtp 127.0.0.1:24")
    );
    let ours = Outcome::from_text(Verdict::Failed, "5.1.10 x.test does not accept mail");
    assert_eq!(
        ours,
        Outcome::failed("5.1.10", "x.test does not accept mail")
    );
}

/// Texts as delivery wrote them before outcomes were typed: an optional reply code, an
/// optional status code, prose (which may hold codes and parentheses), and an optional
/// `(from …)`.
fn old_text() -> impl Strategy<Value = (Verdict, String)> {
    let verdict = prop_oneof![
        Just(Verdict::Delivered),
        Just(Verdict::Deferred),
        Just(Verdict::Failed)
    ];
    let code = prop::option::of(prop_oneof![
        Just("250"),
        Just("451"),
        Just("550"),
        Just("5x0")
    ]);
    let status = prop::option::of(prop_oneof![
        Just("2.0.0"),
        Just("4.4.1"),
        Just("5.1.1"),
        Just("5.1.10"),
        Just("5.1"),
        Just("6.1.1")
    ]);
    let word = prop_oneof![
        Just("no".to_string()),
        Just("user".to_string()),
        Just("5.1.1".to_string()),
        Just("451".to_string()),
        Just("(x)".to_string()),
        Just("(from".to_string()),
        Just("a)".to_string()),
        "[a-z]{1,4}",
    ];
    let prose = prop::collection::vec(word, 1..5).prop_map(|w| w.join(" "));
    let from = prop::option::of(prop_oneof![
        Just("mx.test [192.0.2.1] TLSv1.3"),
        Just("lmtp 127.0.0.1:24"),
        Just("h"),
    ]);
    (verdict, code, status, prose, from).prop_map(|(v, code, status, prose, from)| {
        let mut parts: Vec<&str> = Vec::new();
        parts.extend(code);
        parts.extend(status);
        parts.push(&prose);
        let mut text = parts.join(" ");
        if let Some(at) = from {
            text.push_str(&format!(" (from {at})"));
        }
        (v, text)
    })
}

proptest! {
    /// Reading an old text and showing it again gives the same text: `mta queue` shows
    /// what it showed before.
    #[test]
    fn old_text_shows_as_before((verdict, text) in old_text()) {
        prop_assert_eq!(Outcome::from_text(verdict, &text).to_string(), text);
    }

    /// A typed outcome survives being shown and read back, whenever its parts keep
    /// their place (its text does not itself start like a code).
    #[test]
    fn typed_outcome_reads_back(
        verdict in prop_oneof![Just(Verdict::Deferred), Just(Verdict::Failed)],
        code in prop::option::of(prop_oneof![Just(451u16), Just(550u16)]),
        enhanced in prop::option::of(prop_oneof![Just("4.4.1"), Just("5.7.1"), Just("5.1.10")]),
        text in "[a-z][a-z ()]{0,12}",
        at in prop::option::of(prop_oneof![Just("mx.test [192.0.2.1] TLSv1.3"), Just("lmtp /run/lmtp")]),
    ) {
        // What RFC 2034 allows: a status of the reply code's class.
        let enhanced = enhanced.filter(|e| code.is_none_or(|c| e.as_bytes()[0] == c.to_string().as_bytes()[0]));
        let o = Outcome {
            verdict,
            code,
            enhanced: enhanced.map(str::to_string),
            remote: at.map(|at| Remote {
                host: at.split(' ').next().filter(|h| *h != "lmtp").map(str::to_string),
                at: at.to_string(),
            }),
            text: text.trim_end().to_string(),
            dsn_passed: false,
        };
        prop_assume!(o.remote.is_some() || !o.text.ends_with(')'));
        prop_assume!(o.code.is_some() || o.enhanced.is_some() || !o.text.is_empty());
        prop_assert_eq!(Outcome::from_text(verdict, &o.to_string()), o);
    }
}
