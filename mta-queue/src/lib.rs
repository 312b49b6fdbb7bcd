//! `mta-queue`: the durable queue. A message handed to [`Queue`]'s `enqueue` ([`mta_core::seams::Enqueue`]) is on disk (sled,
//! flushed) before the call returns; the [`scheduler`] then hands due messages to a
//! [`mta_core::seams::Deliver`] and records each recipient's outcome atomically.
//!
//! Depends on `mta-core` only; the network side plugs in through the `Deliver` trait.

// Functions stay under the line limit in clippy.toml (test code is exempt).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod admin;
pub mod bounce;
pub mod clock;
pub mod disk;
pub mod group_sync;
pub mod queue;
pub mod ramp;
pub mod retry;
pub mod scheduler;
pub mod store;

pub use disk::Room;
pub use queue::{Queue, QueueSettings};
pub use store::{OpenTrouble, Record, Store, StoreError};
