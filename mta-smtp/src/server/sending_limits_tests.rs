//! The limiter against a ledger in memory: caps at MAIL and RCPT, reservations given back,
//! parallel reservations, overrides, holds, and first-time recipients against a reference.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mta_core::address::Address;
use mta_core::config::Config;
use mta_core::sending::MemoryLedger;
use proptest::prelude::*;

use super::*;

fn config(extra: &str) -> Config {
    let text = format!("[limits.sending]\n{extra}");
    Config::from_toml("mta.toml", &text, "mx.example.org").expect("valid config")
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn limiter() -> Arc<SendingLimiter> {
    Arc::new(SendingLimiter::new(Arc::new(MemoryLedger::default()), None))
}

/// Sends one message to `rcpts` as far as the limiter sees it.
fn send(l: &Arc<SendingLimiter>, c: &Config, user: &Address, rcpts: &[&str]) -> Result<(), Limit> {
    let mut slot = l.reserve_message(c, user)?;
    let rcpts: Vec<Address> = rcpts.iter().map(|r| addr(r)).collect();
    for r in &rcpts {
        slot.admit(c, std::slice::from_ref(r))?;
    }
    futures_lite(slot.commit(&rcpts));
    Ok(())
}

/// Runs a future that never waits (the memory ledger's sync is ready at once).
fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn message_caps_refuse_at_the_cap() {
    let c = config("messages_per_hour = 3\n");
    let (l, alice) = (limiter(), addr("alice@example.org"));
    for _ in 0..3 {
        send(&l, &c, &alice, &["bob@remote.test"]).unwrap();
    }
    assert_eq!(send(&l, &c, &alice, &["bob@remote.test"]), Err(Limit::Hour));
    assert!(
        METRICS
            .render()
            .contains("mta_sending_refused_total{limit=\"messages_per_hour\"}"),
        "{}",
        METRICS.render()
    );
    assert_eq!(
        Limit::Hour.reply().to_string(),
        Reply::SENDING_LIMIT.to_string()
    );
    // Another user is not affected.
    send(&l, &c, &addr("carol@example.org"), &["bob@remote.test"]).unwrap();
    let usage = l.usage(&c, &alice).unwrap();
    assert_eq!(usage.counts, [3, 3, 1]);
}

#[test]
fn open_reservations_count_and_are_given_back() {
    let c = config("messages_per_day = 2\n");
    let (l, alice) = (limiter(), addr("alice@example.org"));
    let a = l.reserve_message(&c, &alice).unwrap();
    let b = l.reserve_message(&c, &alice).unwrap();
    // Two transactions open: a third is refused though nothing was sent yet.
    assert_eq!(l.reserve_message(&c, &alice).err(), Some(Limit::Day));
    drop(a);
    let _c = l.reserve_message(&c, &alice).unwrap();
    drop(b);
    assert_eq!(l.usage(&c, &alice).unwrap().counts, [0, 0, 0]);
}

#[test]
fn parallel_reservations_never_pass_the_cap() {
    let c = Arc::new(config("messages_per_hour = 7\n"));
    let l = limiter();
    let alice = addr("alice@example.org");
    let got: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| s.spawn(|| l.reserve_message(&c, &alice).ok()))
            .collect();
        let slots: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        slots.iter().filter(|s| s.is_some()).count()
    });
    assert_eq!(got, 7);
}

#[test]
fn first_time_recipients_and_known_ones() {
    let c = config("first_time_recipients_per_day = 2\n");
    let (l, alice) = (limiter(), addr("alice@example.org"));
    send(&l, &c, &alice, &["a@remote.test", "B@remote.test"]).unwrap();
    // A third new address is refused; known ones (any case of the local part) still pass.
    let mut slot = l.reserve_message(&c, &alice).unwrap();
    assert_eq!(
        slot.admit(&c, &[addr("c@remote.test")]),
        Err(Limit::FirstTime)
    );
    slot.admit(&c, &[addr("b@remote.test")]).unwrap();
    slot.admit(&c, &[addr("a@remote.test")]).unwrap();
}

#[test]
fn user_override_and_zero_for_no_limit() {
    let c = config(
        "messages_per_hour = 1\n[limits.sending.users.\"bulk@example.org\"]\nmessages_per_hour = 0\n",
    );
    let l = limiter();
    for _ in 0..5 {
        send(&l, &c, &addr("bulk@example.org"), &["x@remote.test"]).unwrap();
    }
    send(&l, &c, &addr("alice@example.org"), &["x@remote.test"]).unwrap();
    assert!(send(&l, &c, &addr("alice@example.org"), &["x@remote.test"]).is_err());
}

#[test]
fn hold_refuses_and_release_resumes() {
    let c = config("");
    let (l, alice) = (limiter(), addr("alice@example.org"));
    futures_lite(l.set_held(&alice, true)).unwrap();
    assert_eq!(l.reserve_message(&c, &alice).err(), Some(Limit::Held));
    assert!(l.usage(&c, &alice).unwrap().held);
    futures_lite(l.set_held(&alice, false)).unwrap();
    send(&l, &c, &alice, &["x@remote.test"]).unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    /// A message to these recipients (indices into a small address set).
    Send(Vec<u8>),
    /// Time passes, in hours.
    Wait(u8),
}

proptest! {
    /// The first-time count against a reference that keeps every send with its time: an
    /// address is new when it was not written to in the last 30 days, and new addresses
    /// count in the day window by hour. The cap is off, so every send goes through.
    #[test]
    fn first_time_count_matches_the_model(ops in proptest::collection::vec(
        prop_oneof![
            3 => proptest::collection::vec(0u8..12, 1..4).prop_map(Op::Send),
            1 => (0u8..200).prop_map(Op::Wait),
        ], 0..60)) {
        let mut record = Record::default();
        let mut last: BTreeMap<u8, u64> = BTreeMap::new();
        let mut news: Vec<u64> = Vec::new();
        let mut now = 1_000 * 86_400_000u64;
        for op in ops {
            match op {
                Op::Wait(h) => now += u64::from(h) * 3_600_000,
                Op::Send(rcpts) => {
                    record.settle(now);
                    let mut fresh = 0;
                    let set: BTreeSet<u8> = rcpts.into_iter().collect();
                    for r in &set {
                        let a = addr(&format!("r{r}@remote.test"));
                        if !record.knows(hash(&a)) { fresh += 1; }
                        record.remember(hash(&a), now);
                        let is_new = last.get(r).is_none_or(|&t| t + KNOWN_FOR_MS <= now);
                        if is_new { news.push(now); }
                        last.insert(*r, now);
                    }
                    record.new.add(DAY, now, fresh);
                }
            }
            record.settle(now);
            let model = news.iter().filter(|&&t| t / 3_600_000 + 24 > now / 3_600_000).count();
            prop_assert_eq!(record.new.total() as usize, model);
        }
    }
}
