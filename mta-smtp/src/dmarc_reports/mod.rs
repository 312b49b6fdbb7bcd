//! DMARC aggregate reports (RFC 7489 §7.2) that other receivers send to our `rua=` address
//! (`[dmarc_reports] address`): read out of the message under a byte budget
//! ([`extract`]), kept as one JSON file per report ([`store`]), and summed up by
//! `mta report dmarc`. A report is unauthenticated data: it is stored as "unverified", and
//! a report that cannot be read gets one log line and nothing else (no notice to its
//! sender, which could only be backscatter).

pub mod extract;
pub mod store;

use std::path::Path;

use mta_core::config::DmarcReports;
use mta_core::text::escape;

use store::{Saved, StoredReport};

/// Parses `message` (as queued) and stores its report; logs what happened, once. Blocking.
/// Never fails: the message is delivered to its Maildir whatever happens here.
pub fn ingest(config: &DmarcReports, data_dir: &Path, msg: &str, message: &[u8], now: u64) {
    let (report, dropped) = match extract::report(message, config.max_size, config.max_records) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%msg, error = %escape(&e.to_string()), "DMARC report not read");
            return;
        }
    };
    let stored = StoredReport::new(&report, now, dropped, config.max_records);
    let org = escape(&stored.org);
    let id = escape(&stored.report_id);
    let domain = escape(&stored.policy.domain);
    match store::save(data_dir, &stored, config.max_per_day) {
        Ok(Saved::Stored(path)) => tracing::info!(
            %msg, %org, report_id = %id, %domain, records = stored.records.len(),
            records_dropped = stored.records_dropped, file = %path.display(),
            "DMARC report stored (source unverified)"
        ),
        Ok(Saved::Duplicate) => {
            tracing::info!(%msg, %org, report_id = %id, "DMARC report already stored");
        }
        Ok(Saved::DayFull) => tracing::warn!(
            %msg, %org, report_id = %id, max_per_day = config.max_per_day,
            "DMARC report dropped: today's reports are stored already"
        ),
        Err(e) => tracing::warn!(%msg, %org, report_id = %id, error = %e,
            "DMARC report not stored"),
    }
}

/// [`ingest`] for a message being delivered to the report address, on a blocking thread.
/// Its delivery goes on as for any recipient, whatever the report holds.
pub async fn ingest_delivered(
    config: &std::sync::Arc<mta_core::config::Config>,
    msg: String,
    body: mta_core::seams::Body,
) {
    let config = config.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let task = tokio::task::spawn_blocking(move || {
        ingest(&config.dmarc_reports, &config.data_dir, &msg, &body, now);
    });
    if let Err(e) = task.await {
        tracing::warn!(error = %e, "DMARC report task failed");
    }
}

#[cfg(test)]
mod tests;
