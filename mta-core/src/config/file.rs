//! The config file as TOML: [`RawConfig`] mirrors it key for key (every key optional, unknown
//! keys refused), [`parse`] reads it; `print.rs` turns a [`Config`] back into it. Validation and
//! defaults are in `validate.rs`; this module only knows the shape of the file.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, ConfigErrors, size};

/// A value with the byte range it was read from, for error positions.
pub(super) type S<T> = Spanned<T>;
/// A list whose elements each keep their own position.
pub(super) type List = S<Vec<S<String>>>;

/// The whole file. Integers are read as `i64` so that a negative or out-of-range value gets a
/// validation message with the others instead of stopping the parse.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub hostname: Option<S<String>>,
    pub data_dir: Option<S<String>>,
    pub local_domains: Option<List>,
    pub shutdown_grace: Option<S<String>>,
    pub user: Option<S<String>>,
    pub group: Option<S<String>>,
    pub allow_root: Option<bool>,
    pub sandbox: Option<bool>,
    #[serde(default)]
    pub listen: RawListen,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub outbound: RawOutbound,
    #[serde(default)]
    pub queue: RawQueue,
    pub aliases: Option<BTreeMap<S<String>, List>>,
    /// `[dkim."example.org"]` or `[[dkim."example.org"]]`: domain → its keys.
    pub dkim: Option<BTreeMap<S<String>, OneOrMany<RawDkimKey>>>,
    #[serde(default)]
    pub inbound: RawInbound,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub local: RawLocal,
    #[serde(default)]
    pub srs: RawSrs,
    /// `[senders]`: login → the sender patterns it may use.
    #[serde(default)]
    pub senders: Option<BTreeMap<S<String>, List>>,
    #[serde(default)]
    pub dmarc_reports: RawDmarcReports,
    #[serde(default)]
    pub auth: RawAuth,
    pub acme: Option<S<RawAcme>>,
}

/// `[srs]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSrs {
    pub enabled: Option<bool>,
    pub domain: Option<S<String>>,
    pub max_age: Option<S<String>>,
}

/// `[dmarc_reports]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDmarcReports {
    pub address: Option<S<String>>,
    pub max_size: Option<S<size::Size>>,
    pub max_records: Option<S<i64>>,
    pub max_per_day: Option<S<i64>>,
    #[serde(default)]
    pub send: RawDmarcSend,
}

/// `[dmarc_reports.send]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDmarcSend {
    pub enabled: Option<S<bool>>,
    pub allow: Option<List>,
    pub org_name: Option<S<String>>,
    pub contact: Option<S<String>>,
    pub interval: Option<S<String>>,
    pub max_records: Option<S<i64>>,
}

/// `[acme]` as the file gives it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    pub directory: Option<S<String>>,
    pub contact: Option<List>,
    pub names: Option<List>,
    pub challenge: Option<S<String>>,
    pub http_listen: Option<S<String>>,
    pub tls_alpn_listen: Option<S<String>>,
    pub ca_root: Option<S<String>>,
    pub renew_before: Option<S<String>>,
}

/// `[auth]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub backend: Option<S<String>>,
    pub socket: Option<S<String>>,
}

/// `[metrics]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub listen: Option<S<String>>,
}

/// `[local]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLocal {
    pub delivery: Option<S<String>>,
    pub lmtp: Option<S<String>>,
    pub recipient_delimiter: Option<S<String>>,
    pub mail_group: Option<S<String>>,
    #[serde(default)]
    pub line_endings: Option<S<String>>,
}

/// One DKIM key table. `selector` and `key` are required, but checked in validation so that
/// their absence is reported with the other problems.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkimKey {
    pub selector: Option<S<String>>,
    pub key: Option<S<String>>,
    pub algorithm: Option<S<String>>,
    pub expire: Option<S<String>>,
}

/// `[inbound]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInbound {
    pub checks: Option<bool>,
    pub dmarc_reject: Option<bool>,
    pub spf_reject: Option<bool>,
    pub spoofed_from: Option<S<String>>,
    pub milter: Option<OneOrMany<RawMilter>>,
    pub dnsbl: Option<OneOrMany<RawDnsbl>>,
    pub dnsbl_threshold: Option<S<i64>>,
    pub dnsbl_action: Option<S<String>>,
}

/// `[[inbound.dnsbl]]` as the file has it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDnsbl {
    pub zone: Option<S<String>>,
    pub weight: Option<S<i64>>,
    pub returns: Option<List>,
}

/// `[[inbound.milter]]` as the file has it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMilter {
    pub address: Option<S<String>>,
    pub listeners: Option<List>,
    pub timeout: Option<S<String>>,
    pub on_failure: Option<S<String>>,
}

