//! Running for real: started as root with `user` set, the server serves as that user
//! (its `/proc` ids) and has made the data dir theirs; serving as root is refused without
//! `allow_root`; Landlock keeps delivery from following a link out of the Maildir tree, and
//! the writer follows no link inside it; a mail group gets the Maildirs and nothing else;
//! the example production config passes `mta check-config`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use mta_tests::system::{
    can_open_as, imap_user, is_root, mail_group, owner_mode, proc_ids, unprivileged_user,
};
use mta_tests::{KeptDir, SmtpClient, TestMta, base_config, mta_with_config, secs};
use mta_tests::{serve_expecting_failure, wait_for};

const MESSAGE: &[u8] =
    b"From: <a@remote.test>\r\nTo: <bob@example.test>\r\nSubject: hi\r\n\r\nbody\r\n";

/// These tests start `mta serve` as root and watch it drop privileges: run as anyone else
/// they fail (CI runs as root) rather than pass without testing anything.
fn require_root(test: &str) {
    assert!(
        is_root(),
        "{test} needs root to start mta serve as root and drop privileges: run the suite as root"
    );
}

/// Before the server starts: users added with `mta user add` (as root, so the users file is
/// root's until the server fixes it), using the config `config` will be.
fn add_users(dir: &Path, config: &str, users: &[&str]) {
    let pre = dir.join("pre.toml");
    std::fs::write(&pre, config).expect("write pre.toml");
    for user in users {
        mta_with_config(
            &pre,
            &["user", "add", user, "--password-stdin"],
            b"a long password 1\n",
        )
        .assert_success(&format!("mta user add {user}"));
    }
}

#[test]
fn started_as_root_it_serves_as_the_configured_user() {
    require_root("started_as_root_it_serves_as_the_configured_user");
    let (user, uid, gid) = unprivileged_user();
    // A root file outside the data dir that a link inside points to: the start-up walk that
    // fixes owners must not follow it.
    let outside = KeptDir::new();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "root's").expect("write victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // And one a hard link inside is another name of (same file system: the temp dir).
    let linked = outside.path().join("linked");
    std::fs::write(&linked, "root's").expect("write linked");
    std::fs::set_permissions(&linked, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mta = TestMta::start_config(|dir| {
        // The temp dir is root's 0700; let the user through to DIR/data as /var/lib does.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        // base_config's allow_root = true does not matter: user is set, so it is dropped to.
        let config = base_config(dir, &format!("user = {user:?}\n"));
        add_users(dir, &config, &["bob@example.test"]);
        let old = dir.join("data/mail/example.test/old/Maildir/new");
        std::fs::create_dir_all(&old).expect("mkdir old Maildir");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink(&victim, dir.join("data/link")).expect("symlink");
        std::fs::hard_link(&linked, dir.join("data/hardlink")).expect("hard link");
        config
    });
    let pid: u32 = mta.pid().parse().expect("a pid");
    let ids = proc_ids(pid);
    assert_eq!(
        ids.uid,
        vec![uid; 4],
        "real, effective, saved, fs uid\n{}",
        mta.log()
    );
    assert_eq!(ids.gid, vec![gid; 4], "real, effective, saved, fs gid");
    assert_eq!(ids.groups, vec![gid], "supplementary groups are dropped");
    assert!(mta.log().contains("dropped privileges"), "{}", mta.log());
    let data = mta.data_dir();
    assert_eq!(owner_mode(&data), (uid, gid, 0o700));
    assert_eq!(owner_mode(&data.join("users")), (uid, gid, 0o600));
    assert_eq!(
        owner_mode(&data.join("tls/selfsigned-key.pem")),
        (uid, gid, 0o600)
    );
    let old = data.join("mail/example.test/old/Maildir/new");
    assert_eq!(owner_mode(&old), (uid, gid, 0o700));
    assert_eq!(owner_mode(&victim), (0, 0, 0o644), "the link was followed");
    assert_eq!(
        owner_mode(&linked),
        (0, 0, 0o644),
        "a file with another name outside was given away"
    );
    // The dropped user reads the users file it was given: AUTH works. And delivers.
    let mut client = SmtpClient::connect(mta.submission_addr());
    client.reply("greeting");
    client.expect("EHLO client.test", 250);
    client.expect("STARTTLS", 220);
    client.upgrade_tls(&mta.cert_path());
    client.expect("EHLO client.test", 250);
    let auth = client.auth_plain("bob@example.test", "a long password 1");
    assert_eq!(auth.code, 235, "{}", client.transcript());
    let mut client = SmtpClient::connect(mta.smtp_addr());
    client.reply("greeting");
    client.expect("EHLO client.test", 250);
    let reply = client.send_message("a@remote.test", &["bob@example.test"], MESSAGE);
    assert_eq!(reply.code, 250, "{}", client.transcript());
    let files = mta.wait_for_mail("bob@example.test", 1, 10);
    assert_eq!(owner_mode(&files[0]), (uid, gid, 0o600));
}

#[test]
fn serving_as_root_is_refused_without_user_or_allow_root() {
    require_root("serving_as_root_is_refused_without_user_or_allow_root");
    let dir = KeptDir::new();
    let text = format!(
        "data_dir = {:?}\n[inbound]\nchecks = false\n[listen]\nsmtp = [\"127.0.0.1:0\"]\n\
         submission = [\"127.0.0.1:0\"]\nsubmissions = [\"127.0.0.1:0\"]\n",
        dir.path().join("data").display().to_string()
    );
    let (_, out) = serve_expecting_failure(dir.path(), &text);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains("refusing to serve as root: set user")
            && out.stderr.contains("allow_root = true"),
        "{out}"
    );
    assert!(!out.stdout.contains("mta ready"), "{out}");
}

