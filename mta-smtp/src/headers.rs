//! The header section of a queued message, field by field: enough to find the `From:`
//! domain to sign for ([`fields`], strict), and to find forged `Authentication-Results:` and
//! spoofed `From:` fields wherever a lenient reader would see them ([`all_fields`]), without
//! parsing the whole message.

use std::ops::Range;

/// One header field as it is in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name as written (compare with `eq_ignore_ascii_case`).
    pub name: &'a str,
    /// Everything after the colon up to the CRLF that ends the field, folding included.
    pub value: &'a [u8],
    /// The whole field, name to its final CRLF included, within the message.
    pub range: Range<usize>,
}

/// The fields of the header section, in order. Stops at the blank line before the body, at the
/// end of the data, or at a line that is neither a field nor a continuation (what follows is
/// not reliably header).
pub fn fields(data: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let end = data[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(data.len(), |i| pos + i + 2);
        let line = &data[pos..end];
        let text = line.strip_suffix(b"\r\n").unwrap_or(line);
        if text.is_empty() {
            break;
        }
        if text[0] == b' ' || text[0] == b'\t' {
            // A continuation line belongs to the field above it.
            let Some(last) = out.last_mut() else { break };
            last.range.end = end;
            let colon = last.range.start + last.name.len() + 1;
            last.value = trim_crlf(&data[colon..end]);
        } else {
            let Some(name) = field_name(text) else { break };
            let colon = pos + text.iter().position(|&b| b == b':').unwrap_or(0);
            out.push(Field {
                name,
                value: trim_crlf(&data[colon + 1..end]),
                range: pos..end,
            });
        }
        pos = end;
    }
    out
}

/// Every field of the header section, as a lenient reader may see it: up to the blank line
/// before the body, a line that is not a field does not end the section (readers differ on
/// that), and white space between a name and its colon is allowed (RFC 5322 §4.5.3
/// obs-optional). The `name` is given without that white space. Used where a field we miss
/// would be one a mail client shows: forged `Authentication-Results:`, a spoofed `From:`.
pub fn all_fields(data: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = Vec::new();
    // Whether the line above was a field (or its continuation): only then is a line that
    // starts with white space part of a field.
    let mut in_field = false;
    let mut pos = 0;
    while pos < data.len() {
        let end = data[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(data.len(), |i| pos + i + 2);
        let line = &data[pos..end];
        let text = line.strip_suffix(b"\r\n").unwrap_or(line);
        if text.is_empty() {
            break;
        }
        if text[0] == b' ' || text[0] == b'\t' {
            if let (true, Some(last)) = (in_field, out.last_mut()) {
                last.range.end = end;
                let colon = last.range.start + colon_of(&data[last.range.clone()]);
                last.value = trim_crlf(&data[colon + 1..end]);
            }
        } else if let Some(colon) = text.iter().position(|&b| b == b':')
            && let Some(name) = obs_name(&text[..colon])
        {
            out.push(Field {
                name,
                value: trim_crlf(&data[pos + colon + 1..end]),
                range: pos..end,
            });
            in_field = true;
        } else {
            in_field = false;
        }
        pos = end;
    }
    out
}

/// The offset of the first colon of a field (there is one: the field was found by it).
fn colon_of(field: &[u8]) -> usize {
    field.iter().position(|&b| b == b':').unwrap_or(0)
}

/// A field name before its colon, white space after it allowed: printable ASCII.
fn obs_name(before_colon: &[u8]) -> Option<&str> {
    let name = before_colon.trim_ascii_end();
    let valid = !name.is_empty() && name.iter().all(|b| (0x21..=0x7e).contains(b));
    valid.then(|| std::str::from_utf8(name).ok()).flatten()
}

/// The value unfolded (RFC 5322 §2.2.3: CRLF before white space removed), trimmed, as text;
/// `None` when it is not UTF-8.
pub fn unfold(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    Some(text.replace("\r\n", "").trim().to_string())
}

fn trim_crlf(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\r\n").unwrap_or(bytes)
}

/// The field name of a line (printable ASCII but `:`, no white space inside), or `None`.
fn field_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let valid = !name.is_empty() && name.iter().all(|b| (0x21..=0x7e).contains(b));
    valid.then(|| std::str::from_utf8(name).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_folding_stop_at_the_body() {
        let msg = b"From: a@b.test\r\nSubject: one\r\n\ttwo\r\nX:\r\n\r\nNot: header\r\n";
        let f = fields(msg);
        let names: Vec<&str> = f.iter().map(|f| f.name).collect();
        assert_eq!(names, ["From", "Subject", "X"]);
        assert_eq!(f[1].value, b" one\r\n\ttwo");
        assert_eq!(&msg[f[1].range.clone()], b"Subject: one\r\n\ttwo\r\n");
        assert_eq!(unfold(f[1].value).unwrap(), "one\ttwo");
        assert_eq!(f[2].value, b"");
    }

    #[test]
    fn stops_at_a_line_that_is_not_a_field() {
        let f = fields(b"From: a@b.test\r\nno colon here\r\nTo: c@d.test\r\n\r\n");
        assert_eq!(f.len(), 1);
        assert!(fields(b" leading continuation\r\n").is_empty());
        let last = fields(b"Subject: no final newline");
        assert_eq!(last[0].value, b" no final newline");
    }

    #[test]
    fn all_fields_go_on_past_a_line_that_is_not_a_field() {
        let msg = b"From: a@b.test\r\nno colon here\r\n folded junk\r\nTo : c@d.test\r\n\tmore\r\n\
                    Bad Name: x\r\nX:y\r\n\r\nBody: no\r\n";
        let f = all_fields(msg);
        let names: Vec<&str> = f.iter().map(|f| f.name).collect();
        assert_eq!(names, ["From", "To", "X"]);
        assert_eq!(f[1].value, b" c@d.test\r\n\tmore");
        assert_eq!(&msg[f[1].range.clone()], b"To : c@d.test\r\n\tmore\r\n");
        assert_eq!(f[2].value, b"y");
        assert!(all_fields(b" leading continuation\r\nA: b\r\n").len() == 1);
    }
}
