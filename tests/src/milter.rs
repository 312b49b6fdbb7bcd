//! [`TestMilter`]: a milter written for the tests (tokio, the filter side of Sendmail's milter
//! protocol v6, framed by hand here, apart from `mta`'s own codec) that does on request what
//! rspamd never does: defers, discards, quarantines, changes the header and the body, gives a
//! reply code of its own, reports progress, hangs, answers garbage, closes mid-message. It
//! answers every step (`c`) and records what it was sent.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

/// A frame as a filter sends it: the length (letter and data), the letter, the data.
pub fn frame(letter: u8, data: &[u8]) -> Vec<u8> {
    let mut f = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(letter);
    f.extend_from_slice(data);
    f
}

fn strings(parts: &[&[u8]]) -> Vec<u8> {
    let mut d = Vec::new();
    for p in parts {
        d.extend_from_slice(p);
        d.push(0);
    }
    d
}

/// `h`: add a field.
pub fn add_header(name: &str, value: &str) -> Vec<u8> {
    frame(b'h', &strings(&[name.as_bytes(), value.as_bytes()]))
}

/// `m`: change the `index`th field called `name` (empty value: delete it).
pub fn change_header(index: u32, name: &str, value: &str) -> Vec<u8> {
    let mut d = index.to_be_bytes().to_vec();
    d.extend(strings(&[name.as_bytes(), value.as_bytes()]));
    frame(b'm', &d)
}

/// `i`: insert a field at position `index`.
pub fn insert_header(index: u32, name: &str, value: &str) -> Vec<u8> {
    let mut d = index.to_be_bytes().to_vec();
    d.extend(strings(&[name.as_bytes(), value.as_bytes()]));
    frame(b'i', &d)
}

/// `y`: a reply line of the filter's own.
pub fn reply_code(text: &str) -> Vec<u8> {
    frame(b'y', &strings(&[text.as_bytes()]))
}

/// `q`: quarantine with a reason.
pub fn quarantine(reason: &str) -> Vec<u8> {
    frame(b'q', &strings(&[reason.as_bytes()]))
}

/// A reply without data (`a`, `c`, `r`, `t`, `d`, `p`).
pub fn bare(letter: u8) -> Vec<u8> {
    frame(letter, &[])
}

/// What the milter does when a command with letter `at` arrives (its first one).
#[derive(Debug, Clone)]
pub enum Act {
    /// Send these frames (the last one ends the conversation: `a`, `r`, `t`…).
    Send(Vec<Vec<u8>>),
    /// Send nothing, keep the connection open.
    Hang,
    /// Close the connection.
    Close,
    /// Send `p` every `every`, `times` times, then these frames.
    Progress {
        every: Duration,
        times: usize,
        then: Vec<Vec<u8>>,
    },
}

/// What the milter does on connection number `n` (from 0): at the first command with this
/// letter (`E` for the end of the message), this act.
pub type Script = Box<dyn Fn(usize) -> (u8, Act) + Send + Sync>;

/// One conversation: every command the milter was sent, letter and data.
pub type Conversation = Vec<(u8, Vec<u8>)>;

/// Where a [`TestMilter`] listens.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

type Stream = Box<dyn Io>;
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Listener {
    async fn accept(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Listener::Tcp(l) => Box::new(l.accept().await?.0),
            Listener::Unix(l) => Box::new(l.accept().await?.0),
        })
    }
}