/// A table (`[a."b"]`) or an array of tables (`[[a."b"]]`), read as a list either way. Written
/// out by hand rather than `#[serde(untagged)]` so that a mistake inside the table keeps its
/// own message ("unknown field") instead of "did not match any variant".
#[derive(Debug)]
pub(super) struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table or an array of tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|one| OneOrMany(vec![one]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMany)
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// `[listen]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub smtp: Option<List>,
    pub submission: Option<List>,
    pub submissions: Option<List>,
}

/// `[tls]`: `cert` and `key`, and every other key kept with its value for validation
/// (`[tls."mail.example.net"]` tables, `tls_names.rs`).
#[derive(Debug, Default)]
pub(super) struct RawTls {
    pub cert: Option<S<String>>,
    pub key: Option<S<String>>,
    pub names: Vec<(S<String>, S<toml::Value>)>,
}

impl<'de> Deserialize<'de> for RawTls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let map = BTreeMap::<S<String>, S<toml::Value>>::deserialize(d)?;
        let mut raw = RawTls::default();
        for (name, value) in map {
            let field = match name.get_ref().as_str() {
                "cert" => &mut raw.cert,
                "key" => &mut raw.key,
                _ => {
                    raw.names.push((name, value));
                    continue;
                }
            };
            let text = value.get_ref().as_str().ok_or_else(|| {
                D::Error::custom(format!(
                    "tls.{}: must be a string (a file name)",
                    name.get_ref()
                ))
            })?;
            *field = Some(S::new(value.span(), text.to_string()));
        }
        Ok(raw)
    }
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub max_message_size: Option<S<size::Size>>,
    pub max_recipients: Option<S<i64>>,
    pub max_sessions: Option<S<i64>>,
    pub max_errors: Option<S<i64>>,
    pub command_timeout: Option<S<String>>,
    pub data_timeout: Option<S<String>>,
    pub max_sessions_per_ip: Option<S<i64>>,
    pub max_sessions_per_network: Option<S<i64>>,
    pub max_commands_without_progress: Option<S<i64>>,
    pub session_timeout: Option<S<String>>,
    pub auth_failures: Option<S<i64>>,
    pub auth_failure_window: Option<S<String>>,
    pub max_headers: Option<S<i64>>,
    pub max_header_size: Option<S<size::Size>>,
    pub max_received: Option<S<i64>>,
    pub message_memory: Option<S<i64>>,
    pub sending: Option<RawSending>,
}

/// `[limits.sending]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSending {
    pub messages_per_hour: Option<S<i64>>,
    pub messages_per_day: Option<S<i64>>,
    pub first_time_recipients_per_day: Option<S<i64>>,
    pub users: Option<BTreeMap<S<String>, RawSendingUser>>,
}

/// `[limits.sending.users."alice@example.org"]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSendingUser {
    pub messages_per_hour: Option<S<i64>>,
    pub messages_per_day: Option<S<i64>>,
    pub first_time_recipients_per_day: Option<S<i64>>,
}

/// `[dns]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    pub nameservers: Option<List>,
}

/// `[outbound]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutbound {
    pub port: Option<S<i64>>,
    pub ip: Option<S<String>>,
    pub max_connections: Option<S<i64>>,
    pub max_per_domain: Option<S<i64>>,
    pub connect_timeout: Option<S<String>>,
    pub connection_timeout: Option<S<String>>,
    pub attempt_timeout: Option<S<String>>,
    pub allow_internal: Option<List>,
    pub refuse_private: Option<bool>,
    pub tls_memory: Option<S<String>>,
    pub mta_sts: Option<bool>,
    pub mta_sts_port: Option<S<i64>>,
    pub mta_sts_ca_file: Option<S<String>>,
    pub dane: Option<bool>,
    pub dnssec: Option<S<String>>,
    pub dane_trust_anchor: Option<S<String>>,
    pub tls_reports: Option<bool>,
    pub tls_report_interval: Option<S<String>>,
    pub tls_report_allow: Option<List>,
    pub relay: Option<S<String>>,
    pub relay_tls: Option<S<String>>,
    pub relay_user: Option<S<String>>,
    pub relay_password_file: Option<S<String>>,
    pub relay_password_env: Option<S<String>>,
    pub relay_ca_file: Option<S<String>>,
    /// `[outbound.tls."example.com"]`: domain → its policy.
    pub tls: Option<BTreeMap<S<String>, RawDomainTls>>,
}

/// `[outbound.tls."example.com"]`. `mode` is required, but checked in validation so that its
/// absence is reported with the other problems.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDomainTls {
    pub mode: Option<S<String>>,
    pub ca_file: Option<S<String>>,
}

