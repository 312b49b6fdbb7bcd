//! The scheduler's [`Deliver`]: splits a message's pending recipients into local ones
//! (Maildir) and remote ones grouped by domain (one SMTP transaction per domain, domains in
//! parallel), and returns one [`Outcome`] per recipient in the order given.

use std::sync::Arc;

use mta_core::address::{Address, Domain};
use mta_core::config::Config;
use mta_core::envelope::Envelope;
use mta_core::seams::{BoxFuture, Deliver, Outcome};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::dkim::Signer;
use crate::local::Maildirs;
use crate::relay::{Kept, Relay, RelayError};

/// Local and remote delivery behind one [`Deliver`].
pub struct Router {
    config: Arc<Config>,
    maildirs: Arc<Maildirs>,
    relay: Arc<Relay>,
    signer: Signer,
}

impl Router {
    /// A router delivering local mail under `DATA_DIR/mail` and relaying the rest.
    ///
    /// # Errors
    /// [`RelayError`] when the relay cannot be set up (resolver, CA files, smarthost password,
    /// DKIM keys).
    pub fn new(config: Arc<Config>, kept: Kept) -> Result<Router, RelayError> {
        let signer = Signer::load(&config)?;
        let maildirs = Maildirs::new(&config.data_dir.join("mail"), config.hostname.as_str());
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
            config,
        })
    }

    async fn local(&self, envelope: &Envelope, body: Arc<[u8]>, rcpt: &Address) -> Outcome {
        let Some(dir) = self.maildirs.maildir(rcpt) else {
            return Outcome::Failed("550 5.1.3 local part cannot be used as a mailbox name".into());
        };
        let maildirs = self.maildirs.clone();
        let sender = envelope.sender.clone();
        let rcpt_owned = rcpt.clone();
        let written =
            tokio::task::spawn_blocking(move || maildirs.write(&dir, &sender, &rcpt_owned, &body))
                .await;
        match written {
            Ok(Ok(path)) => Outcome::Delivered(format!("maildir {}", path.display())),
            Ok(Err(e)) => Outcome::Deferred(format!("451 4.3.0 maildir write failed: {e}")),
            Err(e) => Outcome::Deferred(format!("451 4.3.0 delivery task failed: {e}")),
        }
    }
}

impl Deliver for Router {
    fn deliver<'a>(
        &'a self,
        envelope: &'a Envelope,
        body: &'a [u8],
        recipients: &'a [Address],
    ) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let body: Arc<[u8]> = Arc::from(body);
            let mut out: Vec<Option<Outcome>> = vec![None; recipients.len()];
            // Remote recipients grouped by domain, remembering their positions.
            let mut remote: Vec<(Domain, Vec<usize>)> = Vec::new();
            for (i, rcpt) in recipients.iter().enumerate() {
                if self.config.is_local_domain(rcpt.domain()) {
                    out[i] = Some(self.local(envelope, body.clone(), rcpt).await);
                } else {
                    match remote.iter_mut().find(|(d, _)| d == rcpt.domain()) {
                        Some((_, idx)) => idx.push(i),
                        None => remote.push((rcpt.domain().clone(), vec![i])),
                    }
                }
            }
            if remote.is_empty() {
                return finish(out);
            }
            // Signed once for every remote domain, after every header of ours is in place.
            let body = match self.signer.sign(&body) {
                Ok(signed) if signed.by.is_empty() => body,
                Ok(signed) => {
                    tracing::info!(msg = %envelope.id, by = %signed.by.join(","), "DKIM-signed");
                    mta_core::metrics::METRICS.dkim("signed");
                    let mut fields = signed.fields;
                    fields.extend_from_slice(&body);
                    Arc::from(fields)
                }
                Err(e) => {
                    tracing::warn!(msg = %envelope.id, error = %e, "sending unsigned");
                    mta_core::metrics::METRICS.dkim("error");
                    body
                }
            };
            let envelope = Arc::new(envelope.clone());
            let mut tasks = JoinSet::new();
            for (domain, idx) in remote {
                let rcpts: Vec<Address> = idx.iter().map(|&i| recipients[i].clone()).collect();
                let (relay, envelope, body) = (self.relay.clone(), envelope.clone(), body.clone());
                let span = tracing::info_span!("relay", %domain);
                tasks.spawn(
                    async move {
                        let outcomes = relay.deliver(&envelope, &body, &domain, &rcpts).await;
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

/// One outcome per recipient; a task that died without one is a temporary failure.
fn finish(out: Vec<Option<Outcome>>) -> Vec<Outcome> {
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Deferred("451 4.3.0 delivery task failed".into())))
        .collect()
}
