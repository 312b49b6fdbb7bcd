//! What the queue's store asks of the file system, below sled: free space and inodes
//! ([`room`], [`headroom`]), a flush that cannot hang (`flush_sled`), the `fdatasync`s
//! sled leaves out (`sync_files`), and a check that a log is sled's before sled may write
//! over it (`check_log`).

use std::path::Path;
use std::time::Duration;

/// Free space on the store's file system against the floors of `[queue]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// At or above both floors (or the file system does not say).
    Enough,
    /// Below the byte floor: this many bytes are free.
    LowSpace(u64),
    /// Below the inode floor: this many inodes are free.
    LowInodes(u64),
}

/// Free bytes and inodes on the file system of `path` (`statvfs`, the part available to
/// unprivileged users) against the floors. A floor of 0 is not checked, nor is the inode
/// floor on file systems that report no inodes.
///
/// # Errors
/// The `statvfs` error.
pub fn room(path: &Path, min_space: u64, min_inodes: u64) -> std::io::Result<Room> {
    let st = rustix::fs::statvfs(path)?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if min_space > 0 && free < min_space {
        return Ok(Room::LowSpace(free));
    }
    if min_inodes > 0 && st.f_files > 0 && st.f_favail < min_inodes {
        return Ok(Room::LowInodes(st.f_favail));
    }
    Ok(Room::Enough)
}

/// Why the file system of `path` (or of its nearest existing ancestor) is too full to open
/// the store on: fewer than [`HEADROOM`] bytes or [`HEADROOM_INODES`] inodes free. `None`
/// when there is room, or the file system does not say.
pub fn too_full_to_open(path: &Path) -> Option<String> {
    let existing = path.ancestors().find(|p| p.exists())?;
    match headroom(existing, 0) {
        Ok(Room::Enough) | Err(_) => None,
        Ok(Room::LowSpace(free)) => Some(format!("only {free} bytes free")),
        Ok(Room::LowInodes(free)) => Some(format!("only {free} inodes free")),
    }
}

/// Whether a message of `size` bytes fits with room to spare: twice its size plus
/// [`HEADROOM`] free (sled may hold a value twice until it compacts its log, and the Maildir
/// copy follows), and [`HEADROOM_INODES`] inodes (a large value is a file of its own).
/// Checked before the message is written, so that sled itself rarely meets a full disk:
/// after such an error it has to be reopened, or worse (see `flush_sled`).
///
/// # Errors
/// The `statvfs` error.
pub fn headroom(path: &Path, size: u64) -> std::io::Result<Room> {
    let st = rustix::fs::statvfs(path)?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < size.saturating_mul(2).saturating_add(HEADROOM) {
        return Ok(Room::LowSpace(free));
    }
    if st.f_files > 0 && st.f_favail < HEADROOM_INODES {
        return Ok(Room::LowInodes(st.f_favail));
    }
    Ok(Room::Enough)
}

/// sled's log segment size unless its `conf` says otherwise.
const DEFAULT_SEGMENT_SIZE: u64 = 512 * 1024;
/// The header at the start of each segment of sled 0.34's log: CRC-32 (little endian,
/// inverted) of the 16 bytes after it (two LSNs).
const SEGMENT_HEADER_LEN: usize = 20;

/// Refuses a store whose log holds no valid sled segment header.
///
/// sled 0.34 opens a log whose segment headers do not check out as an empty store and
/// writes over it: a damaged or foreign file would be silently replaced and every queued
/// message lost. A real log always has at least one valid header (the first segment is
/// written when the store is created), so a non-empty `db` without one is not opened.
/// Damage inside valid segments is sled's to find (its records carry CRCs).
///
/// A log that cannot be read at all (out of descriptors, permissions, an I/O error) is
/// [`LogCheck::Unreadable`]: nothing is known about its content, so it is not called damaged.
pub(crate) fn check_log(path: &Path) -> Result<(), LogCheck> {
    use std::io::{Read, Seek, SeekFrom};
    let db = path.join("db");
    let mut file = match std::fs::File::open(&db) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LogCheck::Unreadable(e)),
    };
    let len = file.metadata().map_err(LogCheck::Unreadable)?.len();
    if len == 0 {
        return Ok(());
    }
    let segment = std::fs::read_to_string(path.join("conf"))
        .ok()
        .and_then(|conf| {
            conf.lines()
                .find_map(|l| l.strip_prefix("segment_size: ")?.trim().parse::<u64>().ok())
        })
        .filter(|&s| s >= SEGMENT_HEADER_LEN as u64)
        .unwrap_or(DEFAULT_SEGMENT_SIZE);
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    let mut offset = 0;
    while offset + SEGMENT_HEADER_LEN as u64 <= len {
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut header))
            .map_err(LogCheck::Unreadable)?;
        let stored = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) ^ u32::MAX;
        if crc32fast::hash(&header[4..]) == stored {
            return Ok(());
        }
        offset += segment;
    }
    Err(LogCheck::NotSled(format!(
        "{} ({len} bytes) has no valid sled log segment header: it is not a sled 0.34 log",
        db.display()
    )))
}

