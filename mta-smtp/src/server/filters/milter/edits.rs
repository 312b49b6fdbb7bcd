//! What a milter asks us to change at the end of a message, and the data those changes make.
//! Field positions count as libmilter's do: `m` names the `index`th field of a name (from 1,
//! names compared without case); `i` puts a field at position `index` of the whole header
//! section (from 0); `h` adds at the end of the section. A change or insertion past the end
//! adds at the end; a change to an empty value deletes the field.

use crate::headers;

/// One change a milter asked for, in the order it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// `h`: add at the end of the header section.
    Add { name: String, value: String },
    /// `m`: change (an empty value: delete) the `index`th field called `name`.
    Change {
        index: u32,
        name: String,
        value: String,
    },
    /// `i`: insert at position `index` of the header section.
    Insert {
        index: u32,
        name: String,
        value: String,
    },
}

/// Why a milter's changes cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    /// A field name that is not printable ASCII without a colon (RFC 5322 §2.2).
    #[error("bad header field name {0:?}")]
    Name(String),
    /// A value with a line break that is not folding, or a control character.
    #[error("bad value for header field {0}")]
    Value(String),
    /// A body with a bare CR or a NUL (neither may be in a message we take, RFC 6152 §3).
    #[error("the replacement body has a bare CR or a NUL")]
    Body,
    /// The message the changes make is larger than `limits.max_message_size`.
    #[error("the changed message would be {0} octets, above the size limit")]
    TooBig(usize),
}

/// A field name as we accept it from a milter: 1 to 200 printable ASCII characters, no colon.
pub fn field_name(name: &[u8]) -> Result<String, EditError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b':');
    match ok {
        true => Ok(String::from_utf8_lossy(name).into_owned()),
        false => Err(EditError::Name(String::from_utf8_lossy(name).into_owned())),
    }
}

/// A field value from a milter as it goes after `Name: `: each line break (LF or CRLF) must
/// be followed by a space or tab (folding) and becomes CRLF; no other control character but
/// tab. libmilter filters fold with a bare LF, as sendmail hands values to them.
pub fn field_value(name: &str, value: &[u8]) -> Result<String, EditError> {
    let bad = || EditError::Value(name.to_string());
    let mut out = String::with_capacity(value.len());
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let mut lines = text.split('\n').peekable();
    let mut first = true;
    while let Some(line) = lines.next() {
        // A CR may only come just before the LF.
        let line = match (line.strip_suffix('\r'), lines.peek()) {
            (Some(l), Some(_)) => l,
            _ => line,
        };
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad());
        }
        if !first {
            if !line.starts_with([' ', '\t']) || line.trim().is_empty() {
                return Err(bad());
            }
            out.push_str("\r\n");
        }
        out.push_str(line);
        first = false;
    }
    Ok(out)
}

/// A replacement body with every line ending CRLF (a bare LF becomes CRLF).
///
/// # Errors
/// A bare CR or a NUL.
pub fn body(pieces: &[u8]) -> Result<Vec<u8>, EditError> {
    let mut out = Vec::with_capacity(pieces.len() + pieces.len() / 32);
    let mut i = 0;
    while i < pieces.len() {
        match pieces[i] {
            b'\r' if pieces.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | 0 => return Err(EditError::Body),
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// `data` with `edits` made, in order, and the body replaced by `new_body` when given; at
/// most `max` octets.
///
/// # Errors
/// The result would be larger than `max`.
pub fn apply(
    data: &[u8],
    edits: &[Edit],
    new_body: Option<&[u8]>,
    max: usize,
) -> Result<Vec<u8>, EditError> {
    let found = headers::fields(data);
    let end = found.last().map_or(0, |f| f.range.end);
    // Each field as its bytes, name to final CRLF.
    let mut fields: Vec<(String, Vec<u8>)> = found
        .iter()
        .map(|f| (f.name.to_string(), data[f.range.clone()].to_vec()))
        .collect();
    let line = |name: &str, value: &str| format!("{name}: {value}\r\n").into_bytes();
    for edit in edits {
        match edit {
            Edit::Add { name, value } => fields.push((name.clone(), line(name, value))),
            Edit::Insert { index, name, value } => {
                let at = (*index as usize).min(fields.len());
                fields.insert(at, (name.clone(), line(name, value)));
            }
            Edit::Change { index, name, value } => {
                let nth = fields
                    .iter()
                    .enumerate()
                    .filter(|(_, (n, _))| n.eq_ignore_ascii_case(name))
                    .nth((*index as usize).saturating_sub(1))
                    .map(|(i, _)| i);
                match (nth, value.is_empty()) {
                    (Some(i), true) => {
                        fields.remove(i);
                    }
                    (Some(i), false) => fields[i].1 = line(&fields[i].0.clone(), value),
                    (None, true) => {}
                    (None, false) => fields.push((name.clone(), line(name, value))),
                }
            }
        }
    }
    let rest = &data[end..];
    let size = fields.iter().map(|(_, f)| f.len()).sum::<usize>()
        + new_body.map_or(rest.len(), |b| 2 + b.len());
    if size > max {
        return Err(EditError::TooBig(size));
    }
    let mut out = Vec::with_capacity(size);
    for (_, f) in &fields {
        out.extend_from_slice(f);
    }
    match new_body {
        Some(b) => {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(rest),
    }
    Ok(out)
}

/// Where the body of `data` starts: after the blank line that ends the header section (at
/// the end of the last field when there is none).
pub fn body_start(data: &[u8]) -> usize {
    let end = headers::fields(data).last().map_or(0, |f| f.range.end);
    if data[end..].starts_with(b"\r\n") {
        end + 2
    } else {
        end
    }
}

#[cfg(test)]
#[path = "edits_tests.rs"]
mod tests;
