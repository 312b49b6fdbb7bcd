//! A message accepted with 250 survives `kill -9`: after a restart it is retried at once
//! and delivered.

use mta_tests::{SmtpClient, TestMta, queue_id, read_delivered, secs, wait_for};
use serde_json::Value;

const BOB: &str = "bob@example.test";

/// The queue record of message `id`, if it is queued.
fn record(mta: &TestMta, id: &str) -> Option<Value> {
    let queue = mta.queue_json();
    let errors = queue["errors"].as_array().expect("errors is an array");
    assert!(errors.is_empty(), "queue errors: {queue}");
    queue["records"]
        .as_array()
        .expect("records is an array")
        .iter()
        .find(|r| r["envelope"]["id"] == id)
        .cloned()
}

#[test]
fn queued_message_survives_kill_9() {
    let mut mta = TestMta::start("");
    mta.add_user(BOB, "bob-password-1");
    // Root ignores permissions, so block delivery another way: a regular file where bob's
    // mail directory must go. Delivery is deferred (retry in 5 minutes).
    let domain_dir = mta.data_dir().join("mail").join("example.test");
    std::fs::create_dir_all(&domain_dir).unwrap();
    let blocker = domain_dir.join("bob");
    std::fs::write(&blocker, b"not a directory").unwrap();

    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let message = b"From: someone@remote.test\r\nTo: bob@example.test\r\nSubject: durable\r\n\r\nstill here\r\n";
    let reply = c.send_message("someone@remote.test", &[BOB], message);
    assert_eq!(reply.code, 250, "{}", c.transcript());
    let id = queue_id(&reply.to_string());
    c.expect("QUIT", 221);

    wait_for(secs(10), "a deferred delivery attempt in the queue", || {
        record(&mta, &id)
            .is_some_and(|r| r["envelope"]["recipients"][0]["attempts"].as_u64() >= Some(1))
    });
    let rec = record(&mta, &id).expect("the message is queued");
    let rcpt = &rec["envelope"]["recipients"][0];
    assert_eq!(rcpt["address"], BOB, "{rec}");
    assert_eq!(rcpt["state"], "pending", "{rec}");
    assert_eq!(rec["envelope"]["sender"], "<someone@remote.test>", "{rec}");
    assert!(mta.maildir_new(BOB).is_empty());

    mta.kill9();
    std::fs::remove_file(&blocker).unwrap();
    mta.restart();
    // It keeps its due time (5 minutes away) over the restart: ask for it now.
    mta.mta(&["queue", "retry", &id], b"")
        .assert_success("mta queue retry");

    let files = mta.wait_for_mail(BOB, 1, 20);
    assert_eq!(files.len(), 1);
    let d = read_delivered(&files[0]);
    assert!(d.received.contains(&format!(" id {id}")), "{}", d.received);
    assert!(d.rest.ends_with(b"\r\n\r\nstill here\r\n"));
    wait_for(secs(10), "the delivered message to leave the queue", || {
        record(&mta, &id).is_none()
    });
}
