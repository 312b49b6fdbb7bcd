//! `mta-smtp`: the network side of `mta`. The SMTP server ([`server`]: listeners, sessions,
//! STARTTLS and implicit TLS, AUTH), server TLS setup ([`tls`]), and local delivery into
//! Maildir ([`local`]). Talks to the queue only through the traits in `mta_core::seams`.

pub mod local;
pub mod server;
pub mod tls;
