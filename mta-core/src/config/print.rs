//! The effective config written back as TOML: every key, so `mta check-config` shows
//! exactly what runs.

use std::net::Ipv6Addr;

use super::file::quote;
use super::{
    Auth, AuthBackend, Config, Dnsbl, Inbound, Limits, Listen, Local, LocalDelivery, Milter,
    Outbound, PasswordSource, Queue, Smarthost, Tls, duration,
};

/// The effective config as TOML: every key written out, so the text says exactly what runs.
pub(super) fn write(config: &Config) -> String {
    let metrics = match config.metrics_listen {
        Some(addr) => format!("listen = {}\n", quote(&addr.to_string())),
        None => "# no listen: no metrics served\n".to_string(),
    };
    [
        write_top(config),
        write_listen(&config.listen),
        format!("\n[tls]\n{}", write_tls(&config.tls)),
        write_limits(&config.limits),
        format!("\n[dns]\nnameservers = {}\n", list(&config.dns.nameservers)),
        format!("\n[outbound]\n{}", write_outbound(&config.outbound)),
        write_queue(&config.queue),
        format!("\n[metrics]\n{metrics}"),
        write_inbound(&config.inbound),
        format!("\n[local]\n{}", write_local(&config.local)),
        format!(
            "\n[srs]\nenabled = {}\ndomain = {}\nmax_age = {}\n",
            config.srs.enabled,
            quote(config.srs.domain.as_str()),
            time(config.srs.max_age)
        ),
        format!("\n[aliases]\n{}", write_aliases(config)),
        write_senders(config),
        write_dkim(&config.dkim),
        write_dmarc_reports(&config.dmarc_reports),
        write_auth(&config.auth),
        super::acme::write(config.acme.as_ref(), quote),
    ]
    .concat()
}

fn path(p: &std::path::Path) -> String {
    quote(&p.to_string_lossy())
}

fn time(d: std::time::Duration) -> String {
    quote(&duration::format(d))
}

/// The keys before the first table.
fn write_top(config: &Config) -> String {
    format!(
        "hostname = {}\ndata_dir = {}\nlocal_domains = {}\nshutdown_grace = {}\n{}",
        quote(config.hostname.as_str()),
        path(&config.data_dir),
        list(&config.local_domains),
        time(config.shutdown_grace),
        write_process(&config.process),
    )
}

/// `[listen]`.
fn write_listen(l: &Listen) -> String {
    format!(
        "\n[listen]\nsmtp = {}\nsubmission = {}\nsubmissions = {}\n",
        list(&l.smtp),
        list(&l.submission),
        list(&l.submissions),
    )
}

/// The keys of `[tls]`.
fn write_tls(t: &Tls) -> String {
    let mut tls = String::new();
    if let Some(cert) = &t.cert {
        tls += &format!("cert = {}\n", path(cert));
    }
    if let Some(key) = &t.key {
        tls += &format!("key = {}\n", path(key));
    }
    if tls.is_empty() {
        tls = "# no cert and key: a self-signed certificate in data_dir\n".to_string();
    }
    for (name, named) in &t.names {
        tls += &format!(
            "\n[tls.{}]\ncert = {}\nkey = {}\n",
            quote(name),
            path(&named.cert),
            path(&named.key)
        );
    }
    tls
}

/// `[limits]`.
fn write_limits(m: &Limits) -> String {
    format!(
        "\n[limits]\n\
         max_message_size = {max_message_size}\n\
         max_recipients = {max_recipients}\n\
         max_sessions = {max_sessions}\n\
         max_errors = {max_errors}\n\
         command_timeout = {command_timeout}\n\
         data_timeout = {data_timeout}\n\
         max_sessions_per_ip = {max_sessions_per_ip}\n\
         max_sessions_per_network = {max_sessions_per_network}\n\
         max_commands_without_progress = {max_commands_without_progress}\n\
         session_timeout = {session_timeout}\n\
         auth_failures = {auth_failures}\n\
         auth_failure_window = {auth_failure_window}\n\
         max_headers = {max_headers}\n\
         max_header_size = {max_header_size}\n\
         max_received = {max_received}\n\
         message_memory = {message_memory}\n",
        max_message_size = m.max_message_size,
        max_recipients = m.max_recipients,
        max_sessions = m.max_sessions,
        max_errors = m.max_errors,
        command_timeout = time(m.command_timeout),
        data_timeout = time(m.data_timeout),
        max_sessions_per_ip = m.max_sessions_per_ip,
        max_sessions_per_network = m.max_sessions_per_network,
        max_commands_without_progress = m.max_commands_without_progress,
        session_timeout = time(m.session_timeout),
        auth_failures = m.auth_failures,
        auth_failure_window = time(m.auth_failure_window),
        max_headers = m.max_headers,
        max_header_size = m.max_header_size,
        max_received = m.max_received,
        message_memory = m.message_memory,
    ) + &write_sending(&m.sending)
}

