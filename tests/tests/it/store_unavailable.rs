//! A queue store that cannot be read is an error, never an empty queue: `mta queue list`
//! fails, and `/metrics` says the store is unavailable instead of reporting zero messages.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use mta_tests::relay::{message, start_sender, submit};
use mta_tests::{ALICE, MtaBuilder, SmtpClient, secs};

const FAR: &str = "far@remote.test";

/// `GET /metrics`: the lines of the body that are samples.
fn scrape(addr: SocketAddr) -> Vec<String> {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the response");
    text.lines()
        .filter(|l| l.starts_with("mta_queue"))
        .map(str::to_string)
        .collect()
}

#[test]
fn unavailable_store_is_an_error_not_an_empty_queue() {
    let down = TcpListener::bind("127.0.0.1:0").expect("probe");
    let port = down.local_addr().expect("addr").port();
    drop(down);
    let mta = start_sender(MtaBuilder::new().toml(&format!(
        "[outbound]\nrelay = \"127.0.0.1:{port}\"\n\
         [queue]\nretry_first = \"1s\"\nretry_max = \"2s\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n"
    )));
    let metrics = mta.listener("metrics");
    let id = submit(&mta, &[FAR], &message(FAR, "waiting"));
    mta.wait_for_deferral(&id, FAR, 1, secs(30));
    let good = scrape(metrics);
    assert!(
        good.contains(&"mta_queue_messages 1".to_string()),
        "{good:?}"
    );

    // sled's log moved away: the next write fails, the store is given up and cannot be
    // reopened while the log is gone.
    let log = mta.data_dir().join("queue").join("db");
    let away = mta.data_dir().join("queue").join("db.away");
    std::fs::rename(&log, &away).expect("move the log away");
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO sender.test", 250);
    let reply = c.send_message("x@sender.test", &[ALICE], b"Subject: x\r\n\r\nx\r\n");
    assert_eq!(reply.code / 100, 4, "{reply}\n{}", c.transcript());

    let list = mta.mta(&["queue", "list"], b"");
    let json = mta.mta(&["queue", "list", "--json"], b"");
    let bad = scrape(metrics);
    std::fs::rename(&away, &log).expect("put the log back");
    println!("while unavailable: {}\n{bad:?}", list.all());
    assert_ne!(list.code(), 0, "mta queue list succeeded\n{list}");
    assert!(
        list.all().contains("unavailable") && !list.stdout.contains("0 message(s) queued"),
        "{list}"
    );
    assert_ne!(json.code(), 0, "mta queue list --json succeeded\n{json}");
    assert!(
        bad.contains(&"mta_queue_store_unavailable 1".to_string()),
        "{bad:?}"
    );
    assert!(
        bad.contains(&"mta_queue_messages 1".to_string()),
        "the last good size, not a false 0: {bad:?}"
    );
    assert!(
        good.contains(&"mta_queue_store_unavailable 0".to_string()),
        "{good:?}"
    );
}