#[test]
fn an_unknown_user_is_refused_with_a_hint() {
    let dir = KeptDir::new();
    let text = base_config(dir.path(), "user = \"mta-no-such-user\"\n");
    let (_, out) = serve_expecting_failure(dir.path(), &text);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("user \"mta-no-such-user\" (config key user) does not exist")
            && out.stderr.contains("useradd --system"),
        "{out}"
    );
}

/// A server (as root, `sandbox` on or off) whose mail root `DATA_DIR/mail` is a link to a
/// directory outside every allowed path (an operator's link, which the Maildir writer
/// follows: the data dir is not the mail group's to change); one message goes to eve.
/// Returns the server and the outside mail root.
fn link_out_of_the_maildirs(sandbox: bool) -> (TestMta, KeptDir) {
    let outside = KeptDir::new();
    let target = outside.path().join("mail");
    std::fs::create_dir_all(&target).expect("mkdir outside mail");
    let mta = TestMta::start_config(|dir| {
        let config = base_config(dir, &format!("sandbox = {sandbox}\n"));
        add_users(dir, &config, &["eve@example.test"]);
        std::os::unix::fs::symlink(&target, dir.join("data/mail")).expect("symlink");
        config
    });
    let mut client = SmtpClient::connect(mta.smtp_addr());
    client.reply("greeting");
    client.expect("EHLO client.test", 250);
    let reply = client.send_message("a@remote.test", &["eve@example.test"], MESSAGE);
    assert_eq!(reply.code, 250, "{}", client.transcript());
    (mta, outside)
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn landlock_stops_delivery_through_a_link_out_of_the_maildirs() {
    // Without the sandbox the link is followed: what the sandbox must stop is real.
    let (mta, outside) = link_out_of_the_maildirs(false);
    let new = outside.path().join("mail/example.test/eve/Maildir/new");
    wait_for(secs(10), "eve's message in the linked Maildir", || {
        count(&new) == 1
    });
    drop(mta);

    let (mta, outside) = link_out_of_the_maildirs(true);
    let log = mta.log();
    let status = log
        .lines()
        .find(|l| l.contains("sandbox in force"))
        .unwrap_or_else(|| panic!("no sandbox line in the log:\n{log}"))
        .to_string();
    if status.contains("landlock=unsupported") {
        eprintln!(
            "landlock_stops_delivery_through_a_link_out_of_the_maildirs: could not check: this \
             kernel has no Landlock (/sys/kernel/security/lsm or the landlock syscalls): {status}"
        );
        return;
    }
    assert!(status.contains("seccomp=on"), "{status}");
    mta.wait_logged(secs(10), "eve's delivery refused by Landlock", || {
        mta.log().lines().any(|l| {
            l.contains("rcpt=eve@example.test")
                && l.contains("maildir write failed: Permission denied")
        })
    });
    assert_eq!(count(&outside.path().join("mail")), 0, "{}", mta.log());
}

/// Inside the mail root the writer follows no link, sandbox or not: with a mail group, the
/// group may replace a user's `Maildir` or its `new/` with a link to anywhere.
#[test]
fn delivery_follows_no_link_inside_the_mail_tree() {
    let outside = KeptDir::new();
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(outside.path().join("Maildir").join(sub)).expect("mkdir");
    }
    let target = outside.path().join("Maildir");
    let mta = TestMta::start_config(|dir| {
        let config = base_config(dir, "sandbox = false\n");
        add_users(dir, &config, &["alice@example.test", "eve@example.test"]);
        let eve = dir.join("data/mail/example.test/eve");
        std::fs::create_dir_all(&eve).expect("mkdir eve");
        std::os::unix::fs::symlink(&target, eve.join("Maildir")).expect("symlink");
        config
    });
    let mut client = SmtpClient::connect(mta.smtp_addr());
    client.reply("greeting");
    client.expect("EHLO client.test", 250);
    let to = ["alice@example.test", "eve@example.test"];
    let reply = client.send_message("a@remote.test", &to, MESSAGE);
    assert_eq!(reply.code, 250, "{}", client.transcript());
    mta.wait_for_mail("alice@example.test", 1, 10);
    mta.wait_logged(secs(10), "eve's delivery refused", || {
        mta.log()
            .lines()
            .any(|l| l.contains("rcpt=eve@example.test") && l.contains("maildir write failed"))
    });
    assert_eq!(count(&target.join("new")), 0, "{}", mta.log());
    assert_eq!(count(&target.join("tmp")), 0, "{}", mta.log());
}

