//! `mta-fuzz TARGET SECONDS [SEED]`: mutates the corpus of one target for a while and runs
//! every mutant through it. A panic (a crash or a broken invariant) saves the input as
//! `corpus/TARGET/crash-<hash>` and exits 1; otherwise prints the number of executions.
//! Mutations: bit flips, byte insertions and deletions, SMTP-flavoured tokens (CR, LF, dot
//! lines, NUL, brackets, quotes, `@`), splices of two corpus inputs, and truncation.

// Functions stay under the line limit in clippy.toml (test code is exempt).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n.\r\n",
    b"\n.\n",
    b".",
    b"..",
    b"\0",
    b"<",
    b">",
    b"@",
    b"\"",
    b"\\",
    b":",
    b",",
    b"(",
    b")",
    b"=",
    b" ",
    b"\t",
    b"MAIL FROM:<",
    b"RCPT TO:<",
    b"DATA\r\n",
    b"AUTH PLAIN ",
    b"STARTTLS\r\n",
    b"250-",
    b"250 ",
    b"\xc3\xb1",
    b"\xff",
    b"{",
    b"}",
    b"[",
    b"]",
    b"SIZE=",
    b"SMTPUTF8",
];

fn mutate(rng: &mut StdRng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = out.len();
        match rng.random_range(0..6) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = rng.random_range(0..=len);
                out.insert(i, rng.random());
            }
            2 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(16));
                out.drain(i..i + n);
            }
            3 => {
                let i = rng.random_range(0..=len);
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                out.splice(i..i, token.iter().copied());
            }
            4 if !corpus.is_empty() => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..=other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => out.truncate(rng.random_range(0..len)),
            _ => {}
        }
    }
    out.truncate(64 * 1024);
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(secs)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: mta-fuzz TARGET SECONDS [SEED]");
        return ExitCode::from(2);
    };
    let Some((_, target)) = mta_fuzz::TARGETS.iter().find(|(n, _)| n == name) else {
        eprintln!("unknown target {name}");
        return ExitCode::from(2);
    };
    let seed = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    // Quiet the default panic message: a crash is reported once, below.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = StdRng::seed_from_u64(seed);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut runs: u64 = 0;
    while Instant::now() < end {
        let base = &corpus[rng.random_range(0..corpus.len())];
        let input = mutate(&mut rng, base, &corpus);
        runs += 1;
        if std::panic::catch_unwind(|| target(&input)).is_err() {
            let mut h = DefaultHasher::new();
            input.hash(&mut h);
            let path = dir.join(format!("crash-{:016x}", h.finish()));
            let _ = std::fs::write(&path, &input);
            println!(
                "{name}: CRASH after {runs} runs (seed {seed}); input saved as {}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    }
    println!(
        "{name}: {runs} runs in {secs} s ({:.0}/s), seed {seed}, no crash",
        runs as f64 / secs.max(1) as f64
    );
    ExitCode::SUCCESS
}
