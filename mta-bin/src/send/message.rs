//! The message `mta send` carries: built from `--subject`, `--body`, `--header` and
//! `--attach` (lettre writes the RFC 5322 header fields, RFC 2047 encoded words and RFC 2045
//! MIME parts), or taken whole from `--data` and put in wire form (every line ending CRLF,
//! RFC 5321 §2.3.8).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use lettre::address::Envelope;
use lettre::message::header::{
    ContentTransferEncoding, ContentType, HeaderName, HeaderValue, Headers,
};
use lettre::message::{Attachment, Body, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};

/// Where a `--body` or `--data` value comes from: `@FILE`, `-` (stdin) or the text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The argument itself.
    Text(String),
    /// `@FILE`.
    File(PathBuf),
    /// `-`.
    Stdin,
}

impl Source {
    /// Reads `-`, `@FILE` or literal text.
    pub fn parse(value: &str) -> Source {
        match value {
            "-" => Source::Stdin,
            _ => match value.strip_prefix('@') {
                Some(path) => Source::File(PathBuf::from(path)),
                None => Source::Text(value.to_string()),
            },
        }
    }

    /// The bytes: the text, the file or all of stdin.
    ///
    /// # Errors
    /// An unreadable file or stdin, named with `flag`.
    pub fn read(&self, flag: &str) -> anyhow::Result<Vec<u8>> {
        match self {
            Source::Text(t) => Ok(t.clone().into_bytes()),
            Source::File(path) => read_file(flag, path),
            Source::Stdin => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                    .with_context(|| format!("{flag} -: cannot read stdin"))?;
                Ok(bytes)
            }
        }
    }
}

fn read_file(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str().is_empty() {
        bail!("{flag} @: no file name after `@` (write {flag} @FILE)");
    }
    std::fs::read(path).with_context(|| {
        format!(
            "{flag} {}: cannot read the file (check the path and its permissions)",
            path.display()
        )
    })
}

/// One `--header 'Name: value'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name, RFC 5322 §3.6.8 `ftext` (printable ASCII but `:`).
    pub name: String,
    /// The unfolded value, one line.
    pub value: String,
}

/// Reads `--header 'Name: value'`.
///
/// # Errors
/// No colon, a name outside RFC 5322 `ftext`, or a value with a line break or another
/// control character (it would end the header field and start another: header injection).
pub fn parse_header(arg: &str) -> anyhow::Result<Header> {
    let Some((name, value)) = arg.split_once(':') else {
        bail!("--header {arg:?}: expected 'Name: value'");
    };
    if !is_field_name(name) {
        bail!(
            "--header {arg:?}: the name {name:?} must be 1 to 76 printable ASCII characters \
             without spaces or colons (RFC 5322 §3.6.8)"
        );
    }
    let value = value.trim_start_matches([' ', '\t']);
    if value.chars().any(|c| c.is_control() && c != '\t') {
        bail!(
            "--header {arg:?}: the value must be one line without control characters \
             (long values are folded for you)"
        );
    }
    Ok(Header {
        name: name.to_string(),
        value: value.to_string(),
    })
}

/// RFC 5322 §3.6.8: `field-name = 1*ftext`, `ftext = %d33-57 / %d59-126`; 76 is lettre's
/// bound (a name and its colon on one 78-character line).
fn is_field_name(name: &str) -> bool {
    (1..=76).contains(&name.len()) && name.bytes().all(|b| matches!(b, 33..=57 | 59..=126))
}

/// An attachment's content type, from its file name's extension, else from its content:
/// UTF-8 text without NUL is `text/plain`, anything else `application/octet-stream`.
pub fn guess_type(path: &Path, content: &[u8]) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let by_ext = match ext.as_str() {
        "txt" | "text" | "log" | "md" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "htm" | "html" => "text/html; charset=utf-8",
        "ics" => "text/calendar; charset=utf-8",
        "eml" => "message/rfc822",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "odt" => "application/vnd.oasis.opendocument.text",
        _ => "",
    };
    if !by_ext.is_empty() {
        by_ext
    } else if !content.contains(&0) && std::str::from_utf8(content).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

