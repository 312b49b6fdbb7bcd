//! The scheduler's [`Deliver`]: splits a message's pending recipients into local ones
//! (Maildir, or one LMTP transaction for all of them, as `[local] delivery` says) and remote
//! ones grouped by domain (one SMTP transaction per domain, domains in parallel), and returns
//! one [`Outcome`] per recipient in the order given.
//!
//! A local recipient's Maildir is its mailbox by [`mta_core::policy::mailbox`]: the user, or
//! for `bob+tag@` bob's; `Delivered-To:` names the recipient as accepted, tag and all. An
//! LMTP server gets the recipient as accepted and adds its own `Return-Path:` and
//! `Delivered-To:` (Dovecot does, stripping the tag by its own `recipient_delimiter`).
//!
//! A local recipient that is an alias (in mail `mta` generated itself, which no session
//! expanded) is delivered to the alias's targets and gets one outcome for them all.
//!
//! Remote mail is DKIM-signed ([`crate::dkim`]) only when [`Envelope::may_sign`]: an
//! authenticated user's submission or a message `mta` wrote itself. A stranger's message that
//! an alias forwards off-site keeps whatever signatures it came with and gets none of ours;
//! it leaves with an SRS sender instead of its own ([`mta_core::forwarding::relay_sender`]).

use std::sync::Arc;

use mta_core::address::{Address, Domain, ReversePath};
use mta_core::config::{Config, LmtpAddress, LocalDelivery};
use mta_core::envelope::Envelope;
use mta_core::forwarding::RelaySender;
use mta_core::policy;
use mta_core::seams::{Body, BoxFuture, Deliver, Outcome, Remote, UserDirectory, Verdict};
use mta_core::text::escape;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::client::{self, OutgoingMessage, Timeouts};
use crate::dkim::{Signed, Signer};
use crate::local::{MailAccess, Maildirs};
use crate::relay::{Kept, Relay, RelayError};

/// Local and remote delivery behind one [`Deliver`].
pub struct Router {
    config: Arc<Config>,
    maildirs: Arc<Maildirs>,
    users: Arc<dyn UserDirectory>,
    relay: Arc<Relay>,
    signer: Signer,
}

impl Router {
    /// A router delivering local mail under `DATA_DIR/mail` (or to the LMTP server) and
    /// relaying the rest. `users` tells which mailbox a tagged address belongs to.
    ///
    /// # Errors
    /// [`RelayError`] when the relay cannot be set up (resolver, CA files, smarthost password,
    /// DKIM keys).
    pub fn new(
        config: Arc<Config>,
        kept: Kept,
        users: Arc<dyn UserDirectory>,
    ) -> Result<Router, RelayError> {
        let signer = Signer::load(&config)?;
        let access = match config.local.mail_group {
            Some(_) => MailAccess::Group,
            None => MailAccess::Private,
        };
        let maildirs = Maildirs::new(
            &config.data_dir.join("mail"),
            config.hostname.as_str(),
            access,
        )
        .with_line_endings(config.local.line_endings);
        let relay = Arc::new(Relay::new(config.clone(), kept)?);
        // Close connections that stopped being useful; ends when the relay is dropped.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&relay);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    match weak.upgrade() {
                        Some(relay) => relay.close_idle(),
                        None => return,
                    }
                }
            });
        }
        Ok(Router {
            signer,
            relay,
            maildirs: Arc::new(maildirs),
            users,
            config,
        })
    }

    async fn maildir(&self, envelope: &Envelope, body: Body, rcpt: &Address) -> Outcome {
        let mailbox = policy::mailbox(&self.config, &self.users.current(), rcpt);
        let Some(dir) = self.maildirs.maildir(&mailbox) else {
            return Outcome::failed("5.1.3", "local part cannot be used as a mailbox name")
                .with_code(550);
        };
        let maildirs = self.maildirs.clone();
        let sender = envelope.sender.clone();
        let rcpt_owned = rcpt.clone();
        let written =
            tokio::task::spawn_blocking(move || maildirs.write(&dir, &sender, &rcpt_owned, &body))
                .await;
        match written {
            Ok(Ok(path)) => Outcome::new(Verdict::Delivered, format!("maildir {}", path.display())),
            Ok(Err(e)) => {
                Outcome::deferred("4.3.0", format!("maildir write failed: {e}")).with_code(451)
            }
            Err(e) => {
                Outcome::deferred("4.3.0", format!("delivery task failed: {e}")).with_code(451)
            }
        }
    }

    /// One LMTP transaction for all local recipients of a message.
    async fn lmtp(
        &self,
        at: &LmtpAddress,
        envelope: &Envelope,
        body: &[u8],
        rcpts: &[Address],
    ) -> Vec<Outcome> {
        let msg = OutgoingMessage {
            // Local delivery: REQUIRETLS is about relaying, and LMTP never leaves the host.
            require_tls: false,
            // The LMTP server delivers for good: the success notice, if asked for, is ours.
            dsn: None,
            ..OutgoingMessage::of(envelope, rcpts, b"", body)
        };
        let result = client::lmtp::deliver(
            at,
            self.config.hostname.as_str(),
            self.config.outbound.connect_timeout,
            &Timeouts::default(),
            &msg,
        )
        .await;
        match result {
            Ok(results) => results
                .iter()
                .map(|r| {
                    // Named by a socket address or path, not a host name: no `Remote-MTA`.
                    let remote = Remote {
                        host: None,
                        at: format!("lmtp {at}"),
                    };
                    r.outcome(remote)
                })
                .collect(),
            Err(e) => {
                tracing::warn!(msg = %envelope.id, lmtp = %at, error = %e, "LMTP delivery failed");
                let text = format!("LMTP delivery to {at} failed: {e}");
                vec![Outcome::deferred("4.4.1", text).with_code(451); rcpts.len()]
            }
        }
    }
}

