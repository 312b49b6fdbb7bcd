//! The frames of Sendmail's milter protocol (version 6, as libmilter speaks it): a 4-octet
//! big-endian length, which counts the command letter and its data, then the letter, then the
//! data. [`encode`] writes what we send; [`decode`] reads what the filter sends back, checking
//! every length before it is used and never reserving more than [`MAX_FRAME`].

use thiserror::Error;

/// The largest frame we read: larger is a broken or hostile filter. A body replacement comes
/// in several `b` frames, each far smaller than this.
pub const MAX_FRAME: usize = 1 << 20;

/// The protocol version we speak.
pub const VERSION: u32 = 6;

/// `SMFIF_*`: the changes a filter may ask for; we offer those we carry out.
pub mod action {
    pub const ADD_HEADERS: u32 = 0x01;
    pub const CHANGE_BODY: u32 = 0x02;
    pub const ADD_RCPT: u32 = 0x04;
    pub const DEL_RCPT: u32 = 0x08;
    pub const CHANGE_HEADERS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
}

/// `SMFIP_*`: the steps a filter may ask us to leave out, or not to wait for a reply to.
pub mod step {
    pub const NO_CONNECT: u32 = 0x01;
    pub const NO_HELO: u32 = 0x02;
    pub const NO_MAIL: u32 = 0x04;
    pub const NO_RCPT: u32 = 0x08;
    pub const NO_BODY: u32 = 0x10;
    pub const NO_HEADERS: u32 = 0x20;
    pub const NO_EOH: u32 = 0x40;
    pub const NR_HEADER: u32 = 0x80;
    pub const NO_UNKNOWN: u32 = 0x100;
    pub const NO_DATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const NR_CONNECT: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x1_0000;
    pub const NR_UNKNOWN: u32 = 0x2_0000;
    pub const NR_EOH: u32 = 0x4_0000;
    pub const NR_BODY: u32 = 0x8_0000;
}

