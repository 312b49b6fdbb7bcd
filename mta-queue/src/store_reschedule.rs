//! Moving many messages' due times at once: `mta queue flush` (every waiting message due
//! now) and the start-up pull-back of due times a clock stepped back left too far ahead.
//!
//! A message's due time is in two places that must agree: its record (`next_attempt_ms`)
//! and its `schedule` key. A message is moved only if, inside the transaction, its key is
//! still there and its record is still the one read and decoded before it, so a delivery
//! attempt that recorded an outcome in between (a new due time, or the message finished)
//! is never undone by a stale copy. Messages are moved [`CHUNK`] to a transaction, not one
//! each (a sled transaction writes its log buffer out before and after itself), and
//! flushed once at the end.

use mta_core::envelope::MessageId;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Handle, Record, Store, StoreError, decode_schedule_key, schedule_key, zero_id};

/// Messages moved per transaction.
const CHUNK: usize = 256;

/// What one chunk's transaction did.
#[derive(Default)]
struct Moved {
    /// Messages whose due time was moved.
    moved: usize,
    /// Records that could not be read: set aside after the transaction.
    unreadable: Vec<MessageId>,
}

impl Store {
    /// Makes every message that is scheduled later than `now_ms` due at `now_ms` (`mta
    /// queue flush`). Returns how many were moved.
    ///
    /// # Errors
    /// [`StoreError`] on a read, write or flush failure.
    pub async fn reschedule_all(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.reschedule_after(now_ms, now_ms).await
    }

    /// Moves every message scheduled later than `after_ms` to `to_ms`. Returns how many
    /// were moved.
    ///
    /// # Errors
    /// [`StoreError`] on a read, write or flush failure.
    pub async fn reschedule_after(&self, after_ms: u64, to_ms: u64) -> Result<usize, StoreError> {
        let h = self.writable().await?;
        let later: Vec<sled::IVec> = self.write(&h, |h| {
            h.schedule
                .range(schedule_key(after_ms.saturating_add(1), &zero_id())..)
                .keys()
                .collect::<Result<_, _>>()
                .map_err(TransactionError::Storage)
        })?;
        let mut moved = 0;
        for chunk in later.chunks(CHUNK) {
            let keys = chunk.to_vec();
            let done = self
                .write_bounded(&h, move |h| move_chunk(h, &keys, to_ms))
                .await?;
            moved += done.moved;
            for id in done.unreadable {
                // Reading it again sets it aside (the `corrupt` tree) and logs why.
                if let Err(e) = self.load_from(&h, &id) {
                    tracing::error!(msg = %id, error = %e, "skipping unreadable record");
                }
            }
        }
        self.flush_handle(&h).await?;
        Ok(moved)
    }
}

/// One message to move, prepared outside the transaction.
struct Move {
    key: sled::IVec,
    id: MessageId,
    /// The record as read: the transaction moves it only if it is still this.
    raw: sled::IVec,
    /// The record with its new due time.
    json: Vec<u8>,
}

