//! The parts of `mta-load` worth testing on their own: the SMTP reply parser (RFC 5321
//! section 4.2), the EHLO keyword lookup and the percentiles it prints, and the load itself
//! ([`load`]).

pub mod load;

/// The longest reply line accepted (RFC 5321 section 4.5.3.1.5 says 512 with the CRLF; a few
/// servers send more, so allow some slack). A line this long without its end is an error.
pub const MAX_LINE: usize = 2048;

/// One complete SMTP reply: its code and the text of each line (after the code and the
/// `-` or space, without the line end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// A line that does not start with a three-digit code from 200 to 599 followed by `-`,
    /// a space or the line end.
    BadLine,
    /// A continuation line whose code differs from the first line's.
    CodeChanged,
    /// A line longer than [`MAX_LINE`].
    TooLong,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplyError::BadLine => "malformed reply line",
            ReplyError::CodeChanged => "reply code changed within a multiline reply",
            ReplyError::TooLong => "reply line too long",
        })
    }
}

impl std::error::Error for ReplyError {}

/// Parses the first complete reply in `buf`. Lines end with CRLF or a bare LF. Returns the
/// reply and how many bytes it took, `Ok(None)` when `buf` holds no complete reply yet.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut code = None;
    let mut lines = Vec::new();
    loop {
        let rest = &buf[pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > MAX_LINE {
                return Err(ReplyError::TooLong);
            }
            return Ok(None);
        };
        if nl + 1 > MAX_LINE {
            return Err(ReplyError::TooLong);
        }
        let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
        pos += nl + 1;
        let (this, last, text) = split_line(line)?;
        match code {
            None => code = Some(this),
            Some(c) if c != this => return Err(ReplyError::CodeChanged),
            Some(_) => {}
        }
        lines.push(String::from_utf8_lossy(text).into_owned());
        if last {
            let code = code.unwrap_or(this);
            return Ok(Some((Reply { code, lines }, pos)));
        }
    }
}

/// A line's code, whether it is the last line, and its text.
fn split_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let ok_digits = line.len() >= 3
        && (b'2'..=b'5').contains(&line[0])
        && line[1].is_ascii_digit()
        && line[2].is_ascii_digit();
    if !ok_digits {
        return Err(ReplyError::BadLine);
    }
    let code = line[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None => Ok((code, true, &[])),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(ReplyError::BadLine),
    }
}

/// Whether an EHLO reply offers `keyword` (the first word of a line after the greeting,
/// case-insensitive, RFC 5321 section 4.1.1.1).
pub fn offers(ehlo: &Reply, keyword: &str) -> bool {
    ehlo.lines.iter().skip(1).any(|l| {
        l.split_ascii_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
    })
}

