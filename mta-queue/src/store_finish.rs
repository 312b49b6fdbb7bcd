//! Removing a finished message (every recipient delivered, bounced or given up) without a
//! sled transaction.
//!
//! A sled transaction or batch takes sled's log lock for itself and closes the log buffer
//! before and after its writes (two extra buffer writes, each ended by a
//! `sync_file_range`), so one per finished message capped how fast a queue drained: about
//! 2,500 messages a second here, the deliveries themselves done. Plain writes to one tree
//! only join the log's buffer, which the next flush writes. A finished message is removed
//! with plain writes, in this order, each in sled's log after the one before:
//!
//! 1. `finishing`: the message id → its schedule key (the intent);
//! 2. the record (`envelopes`), the schedule entry and the body removed;
//! 3. the `finishing` entry removed.
//!
//! After a crash of the process (kill -9) sled recovers a prefix of its log, so a store
//! opened after one finds the intent of every removal it did not find finished, and
//! [`finish_interrupted`] completes them before anything reads the queue. Without the
//! intent a crash between the removals could leave a body nothing refers to (space never
//! freed), or a record without its body (set aside as damaged, though its mail was
//! delivered). A power loss between two flushes may lose log buffers out of order (the
//! drive's cache keeps what it likes until the next `fdatasync`), and then these states can
//! remain (`docs/durability.md`). Only a message that needs no more delivery is ever
//! removed this way: a removal lost or cut short means a delivered message is delivered
//! again, listed, or set aside, never that one is lost.

use mta_core::envelope::MessageId;

/// The tree of removals begun: message id → the schedule key to remove.
pub(super) const FINISHING: &str = "finishing";

/// Removes finished message `id`, scheduled under `schedule_key`, as the module says.
/// Whether its record was there to remove.
pub(super) fn remove_finished(
    finishing: &sled::Tree,
    envelopes: &sled::Tree,
    bodies: &sled::Tree,
    schedule: &sled::Tree,
    id: &MessageId,
    schedule_key: &[u8],
) -> sled::Result<bool> {
    let trees = [finishing, envelopes, bodies, schedule];
    first_steps(trees, id, schedule_key, STEPS)
}

/// The writes of a removal, in their order.
const STEPS: usize = 5;

/// The first `steps` writes of [`remove_finished`]: what a crash after them leaves.
fn first_steps(
    [finishing, envelopes, bodies, schedule]: [&sled::Tree; 4],
    id: &MessageId,
    schedule_key: &[u8],
    steps: usize,
) -> sled::Result<bool> {
    let key = id.as_str().as_bytes();
    let removed = std::cell::Cell::new(false);
    let writes: [&dyn Fn() -> sled::Result<()>; STEPS] = [
        &|| finishing.insert(key, schedule_key).map(drop),
        &|| {
            let Some(raw) = envelopes.remove(key)? else {
                return Ok(());
            };
            removed.set(true);
            // A schedule entry the record names besides the caller's (the queue was
            // flushed while the attempt ran): gone too, or it would be a due entry
            // without a message (harmless, removed when reached, but not left behind).
            if let Ok(record) = serde_json::from_slice::<super::Record>(&raw) {
                let own = super::schedule_key(record.next_attempt_ms, id);
                if own != schedule_key {
                    schedule.remove(own)?;
                }
            }
            Ok(())
        },
        &|| schedule.remove(schedule_key).map(drop),
        &|| bodies.remove(key).map(drop),
        &|| finishing.remove(key).map(drop),
    ];
    for write in writes.iter().take(steps) {
        write()?;
    }
    Ok(removed.get())
}

/// Completes every removal a crash interrupted (see the module). Returns how many.
pub(super) fn finish_interrupted(
    finishing: &sled::Tree,
    envelopes: &sled::Tree,
    bodies: &sled::Tree,
    schedule: &sled::Tree,
) -> sled::Result<usize> {
    let mut done = 0;
    for item in finishing.iter() {
        let (id, schedule_key) = item?;
        envelopes.remove(&id)?;
        schedule.remove(&schedule_key)?;
        bodies.remove(&id)?;
        finishing.remove(&id)?;
        done += 1;
    }
    if done > 0 {
        tracing::info!(
            messages = done,
            "store opened: removals of finished messages a stop interrupted are completed"
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::super::tests::record;
    use super::super::{Store, schedule_key};
    use super::*;

    /// A crash after any number of a removal's writes (a prefix of sled's log), then an
    /// opening: the message is there whole (no write made) or gone whole, with nothing left
    /// behind in any tree, and the count agrees.
    #[tokio::test]
    async fn every_crash_point_opens_to_all_or_nothing() {
        for steps in 0..=STEPS {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let gone = record("00000000000100000001", 40);
            let kept = record("00000000000200000002", 50);
            store.insert(&gone, b"gone").await.unwrap();
            store.insert(&kept, b"kept").await.unwrap();
            let h = store.current().unwrap();
            let key = schedule_key(40, &gone.envelope.id);
            first_steps(
                [&h.finishing, &h.envelopes, &h.bodies, &h.schedule],
                &gone.envelope.id,
                &key,
                steps,
            )
            .unwrap();
            h.db.flush().unwrap();
            drop(h);
            drop(store);

            let store = Store::open(dir.path()).unwrap();
            let h = store.current().unwrap();
            assert!(h.finishing.is_empty(), "after {steps} writes");
            let there = steps == 0;
            assert_eq!(
                store.len(),
                if there { 2 } else { 1 },
                "after {steps} writes"
            );
            assert_eq!(h.envelopes.len(), store.len(), "after {steps} writes");
            assert_eq!(h.bodies.len(), store.len(), "after {steps} writes");
            assert_eq!(h.schedule.len(), store.len(), "after {steps} writes");
            let loaded = store.load(&gone.envelope.id).unwrap();
            assert_eq!(loaded.is_some(), there, "after {steps} writes");
            let (_, body) = store.load(&kept.envelope.id).unwrap().unwrap();
            assert_eq!(&body[..], b"kept");
            assert_eq!(store.corrupt_len(), 0, "after {steps} writes");
        }
    }

    /// Through [`Store::update`]: the finished message is gone and no intent is left.
    #[tokio::test]
    async fn a_finished_update_leaves_no_intent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = record("00000000000100000001", 40);
        store.insert(&r, b"body").await.unwrap();
        store.update(&r, 40, true).await.unwrap();
        let h = store.current().unwrap();
        assert!(h.finishing.is_empty());
        assert!(h.envelopes.is_empty() && h.bodies.is_empty() && h.schedule.is_empty());
        assert_eq!((store.len(), store.count()), (0, 0));
        // Finished twice (the record already gone): counted once.
        let other = record("00000000000200000002", 40);
        store.insert(&other, b"body").await.unwrap();
        store.update(&r, 40, true).await.unwrap();
        assert_eq!((store.len(), store.count()), (1, 1));
    }

    /// The queue flushed while an attempt ran: the record names a due time the attempt
    /// did not start from. Finishing removes both schedule entries.
    #[tokio::test]
    async fn finishing_removes_the_entry_a_flush_made_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = record("00000000000100000001", 400);
        store.insert(&r, b"body").await.unwrap();
        assert_eq!(store.reschedule_all(7).await.unwrap(), 1);
        store.update(&r, 400, true).await.unwrap();
        let h = store.current().unwrap();
        assert!(
            h.schedule.is_empty(),
            "{:?}",
            h.schedule.iter().keys().collect::<Vec<_>>()
        );
        assert!(h.envelopes.is_empty() && h.bodies.is_empty());
    }
}
