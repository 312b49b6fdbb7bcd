//! The report XML of a DMARC aggregate report message (RFC 7489 §7.2.1.1): an XML part, or
//! a gzip or zip attachment holding it, read under one byte budget for the whole message.
//!
//! mail-auth's own `Report::parse_rfc5322` caps each decompressed part at its `max_size`,
//! but not the message as a whole: a message of many small gzip bombs, or a zip whose
//! central directory names the same compressed bytes a hundred thousand times, would be
//! expanded to `max_size` once per part or entry. Here every byte decompressed (and every
//! byte of plain XML) counts against one budget, the first report that parses wins, and a
//! budget spent ends the reading.

use std::io::{Cursor, Read};

use flate2::read::GzDecoder;
use mail_auth::report::Report;
use mail_parser::{MessageParser, MimeHeaders, PartType};

/// Zip entries looked at in one archive: a report archive holds one XML file.
pub const MAX_ZIP_ENTRIES: usize = 4;

/// Why no report came out of a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtractError {
    /// Not a MIME message at all.
    #[error("not a MIME message")]
    NotMime,
    /// No part is XML, gzip or zip.
    #[error("no XML, gzip or zip part")]
    NoReport,
    /// More than the budget of report XML (after decompression).
    #[error("more than {max} bytes of report XML after decompression")]
    TooLarge {
        /// The budget (`dmarc_reports.max_size`).
        max: u64,
    },
    /// A gzip or zip attachment that cannot be read.
    #[error("cannot decompress: {0}")]
    Decompress(String),
    /// XML that is not a DMARC aggregate report.
    #[error("not a DMARC report: {0}")]
    Xml(String),
}

/// How many bytes may still be decompressed or parsed for one message.
pub struct Budget {
    max: u64,
    left: u64,
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Budget {
        Budget { max, left: max }
    }

    /// Bytes still allowed.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// Everything `reader` gives, if it fits in what is left; the bytes read are spent
    /// either way. Never reads more than one byte past the budget.
    ///
    /// # Errors
    /// [`ExtractError::TooLarge`] past the budget, [`ExtractError::Decompress`] when the
    /// reader fails.
    pub fn read(&mut self, reader: impl Read) -> Result<Vec<u8>, ExtractError> {
        let mut buf = Vec::new();
        let got = reader
            .take(self.left.saturating_add(1))
            .read_to_end(&mut buf);
        let spent = (buf.len() as u64).min(self.left);
        self.left -= spent;
        if buf.len() as u64 > spent {
            return Err(ExtractError::TooLarge { max: self.max });
        }
        got.map_err(|e| ExtractError::Decompress(e.to_string()))?;
        Ok(buf)
    }

    /// Counts `bytes` of plain XML against the budget.
    fn spend(&mut self, bytes: &[u8]) -> Result<(), ExtractError> {
        self.read(Cursor::new(bytes)).map(drop)
    }
}

/// What a MIME part holds, by its type or else its file name's extension.
enum Kind {
    Xml,
    Gzip,
    Zip,
}

fn kind(content_subtype: Option<&str>, name: Option<&str>) -> Option<Kind> {
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let ext = name.and_then(|n| n.rsplit_once('.')).map(|(_, e)| e);
    match (content_subtype, ext) {
        (Some(t), _) if is(t, "gzip") || is(t, "x-gzip") => Some(Kind::Gzip),
        (Some(t), _) if is(t, "zip") || is(t, "x-zip-compressed") => Some(Kind::Zip),
        (Some(t), _) if is(t, "xml") => Some(Kind::Xml),
        (_, Some(e)) if is(e, "gz") => Some(Kind::Gzip),
        (_, Some(e)) if is(e, "zip") => Some(Kind::Zip),
        (_, Some(e)) if is(e, "xml") => Some(Kind::Xml),
        _ => None,
    }
}

/// The first DMARC aggregate report in `message`, decompressing at most `max_size` bytes
/// in all. `max_records` bounds what the XML parser builds: records past it are cut off
/// before parsing, and their number is returned with the report.
///
/// # Errors
/// See [`ExtractError`]; the last error met when no part held a report.
pub fn report(
    message: &[u8],
    max_size: u64,
    max_records: usize,
) -> Result<(Report, usize), ExtractError> {
    let parsed = MessageParser::new()
        .parse(message)
        .ok_or(ExtractError::NotMime)?;
    let mut budget = Budget::new(max_size);
    let mut error = ExtractError::NoReport;
    for part in &parsed.parts {
        let subtype = part.content_type().and_then(|ct| ct.subtype());
        let name = part.attachment_name();
        let bytes: &[u8] = match &part.body {
            PartType::Text(t) => t.as_bytes(),
            PartType::Binary(b) | PartType::InlineBinary(b) => b,
            _ => continue,
        };
        let Some(kind) = kind(subtype, name) else {
            continue;
        };
        let xmls = match kind {
            Kind::Xml => budget.spend(bytes).map(|()| vec![bytes.to_vec()]),
            Kind::Gzip => budget.read(GzDecoder::new(bytes)).map(|x| vec![x]),
            Kind::Zip => zip_entries(bytes, &mut budget),
        };
        let xmls = match xmls {
            Ok(x) => x,
            Err(e @ ExtractError::TooLarge { .. }) => return Err(e),
            Err(e) => {
                error = e;
                continue;
            }
        };
        for xml in xmls {
            let (xml, dropped) = cut_records(&xml, max_records);
            match Report::parse_xml(&xml) {
                Ok(r) => return Ok((r, dropped)),
                Err(e) => error = ExtractError::Xml(e),
            }
        }
    }
    Err(error)
}

/// The contents of the first [`MAX_ZIP_ENTRIES`] files of a zip archive. The size an entry
/// claims is not trusted: each is read through the budget.
fn zip_entries(bytes: &[u8], budget: &mut Budget) -> Result<Vec<Vec<u8>>, ExtractError> {
    // The archive's central directory is held in memory: only as large as the budget.
    if bytes.len() as u64 > budget.left() {
        return Err(ExtractError::TooLarge { max: budget.max });
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| ExtractError::Decompress(e.to_string()))?;
    let mut out = Vec::new();
    for i in 0..archive.len().min(MAX_ZIP_ENTRIES) {
        let file = archive
            .by_index(i)
            .map_err(|e| ExtractError::Decompress(e.to_string()))?;
        if file.is_dir() {
            continue;
        }
        out.push(budget.read(file)?);
    }
    Ok(out)
}

/// `xml` with every `<record>` after the first `max` cut off (and the feedback element
/// closed again), and how many were cut. The schema puts the records last in `<feedback>`
/// (RFC 7489 appendix C), so nothing else is lost.
pub fn cut_records(xml: &[u8], max: usize) -> (std::borrow::Cow<'_, [u8]>, usize) {
    let starts = record_starts(xml);
    if starts.len() <= max {
        return (std::borrow::Cow::Borrowed(xml), 0);
    }
    let mut cut = xml[..starts[max]].to_vec();
    cut.extend_from_slice(b"</feedback>");
    (std::borrow::Cow::Owned(cut), starts.len() - max)
}

/// Positions of the `<record>` start tags (`<record>` or `<record` and white space).
fn record_starts(xml: &[u8]) -> Vec<usize> {
    const TAG: &[u8] = b"<record";
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = find(&xml[at..], TAG) {
        let pos = at + i;
        if let Some(b'>' | b' ' | b'\t' | b'\r' | b'\n') = xml.get(pos + TAG.len()) {
            out.push(pos);
        }
        at = pos + TAG.len();
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
