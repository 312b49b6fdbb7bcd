//! The harness's own parsing, checked without a server.

use mta_tests::dialog::{self, Listener, Step};
use mta_tests::{parse_delivered, queue_id};

#[test]
fn splits_a_delivered_file() {
    let file = b"Return-Path: <a@b.test>\r\nDelivered-To: c@d.test\r\n\
        Received: from x ([127.0.0.1])\r\n\tby mx (mta) with ESMTP id 1;\r\n\tdate\r\n\
        Subject: s\r\n\r\n\tbody\r\n";
    let d = parse_delivered(file).unwrap();
    assert_eq!(d.return_path, "Return-Path: <a@b.test>");
    assert_eq!(d.delivered_to, "Delivered-To: c@d.test");
    assert_eq!(
        d.received,
        "Received: from x ([127.0.0.1])\r\n\tby mx (mta) with ESMTP id 1;\r\n\tdate\r\n"
    );
    assert_eq!(d.rest, b"Subject: s\r\n\r\n\tbody\r\n");
    assert!(parse_delivered(b"Delivered-To: x\r\n").is_err());
}

#[test]
fn finds_the_queue_id() {
    assert_eq!(
        queue_id("250 2.0.0 OK queued as 01a22336183e485a6da0"),
        "01a22336183e485a6da0"
    );
}

#[test]
fn parses_dialog_files() {
    let d = dialog::parse(
        "x.txt",
        "# listener: submission\n# comment\nC: EHLO a.test\nS: 250\n\nC:\nS: 530 5.7\nS: closed\n",
    )
    .unwrap();
    assert_eq!(d.listener, Listener::Submission);
    assert_eq!(
        d.steps,
        [
            (3, Step::Send("EHLO a.test".into())),
            (
                4,
                Step::Expect {
                    code: 250,
                    enhanced: None
                }
            ),
            (6, Step::Send(String::new())),
            (
                7,
                Step::Expect {
                    code: 530,
                    enhanced: Some("5.7".into())
                }
            ),
            (8, Step::Closed),
        ]
    );
    for bad in [
        "C EHLO",
        "S: 25",
        "S: 250 x.y.z",
        "S: 250 2.0.0 OK",
        "# listener: pop3\nC: x",
    ] {
        assert!(
            dialog::parse("bad.txt", bad).is_err(),
            "{bad:?} should not parse"
        );
    }
}