impl Deliver for Router {
    fn deliver<'a>(
        &'a self,
        envelope: &'a Envelope,
        body: &'a Body,
        recipients: &'a [Address],
    ) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            if recipients
                .iter()
                .any(|r| self.config.dmarc_reports.is_address(r))
            {
                let id = envelope.id.to_string();
                crate::dmarc_reports::ingest_delivered(&self.config, id, body.clone()).await;
            }
            // Mail that mta writes itself (a bounce to a sender's alias, a TLS report to
            // `tlsrpt@` an alias) is queued to the address as it is; a session expanded its
            // recipients at RCPT already, so for its mail this changes nothing.
            let mut out: Vec<Option<Outcome>> = vec![None; recipients.len()];
            let mut direct: Vec<usize> = Vec::new();
            for (i, rcpt) in recipients.iter().enumerate() {
                match self.expansion(rcpt) {
                    Some(targets) => {
                        let outcomes = self.deliver_direct(envelope, body, &targets).await;
                        out[i] = Some(combine(rcpt, &targets, outcomes));
                    }
                    None => direct.push(i),
                }
            }
            if !direct.is_empty() {
                let rcpts: Vec<Address> = direct.iter().map(|&i| recipients[i].clone()).collect();
                let outcomes = self.deliver_direct(envelope, body, &rcpts).await;
                for (i, o) in direct.into_iter().zip(outcomes) {
                    out[i] = Some(o);
                }
            }
            finish(out)
        })
    }

    fn is_local(&self, recipient: &Address) -> bool {
        self.config.is_local_domain(recipient.domain())
    }
}

impl Router {
    /// Where a local recipient that is an alias (or a catch-all's, or postmaster through
    /// its alias) really goes; `None` for a mailbox, a remote address, or an address that
    /// is nothing of ours (delivered as it is, as before).
    fn expansion(&self, rcpt: &Address) -> Option<Vec<Address>> {
        if !self.config.is_local_domain(rcpt.domain()) {
            return None;
        }
        let to = mta_core::address::ForwardPath::Address(rcpt.clone());
        let users = self.users.current();
        match policy::rcpt(&self.config, &users, policy::RelayPermission::Allowed, &to) {
            policy::RcptDecision::Accept(targets)
                if !targets.is_empty() && targets.as_slice() != [rcpt.clone()] =>
            {
                Some(targets)
            }
            policy::RcptDecision::Accept(_) | policy::RcptDecision::Reject(_) => None,
        }
    }

