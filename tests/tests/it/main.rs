//! End-to-end scenarios: the real `mta` binary on loopback with real clients (swaks,
//! Python's smtplib, `mta send`), one `mod` per area, all in one test binary (STYLE §5).
//! Each test starts its own server, so they run in parallel.

mod dialogs;
mod durability;
mod durability_kill;
mod durability_relay;
mod durability_remote;
mod durability_stop;
mod durability_sync;
mod harness;
mod headers;
mod hostile;
mod protocol;
mod python;
mod relay;
mod relay_bounce;
mod relay_client;
mod relay_content;
mod relay_forward;
mod relay_harness;
mod relay_smarthost;
mod relay_tls;
mod send;
mod shutdown;
mod startup;
mod swaks;
mod users;