/// With `local.mail_group`, the Maildir tree is that group's to read and write and the data
/// dir its to pass through; the users file, DKIM key, queue store, control socket and TLS
/// key keep the server's own group and private modes, and a uid in the mail group can open
/// the mail but none of those.
#[test]
fn a_mail_group_shares_the_maildirs_and_nothing_else() {
    require_root("a_mail_group_shares_the_maildirs_and_nothing_else");
    let (user, uid, gid) = unprivileged_user();
    let (group, mail_gid) = mail_group();
    let (_, imap_uid, _) = imap_user();
    let mta = TestMta::start_config(|dir| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        let pre = base_config(dir, &format!("user = {user:?}\n"));
        add_users(dir, &pre, &["bob@example.test"]);
        let out = mta_with_config(
            &dir.join("pre.toml"),
            &[
                "dkim",
                "keygen",
                "--domain",
                "example.test",
                "--selector",
                "s1",
            ],
            b"",
        );
        out.assert_success("mta dkim keygen");
        // Mail delivered before the setting: private, and made the group's at start-up.
        let old = dir.join("data/mail/example.test/old/Maildir/new");
        std::fs::create_dir_all(&old).expect("mkdir old Maildir");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::write(old.join("1.old"), "old mail").expect("write old mail");
        base_config(
            dir,
            &format!(
                "user = {user:?}\n[local]\nmail_group = {group:?}\n\
                 [[dkim.\"example.test\"]]\nselector = \"s1\"\nkey = {:?}\n",
                dir.join("data/dkim/example.test.s1.key")
                    .display()
                    .to_string()
            ),
        )
    });
    let pid: u32 = mta.pid().parse().expect("a pid");
    let mut groups = proc_ids(pid).groups;
    groups.sort_unstable();
    let mut want = vec![gid, mail_gid];
    want.sort_unstable();
    assert_eq!(
        groups, want,
        "the mail group is the one supplementary group"
    );
    let mut client = SmtpClient::connect(mta.smtp_addr());
    client.reply("greeting");
    client.expect("EHLO client.test", 250);
    let reply = client.send_message("a@remote.test", &["bob@example.test"], MESSAGE);
    assert_eq!(reply.code, 250, "{}", client.transcript());
    let files = mta.wait_for_mail("bob@example.test", 1, 10);
    let data = mta.data_dir();
    let bob = data.join("mail/example.test/bob");
    let old = data.join("mail/example.test/old/Maildir");
    let shared = [
        (data.clone(), 0o710),
        (data.join("mail"), 0o2710),
        (data.join("mail/example.test"), 0o2710),
        (bob.clone(), 0o2710),
        (bob.join("Maildir"), 0o2770),
        (bob.join("Maildir/new"), 0o2770),
        (bob.join("Maildir/cur"), 0o2770),
        (files[0].clone(), 0o660),
        (old.join("new"), 0o2770),
        (old.join("new/1.old"), 0o660),
    ];
    for (path, mode) in shared {
        assert_eq!(
            owner_mode(&path),
            (uid, mail_gid, mode),
            "{}",
            path.display()
        );
    }
    let private = [
        (data.join("users"), 0o600),
        (data.join("dkim"), 0o700),
        (data.join("dkim/example.test.s1.key"), 0o600),
        (data.join("queue"), 0o700),
        (data.join("tls/selfsigned-key.pem"), 0o600),
        (data.join("control.sock"), 0o600),
    ];
    for (path, mode) in &private {
        let (o, g, m) = owner_mode(path);
        assert_eq!((o, g, m & 0o7777), (uid, gid, *mode), "{}", path.display());
    }
    // What the mail group's uid can open, tried for real.
    assert!(can_open_as(imap_uid, mail_gid, &files[0]), "the mail");
    assert!(
        can_open_as(imap_uid, mail_gid, &old.join("new/1.old")),
        "old mail"
    );
    for (path, _) in &private {
        assert!(
            !can_open_as(imap_uid, mail_gid, path),
            "{} is open to the mail group",
            path.display()
        );
    }
}
#[test]
fn an_unknown_mail_group_is_named_by_check_config_and_serve() {
    let dir = KeptDir::new();
    let text = base_config(dir.path(), "[local]\nmail_group = \"mta-no-such-group\"\n");
    let config = dir.path().join("mta.toml");
    std::fs::write(&config, &text).expect("write config");
    let out = mta_with_config(&config, &["check-config"], b"");
    assert_eq!(out.status.code(), Some(2), "{out}");
    let want = "group \"mta-no-such-group\" (config key local.mail_group) does not exist; \
                create it with `groupadd --system mta-no-such-group`";
    assert!(out.stderr.contains(want), "{out}");
    let (_, out) = serve_expecting_failure(dir.path(), &text);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains(want), "{out}");
}

