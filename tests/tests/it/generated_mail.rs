//! Mail that `mta` writes itself goes through the aliases like any other: a bounce to a
//! sender who used an alias reaches the alias's target, not a Maildir named after the alias.

use std::net::TcpListener;

use mta_tests::relay::{login, message};
use mta_tests::{ALICE, MtaBuilder, secs};

const FAR: &str = "far@remote.test";
const INFO: &str = "info@example.test";

#[test]
fn bounce_to_a_senders_alias_reaches_its_target() {
    let down = TcpListener::bind("127.0.0.1:0").expect("probe");
    let port = down.local_addr().expect("addr").port();
    drop(down);
    let mta = mta_tests::relay::start_sender(MtaBuilder::new().toml(&format!(
        "[aliases]\n\"{INFO}\" = [\"{ALICE}\"]\n\
         [outbound]\nrelay = \"127.0.0.1:{port}\"\n\
         [queue]\nretry_first = \"1s\"\nretry_max = \"2s\"\n"
    )));
    // Alice sends as info@, her alias, to a destination that is down.
    let mut c = login(&mta);
    let text = String::from_utf8(message(FAR, "as an alias"))
        .expect("ascii")
        .replace(
            &format!("From: Alice <{ALICE}>"),
            &format!("From: Info <{INFO}>"),
        );
    let reply = c.send_message(INFO, &[FAR], text.as_bytes());
    assert_eq!(reply.code, 250, "{}", c.transcript());
    let id = mta_tests::queue_id(&reply.to_string());
    mta.wait_for_deferral(&id, FAR, 1, secs(30));

    // The operator returns it: the DSN goes to <info@example.test>.
    mta.mta(&["queue", "bounce", &id], b"")
        .assert_success("mta queue bounce");
    let bounces = mta.wait_for_mail(ALICE, 1, 30);
    let dsn = std::fs::read_to_string(&bounces[0]).expect("read the bounce");
    assert!(dsn.contains("returned to sender"), "{dsn}");
    assert!(
        mta.maildir_new(INFO).is_empty(),
        "a Maildir was made for the alias itself"
    );
}