    /// Delivers to `recipients` as they are: local ones to their mailbox, the rest by relay.
    fn deliver_direct<'a>(
        &'a self,
        envelope: &'a Envelope,
        body: &'a Body,
        recipients: &'a [Address],
    ) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            // Shared with the delivery tasks as it is: no copy of a large message here.
            let body = body.clone();
            let mut out: Vec<Option<Outcome>> = vec![None; recipients.len()];
            // Remote recipients grouped by domain, remembering their positions.
            let mut remote: Vec<(Domain, Vec<usize>)> = Vec::new();
            let mut local: Vec<usize> = Vec::new();
            for (i, rcpt) in recipients.iter().enumerate() {
                if self.config.is_local_domain(rcpt.domain()) {
                    match &self.config.local.delivery {
                        LocalDelivery::Maildir => {
                            out[i] = Some(self.maildir(envelope, body.clone(), rcpt).await);
                        }
                        LocalDelivery::Lmtp(_) => local.push(i),
                    }
                } else {
                    match remote.iter_mut().find(|(d, _)| d == rcpt.domain()) {
                        Some((_, idx)) => idx.push(i),
                        None => remote.push((rcpt.domain().clone(), vec![i])),
                    }
                }
            }
            if let (LocalDelivery::Lmtp(at), false) =
                (&self.config.local.delivery, local.is_empty())
            {
                let rcpts: Vec<Address> = local.iter().map(|&i| recipients[i].clone()).collect();
                let outcomes = self.lmtp(at, envelope, &body, &rcpts).await;
                for (i, o) in local.into_iter().zip(outcomes) {
                    out[i] = Some(o);
                }
            }
            if remote.is_empty() {
                return finish(out);
            }
            // Signed once for every remote domain, after every header of ours is in place;
            // only what a user authenticated to submit or what we wrote ourselves: mail from
            // another server (forwarded by an alias) is never signed, whatever its `From:`.
            let signed = if envelope.may_sign() {
                self.signer.sign(&body)
            } else {
                Ok(Signed::default())
            };
            // The signature fields go in front of the body as a part of their own: joined,
            // they would be a second copy of the message held for the whole of every
            // attempt.
            let prefix: Arc<[u8]> = match signed {
                Ok(signed) if signed.by.is_empty() => Arc::from(&[][..]),
                Ok(signed) => {
                    tracing::info!(msg = %envelope.id, by = %signed.by.join(","), "DKIM-signed");
                    mta_core::metrics::METRICS.dkim("signed");
                    Arc::from(signed.fields)
                }
                Err(e) => {
                    tracing::warn!(msg = %envelope.id, error = %e, "sending unsigned");
                    mta_core::metrics::METRICS.dkim("error");
                    Arc::from(&[][..])
                }
            };
            let envelope = Arc::new(self.relayed(envelope));
            let mut tasks = JoinSet::new();
            for (domain, idx) in remote {
                let rcpts: Vec<Address> = idx.iter().map(|&i| recipients[i].clone()).collect();
                let (relay, envelope) = (self.relay.clone(), envelope.clone());
                let (prefix, body) = (prefix.clone(), body.clone());
                let span = tracing::info_span!("relay", %domain);
                tasks.spawn(
                    async move {
                        let outcomes = relay
                            .deliver(&envelope, &prefix, &body, &domain, &rcpts)
                            .await;
                        (idx, outcomes)
                    }
                    .instrument(span),
                );
            }
            while let Some(joined) = tasks.join_next().await {
                if let Ok((idx, outcomes)) = joined {
                    for (i, o) in idx.into_iter().zip(outcomes) {
                        out[i] = Some(o);
                    }
                }
            }
            finish(out)
        })
    }
}

impl Router {
    /// The envelope a copy for another domain leaves with: forwarded mail from another
    /// server gets an SRS sender ([`mta_core::srs`]), so that it passes the receiver's SPF
    /// check; the queued envelope, which bounces go by, keeps the original.
    fn relayed(&self, envelope: &Envelope) -> Envelope {
        let today = mta_core::srs::day(std::time::SystemTime::now());
        match mta_core::forwarding::relay_sender(&self.config, envelope, today) {
            RelaySender::Keep => envelope.clone(),
            RelaySender::Rewrite(srs) => {
                tracing::info!(msg = %envelope.id, from = %escape(&envelope.sender.to_string()), srs = %escape(&srs.to_string()), "sender rewritten (SRS)");
                Envelope {
                    sender: ReversePath::Address(srs),
                    ..envelope.clone()
                }
            }
            RelaySender::Unrewritable(e) => {
                tracing::warn!(msg = %envelope.id, from = %escape(&envelope.sender.to_string()), error = %e, "forwarding with the original sender");
                envelope.clone()
            }
        }
    }
}

/// The outcome for an alias from those of its targets: deferred while any target is (a
/// retry delivers to all of them again: a duplicate for some, never a loss), failed when
/// every target failed, else delivered.
fn combine(alias: &Address, targets: &[Address], outcomes: Vec<Outcome>) -> Outcome {
    let all: Vec<String> = targets
        .iter()
        .zip(&outcomes)
        .map(|(t, o)| format!("{t}: {o}"))
        .collect();
    let text = format!("alias {alias} -> {}", all.join("; "));
    let first = if outcomes.iter().any(|o| o.verdict == Verdict::Deferred) {
        outcomes.iter().find(|o| o.verdict == Verdict::Deferred)
    } else if outcomes.iter().all(|o| o.verdict == Verdict::Failed) {
        outcomes.first()
    } else {
        return Outcome::new(Verdict::Delivered, text);
    };
    // The first target's answer (its status, the host that gave it), with every target's.
    match first {
        Some(first) => Outcome {
            text: [first.text.as_str(), &format!("({text})")]
                .iter()
                .filter(|t| !t.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
            ..first.clone()
        },
        None => Outcome::new(Verdict::Failed, format!("({text})")),
    }
}

/// One outcome per recipient; a task that died without one is a temporary failure.
fn finish(out: Vec<Option<Outcome>>) -> Vec<Outcome> {
    out.into_iter()
        .map(|o| {
            o.unwrap_or_else(|| Outcome::deferred("4.3.0", "delivery task failed").with_code(451))
        })
        .collect()
}
