//! The MAIL and RCPT parameters of RFC 3461 (DSN: `RET`, `ENVID`, `NOTIFY`, `ORCPT`) and
//! RFC 4954 §5 (`AUTH=` on MAIL), for the command parser. Bad syntax, a value out of range
//! and a parameter given twice are `501 5.5.4`; what is not one of these stays
//! `555 5.5.4` (unknown parameter).

use mta_core::address::{Address, ForwardPath};
use mta_core::dsn::{self, DsnError, MessageDsn, Notify, Orcpt, RcptDsn, Ret};
use mta_core::reply::Reply;

/// The extension parameters of one MAIL command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailExtensions {
    /// `RET` and `ENVID`.
    pub dsn: MessageDsn,
    /// `AUTH=` was given (its value checked, then ignored: RFC 4954 §5).
    pub auth: bool,
}

impl MailExtensions {
    /// Takes one parameter `key[=value]` that SIZE, BODY and the other built-in parameters
    /// did not; `key` is in upper case.
    ///
    /// # Errors
    /// The reply to refuse with: `501` for bad syntax, `555` for an unknown parameter.
    pub fn take(&mut self, key: &str, value: Option<&str>) -> Result<(), Reply> {
        let result = match (key, value) {
            ("RET", Some(v)) => set(&mut self.dsn.ret, Ret::parse(v)),
            ("ENVID", Some(v)) => set(&mut self.dsn.envid, dsn::parse_envid(v)),
            ("AUTH", Some(v)) => match self.auth {
                true => Err(DsnError::Repeated),
                false => dsn::check_auth_param(v).map(|()| self.auth = true),
            },
            _ => return Err(Reply::UNKNOWN_PARAMETER),
        };
        result.map_err(syntax)
    }
}

/// Takes one RCPT parameter into `dsn`; `key` is in upper case.
///
/// # Errors
/// The reply to refuse with: `501` for bad syntax, `555` for an unknown parameter.
pub fn rcpt_param(dsn: &mut RcptDsn, key: &str, value: Option<&str>) -> Result<(), Reply> {
    let result = match (key, value) {
        ("NOTIFY", Some(v)) => set(&mut dsn.notify, Notify::parse(v)),
        ("ORCPT", Some(v)) => set(&mut dsn.orcpt, Orcpt::parse(v)),
        _ => return Err(Reply::UNKNOWN_PARAMETER),
    };
    result.map_err(syntax)
}

/// The DSN parameters each target of an accepted RCPT keeps. An alias expanded to other
/// addresses passes its `NOTIFY` on to each of them; without an `ORCPT`, one naming the
/// address of the RCPT is added (RFC 3461 §4.2 allows it, and it must be that address), so
/// a notice about a target says which address the sender wrote. An alias (or catch-all)
/// with several targets is treated as a list (RFC 3461 §6.2.7.3): its targets do not get
/// `SUCCESS`, so one RCPT cannot make a success notice (maybe with the whole message) per
/// target go to a sender who may be forged; `FAILURE` and `DELAY` pass on. One target keeps
/// the `NOTIFY` as given (§6.2.7.2).
pub fn for_targets(mut dsn: RcptDsn, to: &ForwardPath, targets: &[Address]) -> RcptDsn {
    if targets.len() > 1
        && let Some(notify) = dsn.notify.as_mut()
    {
        notify.success = false;
    }
    if let ForwardPath::Address(to) = to {
        let expanded = targets.iter().any(|t| t.key() != to.key());
        let text = to.to_string();
        if dsn.orcpt.is_none() && expanded && text.is_ascii() {
            dsn.orcpt = Some(Orcpt {
                addr_type: "rfc822".to_string(),
                address: text,
            });
        }
    }
    dsn
}

fn set<T>(slot: &mut Option<T>, value: Result<T, DsnError>) -> Result<(), DsnError> {
    if slot.is_some() {
        return Err(DsnError::Repeated);
    }
    *slot = Some(value?);
    Ok(())
}

fn syntax(error: DsnError) -> Reply {
    let text = match error {
        DsnError::Repeated => "Parameter given twice",
        DsnError::TooLong => "Parameter value too long",
        DsnError::BadRet => "RET must be FULL or HDRS",
        DsnError::BadNotify => "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
        DsnError::BadOrcpt => "ORCPT address type must be rfc822 or utf-8",
        DsnError::BadXtext | DsnError::NotPrintable => "Bad xtext in parameter value",
    };
    Reply::new(501, "5.5.4", text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn notify(success: bool, failure: bool, delay: bool) -> Notify {
        Notify {
            success,
            failure,
            delay,
        }
    }

    #[test]
    fn several_targets_lose_success_one_keeps_it() {
        let to = ForwardPath::Address(addr("list@example.org"));
        let asked = RcptDsn {
            notify: Some(notify(true, true, false)),
            orcpt: None,
        };
        let two = [addr("a@example.org"), addr("b@remote.test")];
        let got = for_targets(asked.clone(), &to, &two);
        assert_eq!(got.notify, Some(notify(false, true, false)));
        assert_eq!(
            got.orcpt.map(|o| o.address).as_deref(),
            Some("list@example.org")
        );
        let one = [addr("a@example.org")];
        let got = for_targets(asked, &to, &one);
        assert_eq!(got.notify, Some(notify(true, true, false)));
    }

    proptest! {
        /// Against the plain rule: NOTIFY is kept as given, but for SUCCESS when there are
        /// two or more targets; absent stays absent.
        #[test]
        fn notify_matches_the_rule(
            given in proptest::option::of((any::<bool>(), any::<bool>(), any::<bool>())),
            count in 0usize..4,
        ) {
            let to = ForwardPath::Address(addr("x@example.org"));
            let targets: Vec<Address> = (0..count).map(|i| addr(&format!("t{i}@example.org"))).collect();
            let dsn = RcptDsn { notify: given.map(|(s, f, d)| notify(s, f, d)), orcpt: None };
            let got = for_targets(dsn, &to, &targets);
            let want = given.map(|(s, f, d)| notify(s && count < 2, f, d));
            prop_assert_eq!(got.notify, want);
        }
    }
}