/// What the built message is made of.
pub struct Parts<'a> {
    /// The envelope sender; `None` for the null sender `<>`.
    pub from: Option<&'a Address>,
    /// The recipients (each also in `To:`).
    pub to: &'a [Address],
    /// `Subject:`.
    pub subject: &'a str,
    /// The text of the body.
    pub body: Vec<u8>,
    /// `--header` fields: each replaces the fields of the same name we would write, and
    /// several with one name are all kept.
    pub headers: &'a [Header],
    /// `--attach` files.
    pub attach: &'a [PathBuf],
    /// Our EHLO name: the domain of `Message-ID` and of `From:` for the null sender.
    pub helo: &'a str,
}

/// Builds the message in wire form.
///
/// # Errors
/// An unreadable attachment, or an address lettre cannot write.
pub fn build(parts: &Parts<'_>) -> anyhow::Result<Vec<u8>> {
    // RFC 5322 §3.6.2 wants an originator even when the envelope sender is null, as in a
    // bounce (RFC 3464 §2: from the mailer daemon).
    let author = match parts.from {
        Some(a) => a.clone(),
        None => Address::new("MAILER-DAEMON", parts.helo)
            .with_context(|| format!("--helo {:?} is not a domain", parts.helo))?,
    };
    let mut builder = Message::builder()
        .from(Mailbox::new(None, author))
        .subject(parts.subject)
        .envelope(
            Envelope::new(parts.from.cloned(), parts.to.to_vec())
                .context("the envelope needs at least one --to")?,
        );
    for t in parts.to {
        builder = builder.to(Mailbox::new(None, t.clone()));
    }
    let mut message_id = Headers::new();
    message_id.insert_raw(HeaderValue::new(
        HeaderName::new_from_ascii_str("Message-ID"),
        unique_id(parts.helo),
    ));
    let body = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(encoded(parts.body.clone(), true));
    let message = if parts.attach.is_empty() {
        builder.singlepart(body)
    } else {
        let mut mixed = MultiPart::mixed().singlepart(body);
        for path in parts.attach {
            let content = read_file("--attach", path)?;
            let kind = guess_type(path, &content);
            let text = kind.starts_with("text/");
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "attachment".into());
            let kind = ContentType::parse(kind).expect("every guessed type is a valid MIME type");
            mixed = mixed.singlepart(Attachment::new(name).body(encoded(content, text), kind));
        }
        builder.multipart(mixed)
    }
    .context("building the message")?;
    let built = message.formatted();
    Ok(with_headers(&built, &message_id.to_string(), parts.headers))
}

/// A MIME part's body: text that is UTF-8 as lettre's text (CRLF line ends, 7bit or
/// quoted-printable), anything else base64, so that no bare CR, LF or NUL reaches the wire.
fn encoded(content: Vec<u8>, text: bool) -> Body {
    match String::from_utf8(content) {
        Ok(s) if text && !s.contains('\0') => Body::new(
            String::from_utf8(wire_form(s.as_bytes()))
                .expect("CR and LF are all wire_form changes"),
        ),
        Ok(s) => base64(s.into_bytes()),
        Err(e) => base64(e.into_bytes()),
    }
}

fn base64(content: Vec<u8>) -> Body {
    Body::new_with_encoding(content, ContentTransferEncoding::Base64)
        .expect("base64 can carry any bytes")
}

/// `<time.pid@helo>`: unique enough for a test message (RFC 5322 §3.6.4).
fn unique_id(helo: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("<{nanos:x}.{}@{helo}>", std::process::id())
}

