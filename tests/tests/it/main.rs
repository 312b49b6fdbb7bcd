//! End-to-end scenarios: the real `mta` binary on loopback with real clients (swaks,
//! Python's smtplib, `mta send`), one `mod` per area, all in one test binary (STYLE §5).
//! Each test starts its own server, so they run in parallel.

mod dialogs;
mod durability;
mod harness;
mod headers;
mod protocol;
mod python;
mod send;
mod shutdown;
mod startup;
mod swaks;
mod users;
