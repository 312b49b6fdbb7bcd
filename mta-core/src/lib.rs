//! `mta-core`: the vocabulary every other crate of `mta` speaks. Plain types and rules, no
//! sockets, no async runtime, no dependency on the other crates: addresses and domains,
//! the typed config, SMTP replies, envelopes, users and their passwords, relay and sender
//! policy, and the traits ([`seams`]) at which the network and the queue meet.

// Functions stay under the line limit in clippy.toml (test code is exempt).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod accept_backoff;
pub mod address;
pub mod auth;
pub mod config;
pub mod date;
pub mod dsn;
pub mod durable_file;
pub mod envelope;
pub mod forwarding;
pub mod metrics;
pub mod outcome;
pub mod policy;
pub mod reply;
pub mod seams;
pub mod senders;
pub mod sending;
pub mod srs;
pub mod swap;
pub mod text;

pub use address::{Address, Domain, ForwardPath, ReversePath};
pub use config::Config;
pub use envelope::{Envelope, MessageId, Recipient};
pub use reply::Reply;
