//! Where the sending counters of each authenticated user are kept, as the session sees it
//! ([`SendingLedger`]): the queue's store in `mta serve`, memory in tests. What is counted and
//! when a message is refused is the session's (`mta-smtp`); the record is opaque here.
//!
//! A hold (`mta user hold`) is kept apart from the record, by the ledger itself, so that the
//! queue's scheduler can skip a held user's messages without reading the session's format.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::seams::BoxFuture;

/// Why the ledger could not be read or written. The session answers `451 4.3.0`: a message
/// it cannot count is not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sending counters: {0}")]
pub struct LedgerError(pub String);

/// The per-user sending counters, persisted.
pub trait SendingLedger: Send + Sync {
    /// The clock the windows are measured on, Unix milliseconds. The queue's clock in
    /// `mta serve`: it does not step within a run.
    fn now_ms(&self) -> u64;

    /// The record saved for `user` (an [`Address::key`](crate::Address::key)), if any.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be read.
    fn load(&self, user: &str) -> Result<Option<Vec<u8>>, LedgerError>;

    /// Replaces the record of `user`; durable once [`SendingLedger::sync`] returns.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be written.
    fn save(&self, user: &str, record: &[u8]) -> Result<(), LedgerError>;

    /// Makes every saved record and hold durable.
    fn sync(&self) -> BoxFuture<'_, Result<(), LedgerError>>;

    /// Whether `user` is held: its new mail refused, its queued mail not delivered.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be read.
    fn is_held(&self, user: &str) -> Result<bool, LedgerError>;

    /// Holds `user` (`true`) or releases it (`false`); durable once [`SendingLedger::sync`]
    /// returns.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be written.
    fn set_held(&self, user: &str, held: bool) -> Result<(), LedgerError>;
}

/// A ledger in memory, on the wall clock: what a server without a store (tests, the fuzzer)
/// counts with. Nothing survives the process.
#[derive(Default)]
pub struct MemoryLedger {
    records: Mutex<BTreeMap<String, Vec<u8>>>,
    held: Mutex<BTreeSet<String>>,
}

impl SendingLedger for MemoryLedger {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn load(&self, user: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        Ok(records.get(user).cloned())
    }

    fn save(&self, user: &str, record: &[u8]) -> Result<(), LedgerError> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.insert(user.to_string(), record.to_vec());
        Ok(())
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), LedgerError>> {
        Box::pin(async { Ok(()) })
    }

    fn is_held(&self, user: &str) -> Result<bool, LedgerError> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        Ok(held.contains(user))
    }

    fn set_held(&self, user: &str, on: bool) -> Result<(), LedgerError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            held.insert(user.to_string());
        } else {
            held.remove(user);
        }
        Ok(())
    }
}