/// `[limits.sending]` and each user's override.
fn write_sending(s: &super::Sending) -> String {
    let caps = |c: &super::SendingCaps| {
        format!(
            "messages_per_hour = {}\nmessages_per_day = {}\nfirst_time_recipients_per_day = {}\n",
            c.messages_per_hour, c.messages_per_day, c.first_time_recipients_per_day
        )
    };
    let mut out = format!("\n[limits.sending]\n{}", caps(&s.default));
    for (user, c) in &s.users {
        out += &format!("\n[limits.sending.users.{}]\n{}", quote(user), caps(c));
    }
    out
}

/// `[queue]`.
fn write_queue(q: &Queue) -> String {
    format!(
        "\n[queue]\n\
         retry_first = {}\n\
         retry_max = {}\n\
         max_lifetime = {}\n\
         delay_warning = {}\n\
         min_free_space = {}\n\
         min_free_inodes = {}\n",
        time(q.retry_first),
        time(q.retry_max),
        time(q.max_lifetime),
        time(q.delay_warning),
        q.min_free_space,
        q.min_free_inodes,
    )
}

/// `[dmarc_reports]`.
fn write_dmarc_reports(d: &super::DmarcReports) -> String {
    let address = match &d.address {
        Some(a) => format!("address = {}\n", quote(&a.to_string())),
        None => "# no address: reports are not read\n".to_string(),
    };
    format!(
        "\n[dmarc_reports]\n{address}max_size = {}\nmax_records = {}\nmax_per_day = {}\n{}",
        d.max_size,
        d.max_records,
        d.max_per_day,
        super::dmarc_send::write(&d.send),
    )
}

/// `[inbound]`.
fn write_inbound(i: &Inbound) -> String {
    let (dnsbl_keys, dnsbl_tables) = write_dnsbl(&i.dnsbl);
    format!(
        "\n[inbound]\nchecks = {}\ndmarc_reject = {}\nspf_reject = {}\nspoofed_from = {}\n",
        i.checks,
        i.dmarc_reject,
        i.spf_reject,
        quote(i.spoofed_from.name()),
    ) + &dnsbl_keys
        + &write_milters(&i.milters)
        + &dnsbl_tables
}

/// `[[inbound.dnsbl]]` tables and the `[inbound]` keys for the file (after `[inbound]`'s
/// own keys: the two keys first, then the tables).
fn write_dnsbl(d: &Dnsbl) -> (String, String) {
    let keys = format!(
        "dnsbl_threshold = {}\ndnsbl_action = {}\n",
        d.threshold,
        quote(d.action.name())
    );
    let mut tables = String::new();
    for l in &d.lists {
        let returns: Vec<String> = l.returns.iter().map(|n| quote(&n.to_string())).collect();
        tables.push_str(&format!(
            "\n[[inbound.dnsbl]]\nzone = {}\nweight = {}\nreturns = [{}]\n",
            quote(&l.zone.to_string()),
            l.weight,
            returns.join(", "),
        ));
    }
    (keys, tables)
}

/// `[auth]` for the file.
fn write_auth(auth: &Auth) -> String {
    match &auth.backend {
        AuthBackend::File => "\n[auth]\nbackend = \"file\"\n".to_string(),
        AuthBackend::Dovecot { socket } => format!(
            "\n[auth]\nbackend = \"dovecot\"\nsocket = {}\n",
            quote(&socket.to_string_lossy())
        ),
    }
}

/// `[[inbound.milter]]` tables for the file, in order.
fn write_milters(milters: &[Milter]) -> String {
    let mut out = String::new();
    for m in milters {
        let mut listeners = Vec::new();
        if m.smtp {
            listeners.push(quote("smtp"));
        }
        if m.submission {
            listeners.push(quote("submission"));
        }
        out.push_str(&format!(
            "\n[[inbound.milter]]\naddress = {}\nlisteners = [{}]\ntimeout = {}\non_failure = {}\n",
            quote(&m.address.to_string()),
            listeners.join(", "),
            quote(&duration::format(m.timeout)),
            quote(m.on_failure.name()),
        ));
    }
    out
}

/// `[senders]`, when there is one.
fn write_senders(config: &Config) -> String {
    if config.senders.is_empty() {
        return String::new();
    }
    let mut out = "\n[senders]\n".to_string();
    for (login, patterns) in &config.senders {
        let patterns: Vec<String> = patterns.iter().map(|p| quote(&p.to_string())).collect();
        out += &format!("{} = [{}]\n", quote(login), patterns.join(", "));
    }
    out
}

/// The keys of `[aliases]`: each alias, then each domain's catch-all (`"@domain"`).
fn write_aliases(config: &Config) -> String {
    let mut aliases = String::new();
    for (alias, targets) in &config.aliases {
        aliases += &format!("{} = {}\n", quote(&alias.to_string()), list(targets));
    }
    for (domain, targets) in &config.catch_all {
        aliases += &format!("{} = {}\n", quote(&format!("@{domain}")), list(targets));
    }
    aliases
}

