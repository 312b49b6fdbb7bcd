//! What an operator watches: the Prometheus endpoint after real traffic (parsed line by line),
//! and JSON logs (every line an object) that tell one message's story by its queue id.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mta_tests::{ALICE, MtaBuilder, SmtpClient, TestMta, queue_id, secs, wait_for};

const BOB: &str = "bob@example.test";

/// `GET path` over HTTP/1.1; the status line and the body.
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a blank line after the head");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The samples of an OpenMetrics text: `name{labels}` → value. Panics on a line that is
/// neither a comment nor `name[{labels}] value`.
fn samples(body: &str) -> Vec<(String, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let name_end = key.find('{').unwrap_or(key.len());
            assert!(
                key[..name_end]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad metric name in {l:?}"
            );
            if name_end < key.len() {
                assert!(key.ends_with('}'), "unclosed labels in {l:?}");
            }
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (key.to_string(), value)
        })
        .collect()
}

fn value(samples: &[(String, f64)], key: &str) -> f64 {
    samples
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:?}"))
}

#[test]
fn metrics_are_scraped_after_traffic() {
    let mta =
        TestMta::start("[limits]\nmax_message_size = 2048\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
    mta.add_user(BOB, "bob-password-1");
    mta.add_user(ALICE, "alice-password-1");
    let metrics = mta.listener("metrics");
    // One message accepted, one refused after DATA (too big), one failed AUTH.
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let ok = c.send_message("a@remote.test", &[BOB], b"Subject: ok\r\n\r\nhi\r\n");
    assert_eq!(ok.code, 250);
    let big = format!(
        "Subject: big\r\n\r\n{}",
        format!("{}\r\n", "x".repeat(100)).repeat(30)
    );
    let refused = c.send_message("a@remote.test", &[BOB], big.as_bytes());
    assert_eq!(refused.code, 552, "{refused}");
    let mut s = SmtpClient::connect(mta.submission_addr());
    s.reply("the greeting");
    s.expect("EHLO client.test", 250);
    s.expect("STARTTLS", 220);
    s.upgrade_tls(&mta.cert_path());
    s.expect("EHLO client.test", 250);
    assert_eq!(s.auth_plain(ALICE, "wrong password").code, 535);
    mta.wait_for_mail(BOB, 1, 10);
    mta.wait_for_empty_queue(secs(10));

    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let all = samples(&body);
    assert!(value(&all, "mta_sessions_total{listener=\"smtp\"}") >= 1.0);
    assert_eq!(
        value(&all, "mta_sessions_open{listener=\"smtp\"}"),
        1.0,
        "c is still open"
    );
    assert_eq!(
        value(&all, "mta_messages_accepted_total{listener=\"smtp\"}"),
        1.0
    );
    assert_eq!(
        value(
            &all,
            "mta_messages_rejected_total{listener=\"smtp\",code=\"552\",status=\"5.3.4\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&all, "mta_auth_failures_total{listener=\"submission\"}"),
        1.0
    );
    assert_eq!(
        value(&all, "mta_recipients_total{result=\"delivered\"}"),
        1.0
    );
    assert_eq!(value(&all, "mta_queue_messages"), 0.0);
    drop(c);
    wait_for(secs(10), "the smtp session to be counted closed", || {
        let all = samples(&http_get(metrics, "/metrics").1);
        value(&all, "mta_sessions_open{listener=\"smtp\"}") == 0.0
    });
    assert_eq!(http_get(metrics, "/").0, "HTTP/1.1 404 Not Found");
}

#[test]
fn json_logs_parse_and_tell_a_message_story() {
    let mta = MtaBuilder::new().env("MTA_LOG_FORMAT", "json").start();
    mta.add_user(BOB, "bob-password-1");
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let reply = c.send_message("a@remote.test", &[BOB], b"Subject: story\r\n\r\nhi\r\n");
    let id = queue_id(&reply.to_string());
    mta.wait_for_mail(BOB, 1, 10);
    mta.wait_for_empty_queue(secs(10));
    let events = |log: &str| -> Vec<serde_json::Value> {
        log.lines()
            .filter(|l| !l.starts_with("--- test harness"))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    wait_for(secs(10), "the removal to be logged", || {
        mta.log().contains("done, removed from queue")
    });
    let all = events(&mta.log());
    let story: Vec<&str> = all
        .iter()
        .filter(|e| e.to_string().contains(&id))
        .filter_map(|e| e.get("message").and_then(|m| m.as_str()))
        .collect();
    for step in [
        "queued",
        "received",
        "delivered",
        "done, removed from queue",
    ] {
        assert!(story.contains(&step), "{step} for {id} in {story:?}");
    }
    let received = all
        .iter()
        .find(|e| e.get("message").and_then(|m| m.as_str()) == Some("received"))
        .unwrap();
    assert_eq!(received["msg"], serde_json::json!(id));
    assert_eq!(received["level"], "INFO");
    assert_eq!(received["span"]["listener"], "smtp", "{received}");
}

#[test]
fn queue_gauges_follow_enqueue_delivery_and_delete() {
    let dns = mta_tests::silent_dns::SilentDns::start();
    let mta = MtaBuilder::new()
        .toml(&format!(
            "{}[metrics]\nlisten = \"127.0.0.1:0\"\n",
            dns.config_toml()
        ))
        .start();
    mta.add_user(ALICE, mta_tests::ALICE_PASSWORD);
    mta.add_user(BOB, "bob-password-1");
    let metrics = mta.listener("metrics");
    let queued = |n: f64| {
        wait_for(
            secs(30),
            &format!("{n} queued messages in the metrics"),
            || {
                value(
                    &samples(&http_get(metrics, "/metrics").1),
                    "mta_queue_messages",
                ) == n
            },
        )
    };
    // Three messages for a domain whose DNS never answers stay queued.
    let mut ids = Vec::new();
    for i in 0..3 {
        let subject = format!("stays {i}");
        let msg = mta_tests::relay::message("x@remote.test", &subject);
        ids.push(mta_tests::relay::submit(&mta, &["x@remote.test"], &msg));
    }
    queued(3.0);
    // A local one comes and goes.
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    assert_eq!(
        c.send_message("a@remote.test", &[BOB], b"Subject: hi\r\n\r\nhi\r\n")
            .code,
        250
    );
    mta.wait_for_mail(BOB, 1, 30);
    queued(3.0);
    mta.mta(&["queue", "delete", &ids[0]], b"")
        .assert_success("mta queue delete");
    queued(2.0);
    let all = samples(&http_get(metrics, "/metrics").1);
    assert!(value(&all, "mta_queue_oldest_seconds") < 3600.0);
}

#[test]
fn scrapes_beyond_the_bound_are_turned_away() {
    let mta = TestMta::start("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let metrics = mta.listener("metrics");
    // Four scrapers that connect and say nothing hold every slot (for the 5 s a request
    // may take)...
    let _held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(metrics).expect("connect"))
        .collect();
    // ...so the next one is answered 503 at once.
    let (status, _) = http_get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
}