/// A running test milter on 127.0.0.1 or a Unix socket.
pub struct TestMilter {
    address: String,
    seen: Arc<Mutex<Vec<Conversation>>>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl TestMilter {
    /// Starts one on a free port, doing what `script` says on each connection; when it
    /// negotiates it also claims `extra_actions` (as rspamd claims every action it knows).
    pub fn start(script: Script, extra_actions: u32) -> TestMilter {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a milter port");
        std_listener.set_nonblocking(true).unwrap();
        let address = format!("inet:{}", std_listener.local_addr().unwrap());
        TestMilter::serve_on(address, script, extra_actions, move || {
            Listener::Tcp(TcpListener::from_std(std_listener).unwrap())
        })
    }

    /// Like [`TestMilter::start`], on a Unix socket at `path`.
    pub fn start_unix(path: &std::path::Path, script: Script, extra_actions: u32) -> TestMilter {
        let std_listener = std::os::unix::net::UnixListener::bind(path).expect("bind a socket");
        std_listener.set_nonblocking(true).unwrap();
        let address = format!("unix:{}", path.display());
        TestMilter::serve_on(address, script, extra_actions, move || {
            Listener::Unix(UnixListener::from_std(std_listener).unwrap())
        })
    }

    fn serve_on(
        address: String,
        script: Script,
        extra_actions: u32,
        listen: impl FnOnce() -> Listener + Send + 'static,
    ) -> TestMilter {
        let seen: Arc<Mutex<Vec<Conversation>>> = Arc::default();
        let (stop, stopped) = watch::channel(false);
        let record = seen.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let listener = listen();
                let script = Arc::new(script);
                let mut n = 0;
                let mut stop_accepting = stopped.clone();
                loop {
                    let conn = tokio::select! {
                        c = listener.accept() => c,
                        _ = stop_accepting.changed() => break,
                    };
                    let Ok(stream) = conn else { continue };
                    let index = {
                        let mut s = record.lock().unwrap_or_else(PoisonError::into_inner);
                        s.push(Vec::new());
                        s.len() - 1
                    };
                    let (at, act) = script(n);
                    n += 1;
                    let record = record.clone();
                    let mut stopped = stopped.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = serve(stream, at, act, extra_actions, record, index) => {}
                            _ = stopped.changed() => {}
                        }
                    });
                }
            });
        });
        TestMilter {
            address,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Where it listens, as `[[inbound.milter]] address` names it.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Every conversation so far.
    pub fn conversations(&self) -> Vec<Conversation> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for TestMilter {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one command: `None` at the end of the stream.
async fn command(s: &mut Stream) -> Option<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let len = u32::from_be_bytes(len) as usize;
    assert!(
        (1..=1 << 20).contains(&len),
        "mta sent a frame of {len} octets"
    );
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    let letter = body.remove(0);
    Some((letter, body))
}

async fn serve(
    mut s: Stream,
    at: u8,
    act: Act,
    extra_actions: u32,
    record: Arc<Mutex<Vec<Conversation>>>,
    index: usize,
) {
    let mut acted = false;
    // Bounded: a conversation is a few dozen commands.
    for _ in 0..10_000 {
        let Some((letter, data)) = command(&mut s).await else {
            return;
        };
        record.lock().unwrap_or_else(PoisonError::into_inner)[index].push((letter, data.clone()));
        if letter == at && !acted {
            acted = true;
            match &act {
                Act::Send(frames) => {
                    for f in frames {
                        if s.write_all(f).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                Act::Hang => {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    return;
                }
                Act::Close => return,
                Act::Progress { every, times, then } => {
                    for _ in 0..*times {
                        tokio::time::sleep(*every).await;
                        if s.write_all(&bare(b'p')).await.is_err() {
                            return;
                        }
                    }
                    for f in then {
                        if s.write_all(f).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            }
        }
        let reply = match letter {
            b'O' => {
                // Our version, every action offered plus the extra ones, every step answered.
                let actions = u32::from_be_bytes(data[4..8].try_into().unwrap()) | extra_actions;
                let mut d = 6u32.to_be_bytes().to_vec();
                d.extend_from_slice(&actions.to_be_bytes());
                d.extend_from_slice(&0u32.to_be_bytes());
                frame(b'O', &d)
            }
            b'D' => continue,
            b'Q' | b'A' => return,
            b'E' => bare(b'a'),
            _ => bare(b'c'),
        };
        if s.write_all(&reply).await.is_err() {
            return;
        }
    }
}
