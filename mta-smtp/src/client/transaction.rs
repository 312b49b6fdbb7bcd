//! One mail transaction, sans I/O: the checks made before MAIL, the MAIL and RCPT command
//! lines, which reply codes each command may get, and how the replies become one result per
//! recipient.
//!
//! RFC 5321 §4.1.1.2–§4.1.1.4 and §4.1.4 (ordering), §3.3 (a 2xx to RCPT accepts, the reply
//! to the final dot speaks for all accepted recipients), RFC 1870 §4–§6 (`SIZE=`, and a
//! message over the server's fixed limit fails with 5.3.4 before it is sent), RFC 6152 §3
//! (`BODY=8BITMIME`), RFC 6531 §3.4 (`SMTPUTF8`; a message that needs it cannot go to a
//! server without it: 5.6.7), RFC 3461 §6.2 (`RET`, `ENVID`, `NOTIFY`, `ORCPT` passed on to
//! a server that offers DSN), RFC 3463 for the codes we make up.

use mta_core::address::{Address, ReversePath};
use mta_core::dsn::{MessageDsn, RcptDsn, xtext_encode};

use super::dot::message_size;
use super::ehlo::Extensions;
use super::reply::ServerReply;
use super::{OutgoingMessage, RcptResult};

/// The ESMTP parameters of one MAIL FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=` (RFC 1870), when the server offers SIZE.
    pub size: Option<u64>,
    /// `BODY=8BITMIME` (RFC 6152).
    pub eight_bit: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `REQUIRETLS` (RFC 8689).
    pub require_tls: bool,
    /// `RET` and `ENVID` (RFC 3461), when the server offers DSN and the sender gave them.
    pub dsn: Option<MessageDsn>,
}

/// Decides the MAIL parameters, or refuses the message for this server before anything is
/// sent.
///
/// # Errors
/// A made-up permanent reply for every recipient: `552 5.3.4` when the message is larger than
/// the server's SIZE, `553 5.6.7` when it needs SMTPUTF8 and the server lacks it.
pub fn plan(msg: &OutgoingMessage<'_>, ext: &Extensions) -> Result<MailParams, ServerReply> {
    let size = message_size(msg.prefix, msg.body);
    if let Some(max) = ext.size
        && max > 0
        && size > max
    {
        return Err(ServerReply::local(
            552,
            "5.3.4",
            &format!("message of {size} octets exceeds the server's fixed limit of {max}"),
        ));
    }
    if msg.smtputf8 && !ext.smtputf8 {
        return Err(ServerReply::local(
            553,
            "5.6.7",
            "the message needs SMTPUTF8 and the server does not offer it",
        ));
    }
    if msg.require_tls && !ext.require_tls {
        return Err(ServerReply::local(
            550,
            "5.7.30",
            "the message requires TLS all the way (REQUIRETLS) and the server does not offer it",
        ));
    }
    Ok(MailParams {
        size: ext.size.map(|_| size),
        eight_bit: msg.eight_bit && ext.eight_bit_mime,
        smtputf8: msg.smtputf8,
        require_tls: msg.require_tls,
        dsn: msg
            .dsn
            .filter(|e| ext.dsn && !e.dsn.is_empty())
            .map(|e| e.dsn.clone()),
    })
}

/// `MAIL FROM:<a@b> SIZE=n BODY=8BITMIME SMTPUTF8` CRLF.
pub fn mail_from(from: &ReversePath, params: &MailParams) -> String {
    let mut line = format!("MAIL FROM:{from}");
    if let Some(size) = params.size {
        line.push_str(&format!(" SIZE={size}"));
    }
    if params.eight_bit {
        line.push_str(" BODY=8BITMIME");
    }
    if params.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if params.require_tls {
        line.push_str(" REQUIRETLS");
    }
    if let Some(dsn) = &params.dsn {
        if let Some(ret) = dsn.ret {
            line.push_str(&format!(" RET={}", ret.keyword()));
        }
        if let Some(envid) = &dsn.envid {
            line.push_str(&format!(" ENVID={}", xtext_encode(envid.as_bytes())));
        }
    }
    line.push_str("\r\n");
    line
}

/// `RCPT TO:<a@b>` CRLF.
pub fn rcpt_to(to: &Address) -> String {
    rcpt_to_with(to, None)
}

/// `RCPT TO:<a@b> NOTIFY=… ORCPT=…` CRLF: RFC 3461 §6.2, for a server that offers DSN.
pub fn rcpt_to_with(to: &Address, dsn: Option<&RcptDsn>) -> String {
    let mut line = format!("RCPT TO:<{to}>");
    if let Some(dsn) = dsn {
        if let Some(notify) = dsn.notify {
            line.push_str(&format!(" NOTIFY={}", notify.keyword()));
        }
        if let Some(orcpt) = &dsn.orcpt {
            line.push_str(&format!(" ORCPT={}", orcpt.param()));
        }
    }
    line.push_str("\r\n");
    line
}

