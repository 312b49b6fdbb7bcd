//! A queued message as the queue commands print it: one line for the message, one per
//! recipient, every text from outside made safe for a terminal.

use mta_core::date;
use mta_core::envelope::RcptState;

/// A recipient's state in one word.
pub fn state(state: &RcptState) -> &'static str {
    match state {
        RcptState::Pending => "pending",
        RcptState::Delivered => "delivered",
        RcptState::Failed => "failed",
    }
}

/// Text for the operator's terminal: control characters are shown escaped (`\u{1b}`),
/// never sent.
pub fn printable(text: &str) -> String {
    mta_core::text::terminal(text, false)
}

/// One message as `mta queue list` prints it: a line for the message, one per recipient.
pub fn render_record(rec: &mta_queue::Record, held: bool) -> String {
    let e = &rec.envelope;
    let next = if held {
        "held (its user is held)".to_string()
    } else {
        format!("next attempt {}", date::rfc5322(rec.next_attempt_ms / 1000))
    };
    let mut out = format!(
        "{}  {}  {} bytes  from {}  {next}\n",
        e.id,
        date::rfc5322(e.received_at),
        e.size,
        printable(&e.sender.to_string()),
    );
    for r in &e.recipients {
        out.push_str(&recipient_line(r));
    }
    out
}

/// One recipient as the queue commands print it: address, state, attempts, last result.
pub fn recipient_line(r: &mta_core::envelope::Recipient) -> String {
    format!(
        "    {}  {}  attempts {}  {}\n",
        printable(&r.address.to_string()),
        state(&r.state),
        r.attempts,
        printable(
            &r.last_result
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        )
    )
}