/// `user`, `group`, `allow_root` and `sandbox`.
fn write_process(p: &super::Process) -> String {
    let mut out = match &p.user {
        Some(user) => format!("user = {}\n", quote(user)),
        None => "# no user: serves as the user that starts it\n".to_string(),
    };
    if let Some(group) = &p.group {
        out += &format!("group = {}\n", quote(group));
    }
    out + &format!("allow_root = {}\nsandbox = {}\n", p.allow_root, p.sandbox)
}

/// The keys of `[local]`.
fn write_local(l: &Local) -> String {
    let mut out = format!("delivery = {}\n", quote(l.delivery.name()));
    if let LocalDelivery::Lmtp(at) = &l.delivery {
        out += &format!("lmtp = {}\n", quote(&at.to_string()));
    }
    let delimiter = l.recipient_delimiter.map(String::from).unwrap_or_default();
    out += &format!("recipient_delimiter = {}\n", quote(&delimiter));
    if let Some(group) = &l.mail_group {
        out += &format!("mail_group = {}\n", quote(group));
    }
    out += &format!("line_endings = {}\n", quote(l.line_endings.name()));
    out
}

/// One `[[dkim."domain"]]` table per key, in order.
fn write_dkim(keys: &[super::DkimKey]) -> String {
    let mut out = String::new();
    for k in keys {
        out += &format!(
            "\n[[dkim.{}]]\nselector = {}\nkey = {}\nalgorithm = {}\nexpire = {}\n",
            quote(k.domain.as_str()),
            quote(&k.selector),
            quote(&k.key.to_string_lossy()),
            quote(k.algorithm.name()),
            quote(&duration::format(k.expire)),
        );
    }
    out
}

/// The keys of `[outbound]`, then one `[outbound.tls."domain"]` table per domain.
fn write_outbound(o: &Outbound) -> String {
    let mut out = format!(
        "port = {}\n\
         ip = {}\n\
         max_connections = {}\n\
         max_per_domain = {}\n\
         connect_timeout = {}\n\
         connection_timeout = {}\n\
         attempt_timeout = {}\n\
         allow_internal = {}\n\
         refuse_private = {}\n\
         tls_memory = {}\n\
         mta_sts = {}\n\
         mta_sts_port = {}\n\
         dane = {}\n\
         dnssec = {}\n\
         tls_reports = {}\n\
         tls_report_interval = {}\n",
        o.port,
        quote(o.ip.name()),
        o.max_connections,
        o.max_per_domain,
        quote(&duration::format(o.connect_timeout)),
        quote(&duration::format(o.connection_timeout)),
        quote(&duration::format(o.attempt_timeout)),
        list(&o.allow_internal),
        o.refuse_private,
        quote(&duration::format(o.tls_memory)),
        o.mta_sts,
        o.mta_sts_port,
        o.dane,
        quote(o.dnssec.name()),
        o.tls_reports,
        quote(&duration::format(o.tls_report_interval)),
    );
    if let Some(ca) = &o.mta_sts_ca_file {
        out += &format!("mta_sts_ca_file = {}\n", path(ca));
    }
    if let Some(anchor) = &o.dane_trust_anchor {
        out += &format!("dane_trust_anchor = {}\n", path(anchor));
    }
    if !o.tls_report_allow.is_empty() {
        let names: Vec<String> = o
            .tls_report_allow
            .iter()
            .map(|d| quote(d.as_str()))
            .collect();
        out += &format!("tls_report_allow = [{}]\n", names.join(", "));
    }
    out += &write_relay(o.relay.as_ref());
    for (domain, policy) in &o.tls {
        out += &format!(
            "\n[outbound.tls.{}]\nmode = {}\n",
            quote(domain.as_str()),
            quote(policy.mode.name())
        );
        if let Some(ca) = &policy.ca_file {
            out += &format!("ca_file = {}\n", path(ca));
        }
    }
    out
}

/// The `relay` keys of `[outbound]`, or a comment saying there is no relay.
fn write_relay(relay: Option<&Smarthost>) -> String {
    let Some(relay) = relay else {
        return "# no relay: mail goes to each domain's MX hosts\n".to_string();
    };
    let mut out = String::new();
    // An IPv6 host needs brackets to keep its colons apart from the port.
    let host = match relay.host.parse::<Ipv6Addr>() {
        Ok(_) => format!("[{}]", relay.host),
        Err(_) => relay.host.clone(),
    };
    out += &format!("relay = {}\n", quote(&format!("{host}:{}", relay.port)));
    out += &format!("relay_tls = {}\n", quote(relay.tls.name()));
    if let Some(user) = &relay.user {
        out += &format!("relay_user = {}\n", quote(user));
    }
    match &relay.password {
        Some(PasswordSource::File(p)) => {
            out += &format!("relay_password_file = {}\n", path(p));
        }
        Some(PasswordSource::Env(name)) => {
            out += &format!("relay_password_env = {}\n", quote(name));
        }
        None => {}
    }
    if let Some(ca) = &relay.ca_file {
        out += &format!("relay_ca_file = {}\n", path(ca));
    }
    out
}

/// A TOML array of strings: `["a", "b"]`.
fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", quoted.join(", "))
}
