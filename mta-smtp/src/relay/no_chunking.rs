//! Hosts that offer CHUNKING but answered `BDAT` as an unknown command (500, 502, 504), as
//! a middlebox that passes the EHLO keyword and blocks the command does. Such an answer is
//! no verdict on the message: the transaction fails for now (the recipients are deferred,
//! never bounced), the host goes into [`NoChunking`], and for [`NO_CHUNKING_FOR`] its
//! messages go with DATA. Kept across reloads with the relay's other memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mta_core::text::escape;
use tracing::warn;

use crate::client::{ClientError, Connection, RcptResult};

/// How long a host that did not take BDAT gets DATA: a day, as a middlebox stays.
pub const NO_CHUNKING_FOR: Duration = Duration::from_secs(24 * 60 * 60);
/// Hosts remembered at most; the one whose time ends first is forgotten first.
pub const NO_CHUNKING_HOSTS: usize = 4096;

/// Hosts that get DATA instead of BDAT, each until its time is up; at most
/// [`NO_CHUNKING_HOSTS`].
#[derive(Default)]
pub struct NoChunking {
    until: Mutex<HashMap<String, Instant>>,
}

impl NoChunking {
    /// Remembers `host` from `now` for [`NO_CHUNKING_FOR`].
    pub fn record(&self, host: &str, now: Instant) {
        let mut map = self.until.lock().expect("no-chunking lock poisoned");
        map.retain(|_, until| *until > now);
        let host = host.to_ascii_lowercase();
        if map.len() >= NO_CHUNKING_HOSTS && !map.contains_key(&host) {
            let oldest = map.iter().min_by_key(|(_, u)| **u).map(|(h, _)| h.clone());
            if let Some(h) = oldest {
                map.remove(&h);
            }
        }
        map.insert(host, now + NO_CHUNKING_FOR);
    }

    /// True while `host` gets DATA.
    pub fn active(&self, host: &str, now: Instant) -> bool {
        let map = self.until.lock().expect("no-chunking lock poisoned");
        map.get(&host.to_ascii_lowercase())
            .is_some_and(|until| *until > now)
    }

    /// Before a message goes on `conn` to `host`: DATA when the host is remembered.
    pub fn apply(&self, conn: &mut Connection, host: &str) {
        if conn.extensions().chunking && self.active(host, Instant::now()) {
            conn.without_chunking();
        }
    }

    /// After a transaction with `host`: remembers it when it did not take BDAT.
    pub fn learn(&self, host: &str, result: &Result<Vec<RcptResult>, ClientError>) {
        if let Err(ClientError::BdatUnknown(reply)) = result {
            warn!(mx = %escape(host), reply = %escape(&reply.to_string()), "the host offers CHUNKING but does not take BDAT: deferred, and DATA to it from now on");
            self.record(host, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_until_the_time_is_up_and_bounded() {
        let m = NoChunking::default();
        let now = Instant::now();
        assert!(!m.active("mx.example", now));
        m.record("MX.example", now);
        assert!(m.active("mx.EXAMPLE", now));
        assert!(!m.active("mx.example", now + NO_CHUNKING_FOR));
        for i in 0..NO_CHUNKING_HOSTS + 10 {
            m.record(&format!("h{i}"), now + Duration::from_millis(i as u64));
        }
        assert_eq!(m.until.lock().unwrap().len(), NO_CHUNKING_HOSTS);
        assert!(m.active(&format!("h{}", NO_CHUNKING_HOSTS + 9), now));
        assert!(!m.active("h0", now));
    }
}
