use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

/// The query name as RFC 5782 spells it out: the address's dotted-decimal octets, or its
/// 32 hex nibbles, in reverse order, then the zone and the root.
fn model_name(ip: IpAddr, zone: &str) -> String {
    let labels: Vec<String> = match ip {
        IpAddr::V4(v4) => v4
            .to_string()
            .split('.')
            .rev()
            .map(str::to_string)
            .collect(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => return model_name(IpAddr::V4(v4), zone),
            None => format!("{:032x}", u128::from(v6))
                .chars()
                .rev()
                .map(|c| c.to_string())
                .collect(),
        },
    };
    format!("{}.{zone}.", labels.join("."))
}

#[test]
fn query_names_of_rfc_5782() {
    // RFC 5782 §2.1 and §2.4's own examples.
    let v4: IpAddr = "192.168.2.1".parse().unwrap();
    assert_eq!(
        query_name(v4, "dnsbl.example.com"),
        "1.2.168.192.dnsbl.example.com."
    );
    let v6: IpAddr = "2001:db8:1:2:3:4:567:89ab".parse().unwrap();
    assert_eq!(
        query_name(v6, "ugly.example.com"),
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com."
    );
    // A mapped IPv4 address is asked as IPv4.
    let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
    assert_eq!(query_name(mapped, "zen.test"), "2.0.0.127.zen.test.");
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
        any::<u32>().prop_map(|n| IpAddr::V6(Ipv4Addr::from(n).to_ipv6_mapped())),
    ]
}

/// The model of [`judge`], on plain integers: outside when the top octet is not 127,
/// refused when the top 24 bits are 127.255.255, listed by the first answer a block
/// covers (masking by hand).
fn model_judge(answers: &[Ipv4Addr], returns: &[(u32, u8)]) -> Answer {
    let n: Vec<u32> = answers.iter().map(|a| u32::from(*a)).collect();
    for &x in &n {
        if x >> 24 != 127 {
            return Answer::Outside(Ipv4Addr::from(x));
        }
    }
    for &x in &n {
        if x >> 8 == 0x7f_ff_ff {
            return Answer::Refused(Ipv4Addr::from(x));
        }
    }
    for &x in &n {
        let taken = returns.is_empty()
            || returns.iter().any(|&(net, len)| {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                x & mask == net & mask
            });
        if taken {
            return Answer::Listed(Ipv4Addr::from(x));
        }
    }
    Answer::NotListed
}

/// Answers mostly in 127.0.0.0/8, a few in the refusal block or outside.
fn answer() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        8 => (0u8..8).prop_map(|d| Ipv4Addr::new(127, 0, 0, d)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(c, d)| Ipv4Addr::new(127, 255, c, d)),
        1 => any::<u32>().prop_map(Ipv4Addr::from),
    ]
}

fn block() -> impl Strategy<Value = (u32, u8)> {
    (
        (0u8..8).prop_map(|d| u32::from(Ipv4Addr::new(127, 0, 0, d))),
        8u8..=32,
    )
        .prop_map(|(a, len)| (a & (u32::MAX << (32 - len)), len))
}

proptest! {
    #[test]
    fn query_name_matches_the_model(ip in ip(), zone in "[a-z]{1,10}(\\.[a-z]{1,10}){0,3}") {
        prop_assert_eq!(query_name(ip, &zone), model_name(ip, &zone));
    }

    #[test]
    fn judge_matches_the_model(
        answers in proptest::collection::vec(answer(), 0..4),
        returns in proptest::collection::vec(block(), 0..3),
    ) {
        let nets: Vec<Ipv4Net> = returns
            .iter()
            .map(|&(a, len)| Ipv4Net::new(Ipv4Addr::from(a), len).unwrap())
            .collect();
        prop_assert_eq!(judge(&answers, &nets), model_judge(&answers, &returns));
    }
}

#[test]
fn refusal_codes_and_outside_answers_never_list() {
    let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    for code in ["127.255.255.252", "127.255.255.254", "127.255.255.255"] {
        assert_eq!(judge(&[a(code)], &[]), Answer::Refused(a(code)));
        // Not even beside a listing.
        assert_eq!(
            judge(&[a("127.0.0.2"), a(code)], &[]),
            Answer::Refused(a(code))
        );
    }
    assert_eq!(
        judge(&[a("192.0.2.1")], &[]),
        Answer::Outside(a("192.0.2.1"))
    );
    assert_eq!(
        judge(&[a("127.0.0.2")], &[]),
        Answer::Listed(a("127.0.0.2"))
    );
    let only_4 = ["127.0.0.4/30".parse().unwrap()];
    assert_eq!(judge(&[a("127.0.0.2")], &only_4), Answer::NotListed);
    assert_eq!(
        judge(&[a("127.0.0.7")], &only_4),
        Answer::Listed(a("127.0.0.7"))
    );
}

#[test]
fn the_refusal_is_one_printable_line() {
    let f = Finding {
        zone: "zen.test".into(),
        weight: 1,
        answer: Answer::Listed(Ipv4Addr::new(127, 0, 0, 2)),
        txt: Some(format!("see\r\nhttp://x/\u{7}é{}", "y".repeat(1000))),
    };
    let r = refusal("192.0.2.1".parse().unwrap(), &[&f]);
    assert_eq!((r.code, r.enhanced), (554, Some("5.7.1")));
    assert!(
        r.text
            .starts_with("Client [192.0.2.1] listed by zen.test: see??http://x/??yyy")
    );
    assert!(r.text.chars().all(|c| c == ' ' || c.is_ascii_graphic()));
    assert!(r.to_wire().len() <= 512, "{}", r.to_wire().len());
}

fn empty_lists() -> Blocklists {
    Blocklists {
        config: Dnsbl::default(),
        resolver: None,
        cache: Mutex::default(),
        logged: Mutex::default(),
    }
}

fn nth(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n as u32))
}

#[test]
fn kept_answers_are_bounded_in_number_and_time() {
    let lists = empty_lists();
    // A TTL of ten hours is kept for one.
    lists.keep(nth(0), &[], Duration::from_secs(36_000));
    let until = lists.cache.lock().unwrap()[&nth(0)].until;
    assert!(until <= Instant::now() + MAX_TTL);
    // Full of answers still good: a new address is not kept, a kept one is renewed.
    for n in 1..MAX_CACHED {
        lists.keep(nth(n), &[], MAX_TTL);
    }
    lists.keep(nth(MAX_CACHED), &[], MAX_TTL);
    assert_eq!(lists.cache.lock().unwrap().len(), MAX_CACHED);
    assert!(!lists.cache.lock().unwrap().contains_key(&nth(MAX_CACHED)));
    lists.keep(nth(5), &[], MAX_TTL);
    assert_eq!(lists.cache.lock().unwrap().len(), MAX_CACHED);
    // Answers past their time make room.
    for n in 0..10 {
        lists.cache.lock().unwrap().get_mut(&nth(n)).unwrap().until = Instant::now();
    }
    lists.keep(nth(MAX_CACHED), &[], MAX_TTL);
    let cache = lists.cache.lock().unwrap();
    assert!(cache.contains_key(&nth(MAX_CACHED)));
    assert!(cache.len() <= MAX_CACHED - 9, "{}", cache.len());
}

#[tokio::test]
async fn without_a_resolver_nobody_is_listed() {
    assert_eq!(empty_lists().check(nth(1)).await, Standing::Clear);
}