#[test]
fn the_example_production_config_passes_check_config() {
    let example = include_str!("../../../docs/examples/mta.toml");
    let dir = KeptDir::new();
    let data = dir.path().join("var-lib-mta");
    let etc = dir.path().join("etc-mta");
    std::fs::create_dir_all(etc.join("tls")).expect("mkdir etc");
    // The example's files, where it names them: a certificate and key, and the DKIM key
    // made as its comments say (`mta dkim keygen`).
    // check-config checks what mta serve would: the user and group must exist, and this
    // machine has no user mta; nobody stands in for it.
    let text = example
        .replace("/var/lib/mta", &data.display().to_string())
        .replace("/etc/mta", &etc.display().to_string())
        .replace("user = \"mta\"", "user = \"nobody\"")
        .replace("group = \"mta\"", "group = \"nogroup\"");
    assert_ne!(text, example, "the example names /var/lib/mta and /etc/mta");
    let tls = etc.join("tls");
    let (key, cert) = (tls.join("privkey.pem"), tls.join("fullchain.pem"));
    mta_tests::certs::write_self_signed(&cert, &key, "mx.example.org");
    let config = dir.path().join("mta.toml");
    std::fs::write(&config, &text).expect("write config");
    let keygen = [
        "dkim",
        "keygen",
        "--domain",
        "example.org",
        "--selector",
        "rsa2026",
    ];
    mta_with_config(&config, &keygen, b"").assert_success("mta dkim keygen");
    let out = mta_with_config(&config, &["check-config"], b"");
    out.assert_success("mta check-config on docs/examples/mta.toml");
    for want in [
        "user = \"nobody\"",
        "hostname = \"mx.example.org\"",
        "smtp = [\"0.0.0.0:25\"]",
        "sandbox = true",
    ] {
        assert!(out.stdout.contains(want), "no {want} in:\n{out}");
    }
}