/// What we send to a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `O`: our version, the actions we allow, the steps a filter may leave out.
    OptNeg {
        version: u32,
        actions: u32,
        steps: u32,
    },
    /// `D`: macros for the command with letter `stage`, as name/value pairs.
    Macros {
        stage: u8,
        pairs: Vec<(&'a str, String)>,
    },
    /// `C`: the client's name, and its address (`family` `4` or `6`).
    Connect {
        host: &'a str,
        family: u8,
        port: u16,
        address: String,
    },
    /// `H`: the EHLO name.
    Helo(&'a str),
    /// `M`: the reverse path in angle brackets, then ESMTP parameters.
    Mail(Vec<String>),
    /// `R`: one recipient in angle brackets.
    Rcpt(Vec<String>),
    /// `T`: DATA.
    Data,
    /// `L`: one header field, its value without the space after the colon.
    Header { name: &'a [u8], value: &'a [u8] },
    /// `N`: end of the header section.
    Eoh,
    /// `B`: a piece of the body.
    Body(&'a [u8]),
    /// `E`: end of the message.
    Eom,
    /// `Q`: goodbye.
    Quit,
}

impl Command<'_> {
    /// The command's letter.
    pub fn letter(&self) -> u8 {
        match self {
            Command::OptNeg { .. } => b'O',
            Command::Macros { .. } => b'D',
            Command::Connect { .. } => b'C',
            Command::Helo(_) => b'H',
            Command::Mail(_) => b'M',
            Command::Rcpt(_) => b'R',
            Command::Data => b'T',
            Command::Header { .. } => b'L',
            Command::Eoh => b'N',
            Command::Body(_) => b'B',
            Command::Eom => b'E',
            Command::Quit => b'Q',
        }
    }
}

/// Appends `text` and a NUL.
fn cstr(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(text);
    out.push(0);
}

/// The frame of `command`. NULs inside a string would end it early: callers send only text
/// that has none (the session refuses NUL in commands and data).
pub fn encode(command: &Command<'_>) -> Vec<u8> {
    let mut data = Vec::new();
    match command {
        Command::OptNeg {
            version,
            actions,
            steps,
        } => {
            for n in [version, actions, steps] {
                data.extend_from_slice(&n.to_be_bytes());
            }
        }
        Command::Macros { stage, pairs } => {
            data.push(*stage);
            for (name, value) in pairs {
                cstr(&mut data, name.as_bytes());
                cstr(&mut data, value.as_bytes());
            }
        }
        Command::Connect {
            host,
            family,
            port,
            address,
        } => {
            cstr(&mut data, host.as_bytes());
            data.push(*family);
            data.extend_from_slice(&port.to_be_bytes());
            cstr(&mut data, address.as_bytes());
        }
        Command::Helo(name) => cstr(&mut data, name.as_bytes()),
        Command::Mail(args) | Command::Rcpt(args) => {
            for a in args {
                cstr(&mut data, a.as_bytes());
            }
        }
        Command::Header { name, value } => {
            cstr(&mut data, name);
            cstr(&mut data, value);
        }
        Command::Body(chunk) => data.extend_from_slice(chunk),
        Command::Data | Command::Eoh | Command::Eom | Command::Quit => {}
    }
    let mut frame = Vec::with_capacity(5 + data.len());
    frame.extend_from_slice(&(data.len() as u32 + 1).to_be_bytes());
    frame.push(command.letter());
    frame.extend_from_slice(&data);
    frame
}

/// What a filter sends us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `O`: the filter's version, the actions it wants, the steps it leaves out. Anything
    /// after (a list of macros it would like) is ignored.
    OptNeg {
        version: u32,
        actions: u32,
        steps: u32,
    },
    /// `a`: accept the message, ask nothing more.
    Accept,
    /// `c`: go on.
    Continue,
    /// `r`: refuse for good.
    Reject,
    /// `t`: refuse for now.
    TempFail,
    /// `d`: accept and drop.
    Discard,
    /// `y`: refuse with the filter's own reply line (`550 5.7.1 text`).
    ReplyCode(Vec<u8>),
    /// `p`: still working; wait longer.
    Progress,
    /// `q`: hold the message, with a reason.
    Quarantine(Vec<u8>),
    /// `s`: send no more body.
    Skip,
    /// `h`: add a header field.
    AddHeader { name: Vec<u8>, value: Vec<u8> },
    /// `m`: change the `index`th (from 1) field called `name`; an empty value deletes it.
    ChangeHeader {
        index: u32,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    /// `i`: insert a field so that it is the `index`th (from 0) of the header section.
    InsertHeader {
        index: u32,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    /// `b`: a piece of the new body (the pieces replace the body, in order).
    ReplaceBody(Vec<u8>),
    /// `+` or `-`: add or remove a recipient, which we never allow (see the filter).
    Recipient(u8),
}

/// Why a filter's bytes are not a reply.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A length of 0 (no letter) or above [`MAX_FRAME`].
    #[error("frame length {0} is out of bounds (1..={MAX_FRAME})")]
    Length(u32),
    /// A letter that is no reply of the protocol.
    #[error("unknown reply letter {0:#04x}")]
    Letter(u8),
    /// The data does not fit the letter (too short, a string without its NUL).
    #[error("malformed {0:?} reply")]
    Malformed(char),
}

/// The first reply in `buf` and how many octets it took; `None` while the frame is still
/// incomplete (read more). Nothing is reserved before the length is checked.
///
/// # Errors
/// The frame is not a reply of the protocol.
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, DecodeError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if len == 0 || len as usize > MAX_FRAME {
        return Err(DecodeError::Length(len));
    }
    let end = 4 + len as usize;
    let Some(frame) = buf.get(4..end) else {
        return Ok(None);
    };
    let (letter, data) = (frame[0], &frame[1..]);
    let bad = || DecodeError::Malformed(letter as char);
    let reply = match letter {
        b'O' => {
            let n = |i: usize| -> Result<u32, DecodeError> {
                let b = data.get(i * 4..i * 4 + 4).ok_or_else(bad)?;
                Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            };
            Reply::OptNeg {
                version: n(0)?,
                actions: n(1)?,
                steps: n(2)?,
            }
        }
        b'a' | b'c' | b'r' | b't' | b'd' | b'p' | b's' => {
            if !data.is_empty() {
                return Err(bad());
            }
            match letter {
                b'a' => Reply::Accept,
                b'c' => Reply::Continue,
                b'r' => Reply::Reject,
                b't' => Reply::TempFail,
                b'd' => Reply::Discard,
                b'p' => Reply::Progress,
                _ => Reply::Skip,
            }
        }
        b'y' => Reply::ReplyCode(one_string(data).ok_or_else(bad)?),
        b'q' => Reply::Quarantine(one_string(data).ok_or_else(bad)?),
        b'h' => {
            let (name, value) = two_strings(data).ok_or_else(bad)?;
            Reply::AddHeader { name, value }
        }
        b'm' | b'i' => {
            let index = data.get(..4).ok_or_else(bad)?;
            let index = u32::from_be_bytes([index[0], index[1], index[2], index[3]]);
            let (name, value) = two_strings(&data[4..]).ok_or_else(bad)?;
            if letter == b'm' {
                Reply::ChangeHeader { index, name, value }
            } else {
                Reply::InsertHeader { index, name, value }
            }
        }
        b'b' => Reply::ReplaceBody(data.to_vec()),
        b'+' | b'-' => Reply::Recipient(letter),
        other => return Err(DecodeError::Letter(other)),
    };
    Ok(Some((reply, end)))
}