/// The `p`-th percentile (0-100) of sorted values by the nearest-rank method; `None` for no
/// values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Multiplied before divided: 0.28 × 25 is 7.000000000000001 in floating point, whose
    // ceiling would be the 8th value where the 7th is the one.
    let rank = (p * sorted.len() as f64 / 100.0).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: cut the whole buffer into lines first, then read them in order.
    fn model(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        let mut used = 0;
        let mut first: Option<u16> = None;
        let mut lines = Vec::new();
        for piece in buf.split_inclusive(|&b| b == b'\n') {
            if !piece.ends_with(b"\n") {
                break;
            }
            if piece.len() > MAX_LINE {
                return Err(ReplyError::TooLong);
            }
            used += piece.len();
            let text = String::from_utf8_lossy(piece);
            let text = text.trim_end_matches('\n');
            let text = text.strip_suffix('\r').unwrap_or(text);
            let bytes = text.as_bytes();
            let code: u16 = match bytes.get(..3).map(std::str::from_utf8) {
                Some(Ok(s)) if s.chars().all(|c| c.is_ascii_digit()) => s.parse().unwrap(),
                _ => return Err(ReplyError::BadLine),
            };
            if !(200..=599).contains(&code) {
                return Err(ReplyError::BadLine);
            }
            let sep = bytes.get(3).copied();
            if !matches!(sep, None | Some(b' ') | Some(b'-')) {
                return Err(ReplyError::BadLine);
            }
            if *first.get_or_insert(code) != code {
                return Err(ReplyError::CodeChanged);
            }
            let rest = String::from_utf8_lossy(&piece[4.min(piece.len())..]).into_owned();
            let rest = rest.trim_end_matches('\n');
            let rest = rest.strip_suffix('\r').unwrap_or(rest).to_string();
            match sep {
                None => {
                    lines.push(String::new());
                    return Ok(Some((Reply { code, lines }, used)));
                }
                Some(b' ') => {
                    lines.push(rest);
                    return Ok(Some((Reply { code, lines }, used)));
                }
                Some(b'-') => lines.push(rest),
                Some(_) => return Err(ReplyError::BadLine),
            }
        }
        if buf.len() - used > MAX_LINE {
            return Err(ReplyError::TooLong);
        }
        Ok(None)
    }

    #[test]
    fn examples() {
        let ehlo = b"250-mx.test hello\r\n250-PIPELINING\r\n250 STARTTLS\r\n354 x";
        let (r, n) = parse_reply(ehlo).unwrap().unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(n, ehlo.len() - 5);
        assert!(offers(&r, "pipelining") && offers(&r, "STARTTLS"));
        assert!(!offers(&r, "mx.test"));
        assert_eq!(parse_reply(b"250-a\r\n250 b").unwrap(), None);
        assert_eq!(
            parse_reply(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::CodeChanged)
        );
        assert_eq!(parse_reply(b"199 no\r\n"), Err(ReplyError::BadLine));
        assert_eq!(parse_reply(b"250\r\n").unwrap().unwrap().0.lines, [""]);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 99.0), Some(4.0));
        assert_eq!(percentile(&[], 50.0), None);
        // 7 of 25 values are 28 %: the 28th percentile is the 7th value.
        let mut v = vec![0.0; 7];
        v.extend([1.0; 18]);
        assert_eq!(percentile(&v, 28.0), Some(0.0));
    }

    /// Buffers made of reply-like lines (right and wrong codes, separators, line ends) and
    /// some noise, so that complete, partial and malformed replies all come up.
    fn buffers() -> impl Strategy<Value = Vec<u8>> {
        let line = (
            prop::sample::select(vec!["250", "251", "354", "550", "199", "2x0", "25", ""]),
            prop::sample::select(vec!["-", " ", "", "x"]),
            "[ -~]{0,12}",
            prop::sample::select(vec!["\r\n", "\n", "", "\r"]),
        )
            .prop_map(|(c, s, t, e)| format!("{c}{s}{t}{e}").into_bytes());
        let long = Just(vec![b'a'; MAX_LINE + 1]);
        prop::collection::vec(prop_oneof![8 => line, 1 => long], 0..6).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn parser_matches_model(buf in buffers()) {
            prop_assert_eq!(parse_reply(&buf), model(&buf));
        }

        #[test]
        fn parser_matches_model_on_any_bytes(buf in prop::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(parse_reply(&buf), model(&buf));
        }

        #[test]
        fn percentile_is_an_element_with_enough_below(
            mut v in prop::collection::vec(0u32..1000, 1..50), p in 1u32..=100
        ) {
            v.sort_unstable();
            let f: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
            let got = percentile(&f, f64::from(p)).unwrap();
            let at_or_below = f.iter().filter(|&&x| x <= got).count();
            let below = f.iter().filter(|&&x| x < got).count();
            // Nearest rank: the smallest value with at least p % of the values at or below it.
            prop_assert!(at_or_below * 100 >= p as usize * f.len());
            prop_assert!(below * 100 < p as usize * f.len());
        }
    }
}