/// Which replies make sense for a command; anything else is a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// 2xx, 4xx or 5xx (MAIL, RCPT, the final dot, RSET, EHLO...).
    Completion,
    /// 354, 4xx or 5xx (DATA).
    StartData,
}

impl Expect {
    /// True when `reply` is one this command can get.
    pub fn allows(self, reply: &ServerReply) -> bool {
        match self {
            Expect::Completion => matches!(reply.code / 100, 2 | 4 | 5),
            Expect::StartData => reply.code == 354 || matches!(reply.code / 100, 4 | 5),
        }
    }
}

/// How a completion reply reads for a recipient it decides.
pub(super) fn verdict(reply: &ServerReply) -> RcptResult {
    if reply.is_success() {
        RcptResult::Delivered(reply.clone())
    } else if reply.is_transient() {
        RcptResult::Temporary(reply.clone())
    } else {
        RcptResult::Permanent(reply.clone())
    }
}

/// One result per recipient from the replies of a transaction.
///
/// `mail` decides everyone when it is not 2xx. Otherwise each recipient whose RCPT reply
/// (`rcpts[i]`) was not 2xx keeps it, and the others, including those whose RCPT was never
/// answered because the server gave up with 421 (`rcpts` shorter than `count`), are decided
/// by `after`: the reply to the final dot, a refused DATA, or the 421. `after` is `None` only
/// when nobody was accepted; should it be missing anyway, those recipients get a temporary
/// local failure rather than a false delivery.
pub fn results(
    count: usize,
    mail: &ServerReply,
    rcpts: &[ServerReply],
    after: Option<&ServerReply>,
) -> Vec<RcptResult> {
    if !mail.is_success() {
        return vec![verdict(mail); count];
    }
    (0..count)
        .map(|i| match rcpts.get(i) {
            Some(r) if !r.is_success() => verdict(r),
            _ => match after {
                Some(a) => verdict(a),
                None => RcptResult::Temporary(ServerReply::local(
                    451,
                    "4.4.2",
                    "transaction ended before this recipient was decided",
                )),
            },
        })
        .collect()
}

