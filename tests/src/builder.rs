//! [`MtaBuilder`]: a [`TestMta`] with its own hostname, local domains, listen addresses,
//! extra config and environment: a receiving MX on `127.0.0.2:P`, a smarthost, a sender
//! with a `[dns]` and `[outbound]` section.

use std::path::Path;

use crate::TestMta;

/// The config of one test server, written into its temp dir when it starts.
#[derive(Debug, Clone)]
pub struct MtaBuilder {
    hostname: String,
    local_domains: Vec<String>,
    smtp: Vec<String>,
    submission: Vec<String>,
    submissions: Vec<String>,
    toml: String,
    env: Vec<(String, String)>,
    users: Vec<(String, String)>,
}

impl Default for MtaBuilder {
    fn default() -> Self {
        MtaBuilder::new()
    }
}

impl MtaBuilder {
    /// What [`crate::base_config`] gives: `mx.example.test`, local domain `example.test`,
    /// all three listeners on `127.0.0.1:0`.
    pub fn new() -> MtaBuilder {
        MtaBuilder {
            hostname: "mx.example.test".into(),
            local_domains: vec!["example.test".into()],
            smtp: vec!["127.0.0.1:0".into()],
            submission: vec!["127.0.0.1:0".into()],
            submissions: vec!["127.0.0.1:0".into()],
            toml: String::new(),
            env: Vec::new(),
            users: Vec::new(),
        }
    }

    /// A user added before the server starts (`mta user add`), so that it exists before
    /// the first client can connect.
    pub fn user(mut self, addr: &str, password: &str) -> MtaBuilder {
        self.users.push((addr.into(), password.into()));
        self
    }

    /// The `hostname` key (also the name in its self-signed certificate).
    pub fn hostname(mut self, name: &str) -> MtaBuilder {
        self.hostname = name.into();
        self
    }

    /// The `local_domains` key.
    pub fn local_domains(mut self, domains: &[&str]) -> MtaBuilder {
        self.local_domains = domains.iter().map(|d| d.to_string()).collect();
        self
    }

    /// `listen.smtp` (an empty slice turns it off).
    pub fn smtp(mut self, addrs: &[&str]) -> MtaBuilder {
        self.smtp = addrs.iter().map(|a| a.to_string()).collect();
        self
    }

    /// `listen.submission`.
    pub fn submission(mut self, addrs: &[&str]) -> MtaBuilder {
        self.submission = addrs.iter().map(|a| a.to_string()).collect();
        self
    }

    /// `listen.submissions`.
    pub fn submissions(mut self, addrs: &[&str]) -> MtaBuilder {
        self.submissions = addrs.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Appends TOML after the top-level keys and before `[listen]`: tables such as `[dns]`,
    /// `[outbound]`, `[queue]`. Several calls are concatenated in order.
    pub fn toml(mut self, text: &str) -> MtaBuilder {
        self.toml.push_str(text);
        if !self.toml.ends_with('\n') {
            self.toml.push('\n');
        }
        self
    }

    /// An environment variable of the server process (kept over restarts).
    pub fn env(mut self, key: &str, value: &str) -> MtaBuilder {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The config text for a server in `dir` (data in `DIR/data`).
    pub fn config(&self, dir: &Path) -> String {
        let list = |items: &[String]| {
            let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        format!(
            "hostname = {:?}\n\
             data_dir = {:?}\n\
             local_domains = {}\n\
             allow_root = true\n\
             {}\n\
             [listen]\n\
             smtp = {}\n\
             submission = {}\n\
             submissions = {}\n",
            self.hostname,
            dir.join("data").display().to_string(),
            list(&self.local_domains),
            crate::server::with_inbound_default(&self.toml),
            list(&self.smtp),
            list(&self.submission),
            list(&self.submissions),
        )
    }

    /// Starts the server; panics when it does not come up.
    pub fn start(self) -> TestMta {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the server; `Err` (its config and output) when it exits at start-up, such as
    /// on a listen address already in use.
    pub fn try_start(self) -> Result<TestMta, String> {
        let env = self.env.clone();
        let users = self.users.clone();
        TestMta::try_start_with_users(|dir| self.config(dir), env, &users)
    }
}