/// Why [`check_log`] did not pass a store's log.
#[derive(Debug)]
pub(crate) enum LogCheck {
    /// It was read and is not a sled log: the store is damaged.
    NotSled(String),
    /// It could not be read: a resource or I/O error, not a verdict on the store.
    Unreadable(std::io::Error),
}

/// Free bytes a new message must leave beyond twice its size: a few of sled's 512 KiB log
/// segments and a snapshot.
pub const HEADROOM: u64 = 4 * 1024 * 1024;
/// Free inodes a new message must leave (a blob file, a Maildir file, sled's snapshot).
pub const HEADROOM_INODES: u64 = 16;

/// How long a sled flush or write may take before it counts as failed.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// sled's `flush()`, bounded by [`FLUSH_TIMEOUT`].
///
/// After a write fails for lack of space, sled 0.34 can wedge: its flushes wait for a log
/// position that never becomes stable, with no error recorded (seen in about a third of
/// the disk-full runs of `tests/it/storage_faults.rs`). A session would then hang at the
/// dot. So the flush runs on its own thread and, when it has not returned in time, fails:
/// the message gets a 4xx and the store is given up. The stuck thread is left behind; it
/// keeps sled's lock, so reopening waits for it (see `Store::reopen`).
pub(crate) fn flush_sled(db: &sled::Db) -> sled::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let db = db.clone();
    std::thread::Builder::new()
        .name("queue-flush".into())
        .spawn(move || {
            let _ = tx.send(db.flush());
        })
        .map_err(sled::Error::Io)?;
    match rx.recv_timeout(FLUSH_TIMEOUT) {
        Ok(result) => result.map(drop),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            Err(sled::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "sled flush did not return within 5 s",
            )))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(sled::Error::Io(
            std::io::Error::other("sled flush thread died"),
        )),
    }
}

/// What the flush rounds have made durable in `blobs/`: each blob file's length when it was
/// last synced. sled writes a blob once, appending to a new file, and never changes it after,
/// so a blob whose length is unchanged needs no second sync, and the directory needs one only
/// when a blob appeared. Syncing every blob on every round instead cost one `fdatasync` per
/// queued large message per round (8.9 syncs per message in the benchmark, and 100 KiB
/// acceptance fell to a fifth; docs/performance.md).
pub(crate) type SyncedBlobs = std::collections::HashMap<std::ffi::OsString, u64>;

/// `fdatasync` of sled's log (`db`), of each blob file not yet synced at its present length,
/// and of `blobs/` when it holds a new blob. `synced` is updated only when all of it worked.
pub(crate) fn sync_files(path: &Path, synced: &mut SyncedBlobs) -> std::io::Result<()> {
    if mta_core::durable_file::syncs_disabled() {
        return Ok(());
    }
    std::fs::File::open(path.join("db"))?.sync_data()?;
    let blobs = path.join("blobs");
    let entries = match std::fs::read_dir(&blobs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut present = SyncedBlobs::new();
    let mut appeared = false;
    for entry in entries {
        let entry = entry?;
        // sled removes blobs of deleted values concurrently; where the directory does not
        // record file types (FUSE), asking for it is a stat that can miss.
        let kind = match entry.file_type() {
            Ok(kind) => kind,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !kind.is_file() {
            continue;
        }
        let file = match std::fs::File::open(entry.path()) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // The length before the sync: everything up to it is durable after.
        let len = file.metadata()?.len();
        let name = entry.file_name();
        match synced.get(&name) {
            Some(&done) if done == len => {}
            known => {
                file.sync_data()?;
                appeared |= known.is_none();
            }
        }
        present.insert(name, len);
    }
    if appeared {
        std::fs::File::open(&blobs)?.sync_all()?;
    }
    *synced = present;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_synced_again_only_when_it_grew() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        let mut synced = SyncedBlobs::new();
        // No blobs directory yet: only the log.
        sync_files(dir.path(), &mut synced).unwrap();
        assert!(synced.is_empty());
        let blobs = dir.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        std::fs::write(blobs.join("1"), b"abc").unwrap();
        sync_files(dir.path(), &mut synced).unwrap();
        assert_eq!(synced.get(std::ffi::OsStr::new("1")), Some(&3));
        // Written further after a round (sled was still appending): its new length counts.
        std::fs::write(blobs.join("1"), b"abcde").unwrap();
        std::fs::write(blobs.join("2"), b"x").unwrap();
        sync_files(dir.path(), &mut synced).unwrap();
        assert_eq!(synced.get(std::ffi::OsStr::new("1")), Some(&5));
        assert_eq!(synced.get(std::ffi::OsStr::new("2")), Some(&1));
        // A removed blob is forgotten.
        std::fs::remove_file(blobs.join("1")).unwrap();
        sync_files(dir.path(), &mut synced).unwrap();
        assert_eq!(synced.len(), 1);
        // A failed round changes nothing: the log is gone.
        std::fs::write(blobs.join("3"), b"y").unwrap();
        std::fs::remove_file(dir.path().join("db")).unwrap();
        assert!(sync_files(dir.path(), &mut synced).is_err());
        assert_eq!(synced.len(), 1);
    }
}