/// Moves the messages of `keys` (schedule keys) to `to_ms`. The records are read and
/// decoded first, outside the transaction (which holds sled's lock against every other
/// write while it runs); the transaction moves those whose key is still there and whose
/// record is still the one read. sled may run its closure more than once (a conflict with
/// another writer): what it returns is made afresh on each run.
fn move_chunk(h: &Handle, keys: &[sled::IVec], to_ms: u64) -> Result<Moved, TransactionError<()>> {
    let mut moves = Vec::with_capacity(keys.len());
    let mut unreadable = Vec::new();
    let mut orphans = Vec::new();
    for key in keys {
        // Names no message; `Store::due` removes it once it is reached.
        let Some((due, id)) = decode_schedule_key(key) else {
            continue;
        };
        let Some(raw) = h
            .envelopes
            .get(id.as_str().as_bytes())
            .map_err(TransactionError::Storage)?
        else {
            // A schedule entry of a message that no longer exists.
            orphans.push(key.clone());
            continue;
        };
        let mut record = match serde_json::from_slice::<Record>(&raw) {
            Ok(r) if r.envelope.id == id => r,
            _ => {
                unreadable.push(id);
                continue;
            }
        };
        if record.next_attempt_ms != due {
            // The key is not the record's own: left to whoever wrote them.
            continue;
        }
        record.next_attempt_ms = to_ms;
        let json = serde_json::to_vec(&record).expect("a Record always serialises");
        moves.push(Move {
            key: key.clone(),
            id,
            raw,
            json,
        });
    }
    let moved = (&h.envelopes, &h.schedule).transaction(|(e, s)| {
        let mut moved = 0;
        for orphan in &orphans {
            if e.get(&orphan[8..])?.is_none() {
                s.remove(orphan)?;
            }
        }
        for m in &moves {
            let key = m.id.as_str().as_bytes();
            if s.get(&m.key)?.is_none() || e.get(key)?.as_ref() != Some(&m.raw) {
                // Moved, deferred or finished since it was read.
                continue;
            }
            s.remove(&m.key)?;
            s.insert(schedule_key(to_ms, &m.id).as_slice(), &[][..])?;
            e.insert(key, m.json.as_slice())?;
            moved += 1;
        }
        Ok::<usize, ConflictableTransactionError<()>>(moved)
    })?;
    Ok(Moved { moved, unreadable })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::tests::record;
    use super::*;

    fn id(n: usize) -> MessageId {
        MessageId::parse(&format!("{:020x}", n + 1)).expect("20 hex digits")
    }

    /// Every message's due time as the record says it, checked against the schedule: each
    /// record has exactly one key, at its own due time.
    fn due_times(store: &Store) -> BTreeMap<MessageId, u64> {
        let h = store.current().expect("open");
        let mut keys: BTreeMap<MessageId, Vec<u64>> = BTreeMap::new();
        for key in h.schedule.iter().keys() {
            let (due, id) = decode_schedule_key(&key.expect("read")).expect("a sound key");
            keys.entry(id).or_default().push(due);
        }
        let mut out = BTreeMap::new();
        for item in h.envelopes.iter() {
            let (_, raw) = item.expect("read");
            let r: Record = serde_json::from_slice(&raw).expect("a sound record");
            assert_eq!(
                keys.get(&r.envelope.id),
                Some(&vec![r.next_attempt_ms]),
                "{}: schedule keys against the record",
                r.envelope.id
            );
            out.insert(r.envelope.id, r.next_attempt_ms);
        }
        assert_eq!(keys.len(), out.len(), "a schedule key without a record");
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Against the obvious model (every message due after `after` is due at `to`, the
        /// others keep theirs), over more messages than one transaction moves.
        #[test]
        fn moves_what_the_model_moves(
            dues in proptest::collection::vec(0u64..2_000, 0..1_300),
            after in 0u64..2_000,
            to in 0u64..2_000,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let mut model = BTreeMap::new();
            // Written as `Store::insert` writes them, without its flush per message.
            let h = store.current().unwrap();
            for (n, due) in dues.iter().enumerate() {
                let r = record(id(n).as_str(), *due);
                h.envelopes.insert(id(n).as_str(), serde_json::to_vec(&r).unwrap()).unwrap();
                h.bodies.insert(id(n).as_str(), &b"body"[..]).unwrap();
                h.schedule.insert(schedule_key(*due, &id(n)), &[][..]).unwrap();
                model.insert(id(n), *due);
            }
            drop(h);
            let moved = rt.block_on(store.reschedule_after(after, to)).unwrap();
            let want = model.values().filter(|due| **due > after).count();
            for due in model.values_mut() {
                if *due > after {
                    *due = to;
                }
            }
            proptest::prop_assert_eq!(moved, want);
            proptest::prop_assert_eq!(due_times(&store), model);
        }
    }

    /// Keys read before other writers acted: a message finished since, one whose attempt
    /// recorded a new due time, one whose schedule entry outlived its record, and one whose
    /// record cannot be read. Only the sound, unchanged one is moved; nothing is undone.
    #[tokio::test]
    async fn stale_keys_move_nothing_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ids: Vec<MessageId> = (0..5).map(id).collect();
        for id in &ids {
            store
                .insert(&record(id.as_str(), 500), b"body")
                .await
                .unwrap();
        }
        let h = store.current().unwrap();
        let keys: Vec<sled::IVec> = ids.iter().map(|id| schedule_key(500, id).into()).collect();
        // 0 finished, 1 deferred again to 900, 2 left a schedule entry behind, 3 damaged.
        store
            .update(&record(ids[0].as_str(), 500), 500, true)
            .await
            .unwrap();
        store
            .update(&record(ids[1].as_str(), 900), 500, false)
            .await
            .unwrap();
        // A stray entry at the old time, as a crash could leave (the record says 900).
        h.schedule
            .insert(schedule_key(500, &ids[1]), &[][..])
            .unwrap();
        h.envelopes.remove(ids[2].as_str()).unwrap();
        h.bodies.remove(ids[2].as_str()).unwrap();
        h.envelopes
            .insert(ids[3].as_str(), &b"{not json"[..])
            .unwrap();
        let done = move_chunk(&h, &keys, 7).unwrap();
        assert_eq!(done.moved, 1);
        assert_eq!(done.unreadable, vec![ids[3].clone()]);
        let r1: Record =
            serde_json::from_slice(&h.envelopes.get(ids[1].as_str()).unwrap().unwrap()).unwrap();
        assert_eq!(r1.next_attempt_ms, 900, "the attempt's due time stands");
        assert!(
            h.schedule
                .get(schedule_key(900, &ids[1]))
                .unwrap()
                .is_some()
        );
        assert!(
            h.envelopes.get(ids[0].as_str()).unwrap().is_none(),
            "finished stays gone"
        );
        assert!(h.schedule.get(schedule_key(7, &ids[0])).unwrap().is_none());
        assert!(
            h.schedule
                .get(schedule_key(500, &ids[2]))
                .unwrap()
                .is_none(),
            "orphan removed"
        );
        let stray = h.schedule.get(schedule_key(500, &ids[1])).unwrap();
        assert!(stray.is_some(), "left alone");
        assert!(h.schedule.get(schedule_key(7, &ids[1])).unwrap().is_none());
        assert!(h.schedule.get(schedule_key(7, &ids[4])).unwrap().is_some());
        let r4: Record =
            serde_json::from_slice(&h.envelopes.get(ids[4].as_str()).unwrap().unwrap()).unwrap();
        assert_eq!(r4.next_attempt_ms, 7);
        drop(h);
        // Through the public call, the damaged record is set aside; 1 is moved from its own
        // entry (900) and its stray one at 500 left alone; 4 is due at 7 already.
        assert_eq!(
            store.reschedule_all(8).await.unwrap(),
            1,
            "1 (4 is due at 7)"
        );
        assert_eq!(store.corrupt_len(), 1);
    }
}
