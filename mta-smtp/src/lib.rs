//! `mta-smtp`: the network side of `mta`. The SMTP server ([`server`]: listeners, sessions,
//! STARTTLS and implicit TLS, AUTH), server TLS setup ([`tls`]), local delivery into Maildir
//! ([`local`]), our SMTP client ([`client`]), remote delivery through MX or a smarthost
//! ([`relay`]), and the [`router`] the scheduler calls. Talks to the queue only through the
//! traits in `mta_core::seams`.

// Functions stay under the line limit in clippy.toml (test code is exempt).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod client;
pub mod dkim;
pub mod dmarc_reports;
pub mod dmarc_send;
pub mod dovecot_auth;
pub mod headers;
pub mod local;
pub mod relay;
pub mod router;
pub mod server;
pub mod tls;
