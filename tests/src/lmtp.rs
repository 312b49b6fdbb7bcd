//! [`LmtpServer`]: a real LMTP server (RFC 2033) on `127.0.0.1:0`, Python's
//! `aiosmtpd.lmtp.LMTP`, with a handler that refuses `nouser@…` at RCPT (`550 5.1.1`, as
//! Dovecot does for a user it does not have) and answers for each recipient after the final
//! dot: `gone@…` is refused with `550 5.1.1`, `busy@…` gets `451 4.2.0` the first time and is
//! accepted after, anyone else is accepted. Each accepted message is written to
//! `DIR/<recipient>/<n>.eml`, with its envelope sender in `<n>.from`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the server may take to print its port.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

const SCRIPT: &str = r#"
import asyncio, os, sys
from aiosmtpd.lmtp import LMTP

out = sys.argv[1]
tries = {}

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # A mailbox this server does not have, refused at RCPT as Dovecot does.
        if address.split('@')[0].lower() == 'nouser':
            return f'550 5.1.1 <{address}> User doesn\'t exist'
        envelope.rcpt_tos.append(address)
        return '250 2.1.5 OK'

    async def handle_DATA(self, server, session, envelope):
        # RFC 2033 §4.2: one reply per accepted recipient, in RCPT order. aiosmtpd sends
        # what this returns as it is, so the lines are joined here.
        replies = []
        for rcpt in envelope.rcpt_tos:
            local = rcpt.split('@')[0].lower()
            tries[rcpt] = tries.get(rcpt, 0) + 1
            if local == 'gone':
                replies.append(f'550 5.1.1 <{rcpt}> no such mailbox')
            elif local == 'busy' and tries[rcpt] == 1:
                replies.append(f'451 4.2.0 <{rcpt}> mailbox busy, try again')
            else:
                d = os.path.join(out, rcpt.lower())
                os.makedirs(d, exist_ok=True)
                n = len([f for f in os.listdir(d) if f.endswith('.eml')])
                with open(os.path.join(d, f'{n}.from'), 'w') as f:
                    f.write(envelope.mail_from)
                with open(os.path.join(d, f'.{n}.tmp'), 'wb') as f:
                    f.write(envelope.original_content)
                os.rename(os.path.join(d, f'.{n}.tmp'), os.path.join(d, f'{n}.eml'))
                replies.append(f'250 2.0.0 <{rcpt}> saved')
        return '\r\n'.join(replies)

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: LMTP(Handler()), '127.0.0.1', 0)
    print('port', server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(300)  # a bound, should the test fail to kill it

asyncio.run(main())
"#;

/// A running LMTP server; killed when dropped.
pub struct LmtpServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl LmtpServer {
    /// Starts the server, writing what it accepts under `dir`.
    pub fn start(dir: &Path) -> LmtpServer {
        std::fs::create_dir_all(dir).expect("cannot create the LMTP output dir");
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 (aiosmtpd LMTP): {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the aiosmtpd LMTP server printed no port within {READY_TIMEOUT:?} ({e}); \
                     is aiosmtpd installed (scripts/test.sh installs it)?"
                );
            }
        };
        let port: u16 = line
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the LMTP server: {line:?}"));
        LmtpServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: dir.to_path_buf(),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The messages accepted for `rcpt` so far, in order, each with its envelope sender.
    pub fn messages(&self, rcpt: &str) -> Vec<(String, Vec<u8>)> {
        let dir = self.dir.join(rcpt.to_lowercase());
        let mut out = Vec::new();
        for n in 0.. {
            let Ok(body) = std::fs::read(dir.join(format!("{n}.eml"))) else {
                break;
            };
            let from = std::fs::read_to_string(dir.join(format!("{n}.from"))).unwrap_or_default();
            out.push((from, body));
        }
        out
    }
}

impl Drop for LmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