/// `mta serve` under strace, with the Landlock and seccomp calls failing as on a kernel
/// without them (ENOSYS, EINVAL).
#[test]
fn without_landlock_and_seccomp_it_warns_once_each_and_serves() {
    let test = "without_landlock_and_seccomp_it_warns_once_each_and_serves";
    assert!(
        std::path::Path::new("/usr/bin/strace").exists(),
        "{test} needs strace, which fakes the old kernel (scripts/test.sh installs it)"
    );
    let dir = KeptDir::new();
    let config = dir.path().join("mta.toml");
    std::fs::write(&config, base_config(dir.path(), "")).expect("write config");
    let mut child = std::process::Command::new("/usr/bin/strace")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .args(["-e", "inject=landlock_create_ruleset:error=ENOSYS"])
        .args(["-e", "inject=seccomp:error=EINVAL"])
        .arg(mta_tests::mta_bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start strace");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (lines, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut text);
        text
    });
    let got = ready.recv_timeout(secs(20));
    // The server is strace's child: stop it, not strace (which would leave it running).
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
        .unwrap_or_default();
    for pid in children.split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", pid])
            .status();
    }
    let deadline = std::time::Instant::now() + secs(15);
    while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join().unwrap_or_default();
    let ready = got.unwrap_or_else(|e| panic!("no ready line ({e}):\n{log}"));
    assert!(ready.starts_with("mta ready "), "{ready}\n{log}");
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("landlock is not available"), 1, "{log}");
    assert_eq!(count("seccomp is not available"), 1, "{log}");
    assert_eq!(
        count("landlock=unsupported seccomp=unsupported"),
        1,
        "{log}"
    );
}

/// `systemd-analyze verify` on the units in dist/, with their programs pointed at this
/// build (verify checks that they exist).
#[test]
fn the_systemd_units_verify() {
    let analyze = "/usr/bin/systemd-analyze";
    assert!(
        Path::new(analyze).exists(),
        "the_systemd_units_verify needs systemd-analyze (scripts/test.sh installs systemd)"
    );
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
    let dir = KeptDir::new();
    let mta = mta_tests::mta_bin().display().to_string();
    let script = dist.join("mta-dovecot-users.sh").display().to_string();
    let mut units = Vec::new();
    for name in [
        "mta.service",
        "mta-dovecot-users.service",
        "mta-dovecot-users.path",
    ] {
        let text = std::fs::read_to_string(dist.join(name)).expect("read unit");
        let text = text
            .replace("/usr/local/bin/mta", &mta)
            .replace("/usr/local/lib/mta/mta-dovecot-users.sh", &script);
        let unit = dir.path().join(name);
        std::fs::write(&unit, text).expect("write unit");
        units.push(unit);
    }
    let out = mta_tests::run(
        "systemd-analyze verify",
        std::process::Command::new(analyze)
            .arg("verify")
            .args(&units),
        b"",
        secs(60),
    );
    assert!(
        out.status.success() && out.stderr.trim().is_empty(),
        "{out}"
    );
}

/// How much nicer than the server the password-check threads run (`CHECK_NICE` in the
/// server's login code).
const CHECK_NICE: i32 = 10;

/// Inside the sandbox the password checks still run at their lower priority: seccomp lets
/// `setpriority` through for exactly that, so a burst of logins takes the CPU mail leaves.
#[test]
fn password_checks_run_at_a_lower_priority_inside_the_sandbox() {
    let mta = TestMta::start_config(|dir| base_config(dir, "sandbox = true\n"));
    assert!(
        mta.log().contains("seccomp=on"),
        "the sandbox is not in force:\n{}",
        mta.log()
    );
    let tasks = format!("/proc/{}/task", mta.pid());
    let mut nice = Vec::new();
    for task in std::fs::read_dir(&tasks).expect("read the server's tasks") {
        let path = task.expect("a task").path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.starts_with("mta-password") {
            nice.push(nice_of(&path.join("stat")));
        }
    }
    assert!(!nice.is_empty(), "no password-check thread in {tasks}");
    // The server's own nice value (a suite run under `nice` starts it higher), plus ten, at
    // most 19.
    let own = nice_of(std::path::Path::new(&format!("/proc/{}/stat", mta.pid())));
    assert!(
        nice.iter().all(|&n| n == (own + CHECK_NICE).min(19)),
        "nice values of the password-check threads: {nice:?}, the server's {own}"
    );
}

/// The nice value in a `/proc/.../stat` file: field 19, the 17th after the name's closing
/// parenthesis.
fn nice_of(stat: &std::path::Path) -> i32 {
    let text = std::fs::read_to_string(stat).expect("stat");
    text.rsplit(')')
        .next()
        .expect("fields")
        .split(' ')
        .nth(17)
        .expect("nice")
        .parse()
        .expect("nice")
}
