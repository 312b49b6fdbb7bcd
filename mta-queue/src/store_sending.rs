//! The sending counters of authenticated users ([`SendingLedger`]) in the queue's store, so
//! that they survive a restart: tree `sending` (user → the session's record) and tree `held`
//! (user → nothing: held by `mta user hold`), keyed by `Address::key`. The scheduler reads
//! `held` to leave a held user's messages in the queue.

use mta_core::address::Address;
use mta_core::seams::BoxFuture;
use mta_core::sending::{LedgerError, SendingLedger};

use super::Store;
use crate::clock;

const SENDING: &str = "sending";
const HELD: &str = "held";

fn err(e: impl std::fmt::Display) -> LedgerError {
    LedgerError(e.to_string())
}

impl Store {
    fn ledger_tree(&self, name: &str) -> Result<sled::Tree, LedgerError> {
        let h = self.current().map_err(err)?;
        h.db.open_tree(name).map_err(err)
    }

    /// Whether the user who submitted a message (its `auth_user`, as the envelope keeps it)
    /// is held. A name that is not an address is not held (no hold can name it). A store
    /// that cannot be read counts as held: the mail stays queued (logged) rather than a hold
    /// being lost to a read error.
    pub fn is_user_held(&self, auth_user: &str) -> bool {
        let Ok(user) = Address::parse(auth_user) else {
            return false;
        };
        self.is_held(&user.key()).unwrap_or_else(|e| {
            tracing::warn!(user = %user, error = %e, "cannot read the sending holds; the user's mail stays queued");
            true
        })
    }
}

impl SendingLedger for Store {
    fn now_ms(&self) -> u64 {
        clock::now_ms()
    }

    fn load(&self, user: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        let tree = self.ledger_tree(SENDING)?;
        Ok(tree.get(user).map_err(err)?.map(|v| v.to_vec()))
    }

    fn save(&self, user: &str, record: &[u8]) -> Result<(), LedgerError> {
        let tree = self.ledger_tree(SENDING)?;
        tree.insert(user, record).map_err(err)?;
        Ok(())
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), LedgerError>> {
        Box::pin(async { self.flush().await.map_err(err) })
    }

    fn is_held(&self, user: &str) -> Result<bool, LedgerError> {
        let tree = self.ledger_tree(HELD)?;
        tree.contains_key(user).map_err(err)
    }

    fn set_held(&self, user: &str, held: bool) -> Result<(), LedgerError> {
        let tree = self.ledger_tree(HELD)?;
        if held {
            tree.insert(user, &[][..]).map_err(err)?;
        } else {
            tree.remove(user).map_err(err)?;
        }
        Ok(())
    }
}