/// `text\0` exactly: the text.
fn one_string(data: &[u8]) -> Option<Vec<u8>> {
    let (text, rest) = split_nul(data)?;
    rest.is_empty().then(|| text.to_vec())
}

/// `name\0value\0` exactly: the two.
fn two_strings(data: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (name, rest) = split_nul(data)?;
    let (value, rest) = split_nul(rest)?;
    rest.is_empty().then(|| (name.to_vec(), value.to_vec()))
}

fn split_nul(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = data.iter().position(|&b| b == 0)?;
    Some((&data[..at], &data[at + 1..]))
}

/// The frame of `reply`, as a filter sends it: for the tests' filters and the codec's own
/// round-trip check.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    let mut data = Vec::new();
    let letter = match reply {
        Reply::OptNeg {
            version,
            actions,
            steps,
        } => {
            for n in [version, actions, steps] {
                data.extend_from_slice(&n.to_be_bytes());
            }
            b'O'
        }
        Reply::Accept => b'a',
        Reply::Continue => b'c',
        Reply::Reject => b'r',
        Reply::TempFail => b't',
        Reply::Discard => b'd',
        Reply::Progress => b'p',
        Reply::Skip => b's',
        Reply::ReplyCode(text) => {
            cstr(&mut data, text);
            b'y'
        }
        Reply::Quarantine(text) => {
            cstr(&mut data, text);
            b'q'
        }
        Reply::AddHeader { name, value } => {
            cstr(&mut data, name);
            cstr(&mut data, value);
            b'h'
        }
        Reply::ChangeHeader { index, name, value } | Reply::InsertHeader { index, name, value } => {
            data.extend_from_slice(&index.to_be_bytes());
            cstr(&mut data, name);
            cstr(&mut data, value);
            if matches!(reply, Reply::ChangeHeader { .. }) {
                b'm'
            } else {
                b'i'
            }
        }
        Reply::ReplaceBody(chunk) => {
            data.extend_from_slice(chunk);
            b'b'
        }
        Reply::Recipient(letter) => *letter,
    };
    let mut frame = Vec::with_capacity(5 + data.len());
    frame.extend_from_slice(&(data.len() as u32 + 1).to_be_bytes());
    frame.push(letter);
    frame.extend_from_slice(&data);
    frame
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
