//! The file-descriptor limit of `mta serve`. Every session holds a descriptor, and the soft
//! `RLIMIT_NOFILE` a process usually starts with (1024: what systemd and most shells give,
//! kept low for programs that still use `select(2)`) is below the default
//! `limits.max_sessions` plus everything else the server keeps open. `mta` never uses
//! `select(2)`, so it raises its soft limit to the hard one at start, as systemd's
//! documentation of `LimitNOFILE=` asks such programs to do; the hard limit is the
//! operator's (`LimitNOFILE=`, `ulimit -H -n`) and is not touched. When even the hard limit
//! is below what the configured limits need, the start-up log says so.

use mta_core::config::Config;
use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};

/// Descriptors kept beside sessions and outbound connections: the listeners, the queue
/// store's files, Maildir files being written, DNS sockets, the control socket and its
/// clients, metrics and ACME connections, the log.
pub const RESERVE: u64 = 256;

/// Where the kernel caps a soft limit when the hard one is unlimited (`fs.nr_open`'s
/// default), if `/proc/sys/fs/nr_open` cannot be read.
const NR_OPEN_DEFAULT: u64 = 1 << 20;

/// Descriptors the configured limits can hold at once: one per session (`limits.max_sessions`)
/// and per outbound connection (`outbound.max_connections`), plus [`RESERVE`].
pub fn needed(config: &Config) -> u64 {
    let sessions = config.limits.max_sessions as u64;
    let outbound = config.outbound.max_connections as u64;
    sessions.saturating_add(outbound).saturating_add(RESERVE)
}

/// The soft limit to set, given the current soft and hard limits and the kernel's ceiling
/// (`fs.nr_open`, which bounds a soft limit when the hard one is unlimited): the hard limit,
/// never lower than the soft one already is.
pub fn target(soft: u64, hard: u64, nr_open: u64) -> u64 {
    let ceiling = if hard == RLIM_INFINITY { nr_open } else { hard };
    soft.max(ceiling)
}

/// What [`raise`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The soft limit at start.
    pub before: u64,
    /// The soft limit now.
    pub now: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to [`target`].
///
/// # Errors
/// The OS error of `getrlimit` or `setrlimit`.
pub fn raise() -> nix::Result<Outcome> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NR_OPEN_DEFAULT);
    let want = target(soft, hard, nr_open);
    if want != soft {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard)?;
    }
    Ok(Outcome {
        before: soft,
        now: want,
        hard,
    })
}

/// Raises the limit and says in the log what it did, and when the limit is below
/// [`needed`]. Never stops the start: a server with fewer descriptors still serves, and
/// refuses what does not fit (`accept failed` in the log, `4xx` to a message that cannot be
/// written).
pub fn raise_and_log(config: &Config) {
    let need = needed(config);
    match raise() {
        Ok(o) => {
            if o.now != o.before {
                tracing::info!(
                    from = o.before,
                    to = o.now,
                    "raised the soft file-descriptor limit (RLIMIT_NOFILE) to the hard limit"
                );
            }
            if o.now < need {
                tracing::warn!(
                    limit = o.now,
                    hard = o.hard,
                    needed = need,
                    max_sessions = config.limits.max_sessions,
                    max_connections = config.outbound.max_connections,
                    "the file-descriptor limit is below what limits.max_sessions and \
                     outbound.max_connections need (plus {RESERVE} for the queue, \
                     listeners and deliveries): raise the hard limit (LimitNOFILE= in the \
                     unit, ulimit -H -n) or lower limits.max_sessions; connections beyond \
                     it wait in the kernel's queue"
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, needed = need, "cannot read or raise the file-descriptor limit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INF: u64 = RLIM_INFINITY;

    /// The rule as an operator would state it.
    fn model(soft: u64, hard: u64, nr_open: u64) -> u64 {
        let cap = if hard == INF { nr_open } else { hard };
        if soft >= cap { soft } else { cap }
    }

    #[test]
    fn the_soft_limit_goes_up_to_the_hard_one() {
        assert_eq!(target(1024, 524_288, 1 << 20), 524_288);
        assert_eq!(target(1024, 1024, 1 << 20), 1024);
        assert_eq!(target(1024, INF, 1 << 20), 1 << 20);
        // Never lowered (an unlimited soft limit stays so).
        assert_eq!(target(INF, INF, 1 << 20), INF);
    }

    proptest! {
        #[test]
        fn target_matches_the_model(
            soft in prop_oneof![0u64..100_000, Just(INF)],
            hard in prop_oneof![0u64..100_000, Just(INF)],
            nr_open in 1u64..(1 << 21),
        ) {
            // The kernel keeps soft <= hard.
            let soft = soft.min(hard);
            let t = target(soft, hard, nr_open);
            prop_assert_eq!(t, model(soft, hard, nr_open));
            prop_assert!(t >= soft);
            prop_assert!(t <= hard || t == soft);
        }
    }
}