/// `[queue]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    pub retry_first: Option<S<String>>,
    pub retry_max: Option<S<String>>,
    pub max_lifetime: Option<S<String>>,
    pub delay_warning: Option<S<String>>,
    pub min_free_space: Option<S<size::Size>>,
    pub min_free_inodes: Option<S<i64>>,
}

/// Where errors are reported: the file name and its text (to turn byte offsets into lines).
pub(super) struct Source<'a> {
    pub origin: &'a str,
    pub text: &'a str,
}

impl Source<'_> {
    /// An error at a byte range of the text.
    pub fn error(&self, span: Range<usize>, key: &str, message: String) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError {
            origin: self.origin.to_string(),
            line,
            column,
            key: key.to_string(),
            message,
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// The most shape errors (unknown keys, wrong types) reported from one file; past it, the
/// rest are left for the next run.
const MAX_SHAPE_ERRORS: usize = 50;

/// Reads the file's syntax and shape. A syntax error stops here, as one error. A key that is
/// unknown or has the wrong type is reported, taken out, and the file read again without it,
/// so that every such key is reported in one run; the rest of the file is still read, and its
/// validation errors come with these.
///
/// # Errors
/// A syntax error at its position, or nothing but shape errors (then `Ok` with a partial
/// [`RawConfig`] is never returned: the errors are).
pub(super) fn parse(source: &Source<'_>) -> Result<(RawConfig, Vec<ConfigError>), ConfigErrors> {
    let at = |span: Range<usize>, message: &str| {
        let key = key_at(source.text, span.start);
        source.error(span, &key, message.to_string())
    };
    let mut table = toml::de::DeTable::parse(source.text)
        .map_err(|e| ConfigErrors(vec![at(e.span().unwrap_or(0..0), e.message())]))?;
    let mut errors = Vec::new();
    loop {
        let deserializer = toml::de::Deserializer::from(table.clone());
        match RawConfig::deserialize(deserializer) {
            Ok(raw) => return Ok((raw, errors)),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                errors.push(at(span.clone(), e.message()));
                let removed = remove_at(table.get_mut(), span.start);
                if !removed || errors.len() >= MAX_SHAPE_ERRORS {
                    return Err(ConfigErrors(errors));
                }
            }
        }
    }
}

/// Takes out of `table` the entry (key and value) that the byte offset `at` falls in, the
/// innermost one when tables nest. False when no entry holds it.
fn remove_at(table: &mut toml::de::DeTable<'_>, at: usize) -> bool {
    use toml::de::DeValue;
    let mut found = None;
    for (key, value) in table.iter_mut() {
        let inside = |span: Range<usize>| span.start <= at && at < span.end.max(span.start + 1);
        let (in_key, in_value) = (inside(key.span()), inside(value.span()));
        let nested = match value.get_mut() {
            DeValue::Table(inner) => remove_at(inner, at),
            DeValue::Array(items) => items.iter_mut().any(|item| match item.get_mut() {
                DeValue::Table(inner) => remove_at(inner, at),
                _ => false,
            }),
            _ => false,
        };
        if nested {
            return true;
        }
        if in_key || in_value {
            found = Some(key.clone());
            break;
        }
    }
    match found {
        Some(key) => table.remove(&key).is_some(),
        None => false,
    }
}

/// The dotted key that a byte offset belongs to, by reading the text around it: the table
/// header above it plus the key on its line (or, inside a multi-line array, the nearest
/// `key =` line above). A best effort for messages; empty when nothing fits.
fn key_at(text: &str, offset: usize) -> String {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let mut key = None;
    let mut word = None;
    let mut table = None;
    for (n, line) in text[..line_end].lines().rev().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let name = header.trim_start_matches('[');
            table = Some(name.split(']').next().unwrap_or("").trim().to_string());
            break;
        }
        if key.is_some() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            // Inside a multi-line array, the key is the line that opened it.
            Some((k, value))
                if n == 0 || value.matches('[').count() > value.matches(']').count() =>
            {
                key = Some(k.trim().to_string());
            }
            Some(_) => key = Some(word.take().unwrap_or_default()),
            // A key with no `=` (or an array element): the line's first word, unless an
            // open array above turns out to hold it.
            None if n == 0 => word = line.split(char::is_whitespace).next().map(str::to_string),
            None => {}
        }
    }
    let key = key.or(word).filter(|k| !k.is_empty());
    match (table.filter(|t| !t.is_empty()), key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (Some(t), None) => t,
        (None, k) => k.unwrap_or_default(),
    }
}

/// A TOML string literal, escaped as TOML requires.
pub(super) fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}