/// `message` (header block, empty line, body) with `extra` (complete fields) and the user's
/// `headers` after its own fields; our fields named by a user header are dropped first.
fn with_headers(message: &[u8], extra: &str, headers: &[Header]) -> Vec<u8> {
    let split = find(message, b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    let (head, body) = message.split_at(split);
    let mut out = Vec::with_capacity(message.len() + 256);
    let overridden = |field: &[u8]| {
        let name = field.split(|&b| b == b':').next().unwrap_or_default();
        headers
            .iter()
            .any(|h| h.name.as_bytes().eq_ignore_ascii_case(name))
    };
    for field in fields(head) {
        if !overridden(field) {
            out.extend_from_slice(field);
        }
    }
    if !headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("Message-ID"))
    {
        out.extend_from_slice(extra.as_bytes());
    }
    for h in headers {
        let name = HeaderName::new_from_ascii(h.name.clone())
            .expect("parse_header admits only names lettre takes");
        let mut one = Headers::new();
        one.insert_raw(HeaderValue::new(name, h.value.clone()));
        out.extend_from_slice(one.to_string().as_bytes());
    }
    out.extend_from_slice(body);
    out
}

/// The fields of a header block, each with its folded lines and final CRLF.
fn fields(head: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < head.len() {
        let end = find(&head[i..], b"\r\n").map_or(head.len(), |n| i + n + 2);
        let continues = i > start && matches!(head[i], b' ' | b'\t');
        if !continues && i > start {
            out.push(&head[start..i]);
            start = i;
        }
        i = end;
    }
    if start < head.len() {
        out.push(&head[start..]);
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A whole message as SMTP carries it (RFC 5321 §2.3.8): every line break, CRLF, a bare LF
/// (a Unix file) or a bare CR (a classic Mac file), becomes CRLF, since a server must refuse
/// a bare one (SMTP smuggling).
pub fn wire_form(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if raw.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn whole_messages_become_crlf() {
        let table: [(&[u8], &[u8]); 6] = [
            (b"Subject: a\r\n\r\nbody\r\n", b"Subject: a\r\n\r\nbody\r\n"),
            (b"Subject: a\n\nbody\n", b"Subject: a\r\n\r\nbody\r\n"),
            (b"Subject: a\n\nbody", b"Subject: a\r\n\r\nbody"),
            (b"a\rb\r\r\nc", b"a\r\nb\r\n\r\nc"),
            (b"a\n\r", b"a\r\n\r\n"),
            (b"", b""),
        ];
        for (input, want) in table {
            assert_eq!(
                wire_form(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// The reference model: split the text at every line break (CRLF first, then a lone CR
    /// or LF), join with CRLF.
    fn wire_model(raw: &[u8]) -> Vec<u8> {
        let text: String = raw.iter().map(|&b| b as char).collect();
        let joined = text
            .replace("\r\n", "\n")
            .replace('\r', "\n")
            .replace('\n', "\r\n");
        joined.chars().map(|c| c as u8).collect()
    }

    proptest! {
        #[test]
        fn wire_form_matches_its_model(raw in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>()], 0..64)) {
            prop_assert_eq!(wire_form(&raw), wire_model(&raw));
        }

        #[test]
        fn header_names_match_rfc_5322(arg in "[\\x00-\\x7f]{0,8}(:[ -~\\t\\r\\n]{0,8})?") {
            let (name, value) = arg.split_once(':').unwrap_or((&arg, ""));
            // The model, straight from the grammar: printable ASCII but colon and space.
            let name_ok = !name.is_empty()
                && name.len() <= 76
                && name.chars().all(|c| ('!'..='~').contains(&c) && c != ':');
            let value_ok = !value.contains(['\r', '\n'])
                && !value.chars().any(|c| c.is_ascii_control() && c != '\t');
            let want = arg.contains(':') && name_ok && value_ok;
            prop_assert_eq!(parse_header(&arg).is_ok(), want, "{:?}", arg);
        }
    }

    proptest! {
        /// The reference model of a header block's fields: its lines, each line that starts
        /// with a space or tab joined to the one before (RFC 5322 §2.2.3 folding).
        #[test]
        fn fields_match_their_model(lines in proptest::collection::vec(
            "[ \t]?[A-Za-z: ]{0,6}", 0..8)) {
            let head: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
            let mut model: Vec<String> = Vec::new();
            for line in &lines {
                match model.last_mut() {
                    Some(last) if line.starts_with([' ', '\t']) => {
                        last.push_str(&format!("{line}\r\n"));
                    }
                    _ => model.push(format!("{line}\r\n")),
                }
            }
            let got: Vec<String> = fields(head.as_bytes())
                .iter()
                .map(|f| String::from_utf8(f.to_vec()).unwrap())
                .collect();
            prop_assert_eq!(got, model);
        }
    }

    #[test]
    fn bad_headers_are_named_with_the_fix() {
        let table = [
            ("X-Test", "expected 'Name: value'"),
            (": value", "must be 1 to 76 printable"),
            ("X Test: v", "must be 1 to 76 printable"),
            ("X-Test: a\r\nBcc: evil@example.org", "must be one line"),
            ("X-Test: a\u{1b}[31m", "must be one line"),
        ];
        for (arg, want) in table {
            let e = parse_header(arg).unwrap_err().to_string();
            assert!(e.contains(want), "{arg:?}: {e}");
        }
        assert_eq!(
            parse_header("X-Test:  two words ").unwrap(),
            Header {
                name: "X-Test".into(),
                value: "two words ".into()
            }
        );
    }

    #[test]
    fn user_headers_replace_ours_and_repeat() {
        let message = b"From: a@b.test\r\nSubject: ours\r\n folded\r\nTo: c@d.test\r\n\r\nbody\r\n";
        let headers = [
            parse_header("subject: theirs").unwrap(),
            parse_header("X-Tag: 1").unwrap(),
            parse_header("X-Tag: 2").unwrap(),
        ];
        let out = with_headers(message, "Message-ID: <x@y>\r\n", &headers);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From: a@b.test\r\nTo: c@d.test\r\nMessage-ID: <x@y>\r\nsubject: theirs\r\n\
             X-Tag: 1\r\nX-Tag: 2\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn attachment_types_are_guessed() {
        let table: [(&str, &[u8], &str); 5] = [
            ("report.PDF", b"%PDF", "application/pdf"),
            ("photo.jpeg", b"\xff\xd8", "image/jpeg"),
            ("notes", b"plain words\n", "text/plain; charset=utf-8"),
            ("blob", b"\x00\x01\x02", "application/octet-stream"),
            ("latin1.dat", b"caf\xe9", "application/octet-stream"),
        ];
        for (name, content, want) in table {
            assert_eq!(guess_type(Path::new(name), content), want, "{name}");
        }
    }
}

#[cfg(test)]
mod build_tests {
    use super::*;

    /// Every line of a built message ends CRLF, whatever the attachments hold.
    #[test]
    fn built_messages_have_no_bare_line_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let mut attach = Vec::new();
        for (name, content) in [
            ("notes", &b"plain notes\nsecond\rthird\r\n"[..]),
            ("report.pdf", b"%PDF-1.4\n\x00\x01\n"),
            ("page.html", b"<p>\n</p>\n"),
            ("blob", b"\xff\xfe\n\r"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            attach.push(path);
        }
        let to: Vec<Address> = vec!["bob@example.test".parse().unwrap()];
        let from: Address = "alice@example.test".parse().unwrap();
        let built = build(&Parts {
            from: Some(&from),
            to: &to,
            subject: "s",
            body: wire_form(b"a\nb\n"),
            headers: &[],
            attach: &attach,
            helo: "client.test",
        })
        .unwrap();
        assert_eq!(
            wire_form(&built),
            built,
            "{}",
            String::from_utf8_lossy(&built)
        );
    }
}
