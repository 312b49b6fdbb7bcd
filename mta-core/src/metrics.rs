//! The counters an operator scrapes (`[metrics] listen`): one process-wide [`METRICS`] that
//! every part of `mta` counts into, rendered in the Prometheus/OpenMetrics text format by
//! prometheus-client. Label values come from small fixed sets (listener names, results, TLS
//! levels, reply status codes), so the number of series stays bounded whatever clients send.

use std::sync::LazyLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels as `(name, value)` pairs.
type Labels = Vec<(&'static str, String)>;

/// Every counter `mta` keeps.
pub struct Metrics {
    registry: Registry,
    sessions: Family<Labels, Counter>,
    sessions_open: Family<Labels, Gauge>,
    accepted: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    auth_failures: Family<Labels, Counter>,
    recipients: Family<Labels, Counter>,
    remote_attempts: Family<Labels, Counter>,
    dns_errors: Family<Labels, Counter>,
    ipv4_fallbacks: Counter,
    dkim: Family<Labels, Counter>,
    queue_messages: Gauge,
    queue_oldest: Gauge,
    queue_unavailable: Gauge,
    dsn_dropped: Counter,
    message_memory: Gauge,
    sending_refused: Family<Labels, Counter>,
    certificate_expiry: Family<Labels, Gauge>,
}

/// The one set of counters of this process.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mta");
        let m = Metrics {
            sessions: Family::default(),
            sessions_open: Family::default(),
            accepted: Family::default(),
            rejected: Family::default(),
            auth_failures: Family::default(),
            recipients: Family::default(),
            remote_attempts: Family::default(),
            dns_errors: Family::default(),
            ipv4_fallbacks: Counter::default(),
            dkim: Family::default(),
            queue_messages: Gauge::default(),
            queue_oldest: Gauge::default(),
            queue_unavailable: Gauge::default(),
            dsn_dropped: Counter::default(),
            message_memory: Gauge::default(),
            sending_refused: Family::default(),
            certificate_expiry: Family::default(),
            registry: Registry::default(),
        };
        m.register_sessions(&mut registry);
        m.register_delivery(&mut registry);
        Metrics { registry, ..m }
    }

    /// The sessions' and received messages' metrics.
    fn register_sessions(&self, registry: &mut Registry) {
        registry.register(
            "sessions",
            "SMTP sessions accepted, by listener",
            self.sessions.clone(),
        );
        registry.register(
            "sessions_open",
            "SMTP sessions open now, by listener",
            self.sessions_open.clone(),
        );
        registry.register(
            "messages_accepted",
            "Messages queued after DATA (250), by listener",
            self.accepted.clone(),
        );
        registry.register(
            "messages_rejected",
            "Messages refused after DATA, by listener and reply status",
            self.rejected.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed AUTH attempts, by listener",
            self.auth_failures.clone(),
        );
        registry.register(
            "sending_refused",
            "MAIL or RCPT of an authenticated user refused by [limits.sending] or a hold, by limit",
            self.sending_refused.clone(),
        );
        registry.register(
            "recipients",
            "Recipient delivery outcomes recorded by the queue: delivered, deferred, failed, expired",
            self.recipients.clone(),
        );
    }

    /// The deliveries', the queue's and the memory's metrics.
    fn register_delivery(&self, registry: &mut Registry) {
        registry.register(
            "remote_attempts",
            "SMTP transactions with remote hosts, by result and TLS level",
            self.remote_attempts.clone(),
        );
        registry.register(
            "dns_errors",
            "DNS lookups that failed temporarily, by purpose",
            self.dns_errors.clone(),
        );
        registry.register(
            "ipv4_fallbacks",
            "Recipients a host refused over IPv6 for reverse DNS or IPv6, tried again over IPv4",
            self.ipv4_fallbacks.clone(),
        );
        registry.register(
            "dkim",
            "DKIM signing of outbound messages: signed, or error",
            self.dkim.clone(),
        );
        registry.register(
            "queue_messages",
            "Messages in the queue (at the last scrape)",
            self.queue_messages.clone(),
        );
        registry.register(
            "queue_oldest_seconds",
            "Age of the oldest queued message in seconds (at the last scrape)",
            self.queue_oldest.clone(),
        );
        registry.register(
            "queue_store_unavailable",
            "1 while the queue store cannot be read; the other queue gauges then keep the \
             values of the last scrape that could read it",
            self.queue_unavailable.clone(),
        );
        registry.register(
            "dsn_dropped",
            "Bounces and success notices not sent because nothing showed the envelope sender \
             to be real",
            self.dsn_dropped.clone(),
        );
        registry.register(
            "message_memory_bytes",
            "Message bytes held in memory by sessions receiving DATA (limits.message_memory)",
            self.message_memory.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate served for a name (obtained by ACME) expires, as Unix time",
            self.certificate_expiry.clone(),
        );
    }

    /// A session was accepted on `listener`; the returned guard counts it open until dropped.
    pub fn session(&self, listener: &str) -> OpenSession {
        let labels = vec![("listener", listener.to_string())];
        self.sessions.get_or_create(&labels).inc();
        self.sessions_open.get_or_create(&labels).inc();
        OpenSession {
            family: self.sessions_open.clone(),
            labels,
        }
    }

    /// A message was queued.
    pub fn accepted(&self, listener: &str) {
        self.accepted
            .get_or_create(&vec![("listener", listener.to_string())])
            .inc();
    }

    /// A message was refused after DATA with this reply code and enhanced status.
    pub fn rejected(&self, listener: &str, code: u16, status: &str) {
        self.rejected
            .get_or_create(&vec![
                ("listener", listener.to_string()),
                ("code", code.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    /// A user's MAIL or RCPT was refused: `limit` is `messages_per_hour`, `messages_per_day`,
    /// `first_time_recipients_per_day` or `held`.
    pub fn sending_refused(&self, limit: &'static str) {
        self.sending_refused
            .get_or_create(&vec![("limit", limit.to_string())])
            .inc();
    }

    /// An AUTH attempt failed.
    pub fn auth_failure(&self, listener: &str) {
        self.auth_failures
            .get_or_create(&vec![("listener", listener.to_string())])
            .inc();
    }

    /// The queue recorded an outcome for one recipient: `delivered`, `deferred`, `failed`
    /// or `expired`.
    pub fn recipient(&self, result: &'static str) {
        self.recipients
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// A transaction with a remote host ended: `result` is `delivered`, `deferred`,
    /// `failed` or `error`; `tls` is `none`, `unverified` or `verified`.
    pub fn remote_attempt(&self, result: &'static str, tls: &'static str) {
        self.remote_attempts
            .get_or_create(&vec![
                ("result", result.to_string()),
                ("tls", tls.to_string()),
            ])
            .inc();
    }

    /// A host refused a recipient over IPv6 for its reverse DNS or IPv6 policy; it is
    /// tried again over IPv4.
    pub fn ipv4_fallback(&self) {
        self.ipv4_fallbacks.inc();
    }

    /// A DNS lookup for `purpose` (`mx`, `address`, `inbound`) failed temporarily.
    pub fn dns_error(&self, purpose: &'static str) {
        self.dns_errors
            .get_or_create(&vec![("purpose", purpose.to_string())])
            .inc();
    }

    /// An outbound message was DKIM-signed (`signed`) or signing failed (`error`).
    pub fn dkim(&self, result: &'static str) {
        self.dkim
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// Counts a bounce or success notice not sent to an unverified envelope sender.
    pub fn dsn_dropped(&self) {
        self.dsn_dropped.inc();
    }

    /// The queue's size and the age of its oldest message, set before a scrape.
    pub fn set_queue(&self, messages: usize, oldest_seconds: u64) {
        self.queue_messages
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
        self.queue_oldest
            .set(i64::try_from(oldest_seconds).unwrap_or(i64::MAX));
        self.queue_unavailable.set(0);
    }

    /// The queue store could not be read for a scrape: says so, and leaves the size and age
    /// as the last scrape that could read it found them, rather than a false empty queue.
    pub fn set_queue_unavailable(&self) {
        self.queue_unavailable.set(1);
    }

    /// Message bytes sessions hold in memory now.
    pub fn set_message_memory(&self, bytes: u64) {
        self.message_memory
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The certificate served for `name` expires at `unix` (seconds since 1970).
    pub fn set_certificate_expiry(&self, name: &str, unix: i64) {
        self.certificate_expiry
            .get_or_create(&vec![("name", name.to_string())])
            .set(unix);
    }

    /// Everything in the OpenMetrics text format (which Prometheus reads).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Counts a session as open until dropped.
pub struct OpenSession {
    family: Family<Labels, Gauge>,
    labels: Labels,
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.family.get_or_create(&self.labels).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_counted() {
        let m = Metrics::new();
        let open = m.session("smtp");
        m.accepted("smtp");
        m.rejected("smtp", 550, "5.7.1");
        m.remote_attempt("delivered", "verified");
        m.set_queue(3, 60);
        m.set_queue_unavailable();
        let text = m.render();
        for line in [
            "mta_sessions_total{listener=\"smtp\"} 1",
            "mta_messages_accepted_total{listener=\"smtp\"} 1",
            "mta_messages_rejected_total{listener=\"smtp\",code=\"550\",status=\"5.7.1\"} 1",
            "mta_remote_attempts_total{result=\"delivered\",tls=\"verified\"} 1",
            "mta_queue_messages 3",
            "mta_queue_oldest_seconds 60",
            "mta_queue_store_unavailable 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("mta_sessions_open{listener=\"smtp\"} 1"),
            "{text}"
        );
        drop(open);
        assert!(
            m.render()
                .contains("mta_sessions_open{listener=\"smtp\"} 0")
        );
    }
}
