//! The queue's store opened by a command directly, when no server runs.

use anyhow::Context as _;
use mta_core::config::Config;
use mta_queue::{Queue, QueueSettings};

/// The queue opened directly, when no server runs; `None` when no server ever made one.
///
/// # Errors
/// The queue is there but cannot be opened.
pub fn open(config: &Config) -> anyhow::Result<Option<std::sync::Arc<Queue>>> {
    let path = config.data_dir.join("queue");
    match std::fs::metadata(&path) {
        Ok(_) => {}
        // The data dir is there and ours (checked by the caller), but no server ever made
        // a queue.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot use the queue {}", path.display()));
        }
    }
    let queue = Queue::open(&path, QueueSettings::from_config(config)).with_context(|| {
        format!(
            "cannot open the queue in {} (is mta serve starting or stopping?)",
            path.display()
        )
    })?;
    Ok(Some(queue))
}