/// True when at least one recipient is waiting for DATA.
pub fn any_accepted(mail: &ServerReply, rcpts: &[ServerReply]) -> bool {
    mail.is_success() && rcpts.iter().any(ServerReply::is_success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: u16) -> ServerReply {
        ServerReply {
            code,
            enhanced: None,
            text: format!("t{code}"),
        }
    }

    fn addr(s: &str) -> Address {
        Address::parse(s).expect("test address")
    }

    #[test]
    fn command_lines() {
        let from = ReversePath::Address(addr("a@example.org"));
        let none = MailParams {
            size: None,
            eight_bit: false,
            smtputf8: false,
            require_tls: false,
            dsn: None,
        };
        let all = MailParams {
            size: Some(1234),
            eight_bit: true,
            smtputf8: true,
            require_tls: true,
            dsn: Some(MessageDsn {
                ret: Some(mta_core::dsn::Ret::Hdrs),
                envid: Some("a+b c".into()),
            }),
        };
        let table = [
            (&from, &none, "MAIL FROM:<a@example.org>\r\n"),
            (&ReversePath::Null, &none, "MAIL FROM:<>\r\n"),
            (
                &from,
                &all,
                "MAIL FROM:<a@example.org> SIZE=1234 BODY=8BITMIME SMTPUTF8 REQUIRETLS RET=HDRS ENVID=a+2Bb+20c\r\n",
            ),
        ];
        for (from, params, want) in table {
            assert_eq!(mail_from(from, params), want);
        }
        assert_eq!(
            rcpt_to(&addr("b@example.test")),
            "RCPT TO:<b@example.test>\r\n"
        );
        assert_eq!(
            rcpt_to(&addr("\"a b\"@example.test")),
            "RCPT TO:<\"a b\"@example.test>\r\n"
        );
        let dsn = RcptDsn {
            notify: Some(mta_core::dsn::Notify::parse("SUCCESS,DELAY").unwrap()),
            orcpt: Some(mta_core::dsn::Orcpt::parse("rfc822;b+2Bx@example.test").unwrap()),
        };
        assert_eq!(
            rcpt_to_with(&addr("b@example.test"), Some(&dsn)),
            "RCPT TO:<b@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+2Bx@example.test\r\n"
        );
    }

    #[test]
    fn plans() {
        let from = ReversePath::Null;
        let msg = |body: &'static [u8], eight_bit, smtputf8| OutgoingMessage {
            from: &from,
            rcpts: &[],
            prefix: b"",
            body,
            eight_bit,
            smtputf8,
            require_tls: false,
            dsn: None,
        };
        let ext = |size, eight_bit_mime, smtputf8| Extensions {
            size,
            eight_bit_mime,
            smtputf8,
            ..Extensions::default()
        };
        let p = |size, eight_bit, smtputf8| {
            Ok::<_, (u16, String)>(MailParams {
                size,
                eight_bit,
                smtputf8,
                require_tls: false,
                dsn: None,
            })
        };
        let body: &[u8] = b"0123456789\r\n"; // 12 octets
        let table = [
            (
                msg(body, false, false),
                ext(None, false, false),
                p(None, false, false),
            ),
            (
                msg(body, false, false),
                ext(Some(0), false, false),
                p(Some(12), false, false),
            ),
            (
                msg(body, false, false),
                ext(Some(12), false, false),
                p(Some(12), false, false),
            ),
            (
                msg(body, false, false),
                ext(Some(11), false, false),
                Err((552, "5.3.4".into())),
            ),
            // SIZE is only a refusal when the server announced it.
            (
                msg(body, false, false),
                ext(None, true, true),
                p(None, false, false),
            ),
            (
                msg(body, true, false),
                ext(None, true, false),
                p(None, true, false),
            ),
            // 8-bit to a server without 8BITMIME: sent without the parameter.
            (
                msg(body, true, false),
                ext(None, false, false),
                p(None, false, false),
            ),
            (
                msg(body, false, true),
                ext(None, false, true),
                p(None, false, true),
            ),
            (
                msg(body, false, true),
                ext(None, true, false),
                Err((553, "5.6.7".into())),
            ),
        ];
        for (i, (m, e, want)) in table.into_iter().enumerate() {
            let got = plan(&m, &e).map_err(|r| (r.code, r.enhanced.unwrap_or_default()));
            assert_eq!(got, want, "row {i}");
        }
    }

    #[test]
    fn expectations() {
        let table = [
            (Expect::Completion, 250, true),
            (Expect::Completion, 251, true),
            (Expect::Completion, 354, false),
            (Expect::Completion, 421, true),
            (Expect::Completion, 550, true),
            (Expect::StartData, 354, true),
            (Expect::StartData, 250, false),
            (Expect::StartData, 334, false),
            (Expect::StartData, 451, true),
            (Expect::StartData, 554, true),
        ];
        for (expect, code, want) in table {
            assert_eq!(expect.allows(&r(code)), want, "{expect:?} {code}");
        }
    }

    /// MAIL, RCPT and final replies in; results out.
    type Row = (u16, Vec<u16>, Option<u16>, Vec<RcptResult>);

    #[test]
    fn per_recipient_results() {
        use RcptResult::{Delivered as D, Permanent as P, Temporary as T};
        let table: Vec<Row> = vec![
            // Everyone delivered by the final dot.
            (250, vec![250, 251], Some(250), vec![D(r(250)), D(r(250))]),
            // MAIL refused decides everyone.
            (550, vec![503, 503], Some(503), vec![P(r(550)), P(r(550))]),
            (451, vec![], None, vec![T(r(451)), T(r(451))]),
            // Mixed RCPT replies.
            (
                250,
                vec![550, 250, 450],
                Some(250),
                vec![P(r(550)), D(r(250)), T(r(450))],
            ),
            // Final dot refused: accepted recipients get it, refused keep theirs.
            (250, vec![550, 250], Some(554), vec![P(r(550)), P(r(554))]),
            (250, vec![250, 250], Some(451), vec![T(r(451)), T(r(451))]),
            // DATA refused.
            (250, vec![250], Some(554), vec![P(r(554))]),
            // 421 at the second RCPT: the rest are deferred with it.
            (
                250,
                vec![550, 421],
                Some(421),
                vec![P(r(550)), T(r(421)), T(r(421))],
            ),
            // Nobody accepted.
            (250, vec![550, 450], None, vec![P(r(550)), T(r(450))]),
        ];
        for (mail, rcpts, after, want) in table {
            let rcpts: Vec<ServerReply> = rcpts.into_iter().map(r).collect();
            let after = after.map(r);
            let got = results(want.len(), &r(mail), &rcpts, after.as_ref());
            assert_eq!(got, want, "MAIL {mail}, RCPT {rcpts:?}, then {after:?}");
        }
        // A missing decider never reads as delivered.
        let got = results(1, &r(250), &[r(250)], None);
        assert!(matches!(&got[..], [T(reply)] if reply.code == 451));
    }

    #[test]
    fn accepted() {
        assert!(any_accepted(&r(250), &[r(550), r(250)]));
        assert!(!any_accepted(&r(250), &[r(550), r(450)]));
        assert!(!any_accepted(&r(550), &[r(250)]));
        assert!(!any_accepted(&r(250), &[]));
    }
}
