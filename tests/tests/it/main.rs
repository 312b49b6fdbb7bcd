//! End-to-end scenarios: the real `mta` binary on loopback with real clients (swaks,
//! Python's smtplib, `mta send`), one `mod` per area, all in one test binary (STYLE §5).
//! Each test starts its own server, so they run in parallel.

mod dialogs;
mod dkim;
mod dnssec_server;
mod doctor;
mod dovecot;
mod durability;
mod durability_kill;
mod durability_relay;
mod durability_remote;
mod durability_stop;
mod durability_sync;
mod framing;
mod harness;
mod headers;
mod hostile;
mod inbound_auth;
mod local_delivery;
mod observability;
mod privileges;
mod protocol;
mod python;
mod relay;
mod relay_bounce;
mod relay_client;
mod relay_content;
mod relay_dane;
mod relay_forward;
mod relay_harness;
mod relay_memory;
mod relay_mta_sts;
mod relay_requiretls;
mod relay_smarthost;
mod relay_tls;
mod relay_tlsrpt;
mod reload;
mod send;
mod shutdown;
mod startup;
mod storage_faults;
mod swaks;
mod users;
