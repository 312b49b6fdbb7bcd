//! The guides match the source tree: `docs/flow.md` walks one message through the code file
//! by file and every file it names exists, and the README's layout table has a row for every
//! directory of the repository and names only files that exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The repository's top-level directories a reader sees (not hidden, not the build output).
fn top_dirs() -> BTreeSet<String> {
    std::fs::read_dir(repo())
        .expect("read the repository root")
        .map(|e| e.expect("a directory entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "target")
        .collect()
}

/// Every `code span` of a Markdown text, in order.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The code spans that name a path in the repository: they start with a top-level directory.
fn repo_paths(text: &str) -> Vec<String> {
    let dirs = top_dirs();
    code_spans(text)
        .into_iter()
        .filter(|s| {
            s.split_once('/')
                .is_some_and(|(first, _)| dirs.contains(first))
        })
        .map(str::to_string)
        .collect()
}

/// A bare file name such as `conn.rs`: a name with an extension and no directory.
fn is_bare_file(span: &str) -> bool {
    !span.contains('/')
        && span.rsplit_once('.').is_some_and(|(stem, ext)| {
            !stem.is_empty()
                && ["rs", "py", "sh", "md", "toml"].contains(&ext)
                && stem
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

#[test]
fn flow_names_only_files_that_exist() {
    let flow = read("docs/flow.md");
    let mut missing = Vec::new();
    let mut given = BTreeSet::new();
    let dirs = top_dirs();
    for span in code_spans(&flow) {
        let names_repo = span
            .split_once('/')
            .is_some_and(|(first, _)| dirs.contains(first));
        if names_repo {
            if repo().join(span).exists() {
                given.insert(span.rsplit('/').next().unwrap_or(span).to_string());
            } else {
                missing.push(span.to_string());
            }
        } else if is_bare_file(span) && !given.contains(span) {
            // A bare name stands for a file whose full path the text gave before it.
            missing.push(format!("{span} (no full path given before it)"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/flow.md names files that do not exist: {missing:?}"
    );
}

#[test]
fn flow_walks_one_message_from_the_socket_to_the_maildir_and_the_mx() {
    let flow = read("docs/flow.md");
    let walk = flow
        .split("\n## ")
        .find(|s| s.starts_with("0. The path in the code"))
        .expect("docs/flow.md has a section '## 0. The path in the code'");
    let named = repo_paths(walk);
    // The files one message passes, in the order it passes them.
    let path = [
        "mta-bin/src/serve.rs",
        "mta-smtp/src/server/mod.rs",
        "mta-smtp/src/server/conn.rs",
        "mta-smtp/src/server/session.rs",
        "mta-smtp/src/server/data.rs",
        "mta-smtp/src/server/message.rs",
        "mta-queue/src/queue.rs",
        "mta-queue/src/store.rs",
        "mta-queue/src/scheduler.rs",
        "mta-smtp/src/router.rs",
        "mta-smtp/src/local.rs",
        "mta-smtp/src/relay/mod.rs",
        "mta-smtp/src/client/connection.rs",
        "mta-smtp/src/client/wire.rs",
        "mta-queue/src/bounce.rs",
    ];
    let mut at = 0;
    for file in path {
        let found = named[at..].iter().position(|n| n == file);
        let Some(i) = found else {
            panic!(
                "the walk in docs/flow.md does not name {file} after {:?} (it names {named:?})",
                named.get(at.wrapping_sub(1))
            );
        };
        at += i + 1;
    }
}

#[test]
fn readme_layout_table_matches_the_tree() {
    let readme = read("README.md");
    let table = readme
        .split("\n## Layout\n")
        .nth(1)
        .expect("README.md has a '## Layout' section");
    let rows: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    let mut listed = BTreeSet::new();
    let mut missing = Vec::new();
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let dir = cells[1].trim_matches('`').trim_end_matches('/');
        listed.insert(dir.to_string());
        let base = repo().join(dir);
        if !base.is_dir() {
            missing.push(dir.to_string());
            continue;
        }
        // A name in the row's text is a file or directory somewhere under the row's directory.
        for span in code_spans(cells[2]) {
            let span = span.trim_end_matches('/');
            let looks_like_file = is_bare_file(span) || span.contains('/');
            if looks_like_file && !exists_under(&base, span) && !repo().join(span).exists() {
                missing.push(format!("{dir}/…/{span}"));
            }
        }
    }
    let unlisted: Vec<String> = top_dirs().difference(&listed).cloned().collect();
    assert!(
        unlisted.is_empty() && missing.is_empty(),
        "README layout table: directories without a row {unlisted:?}, names that do not exist \
         {missing:?}"
    );
}

/// True when `rel` names a file or directory at some depth under `base`.
fn exists_under(base: &Path, rel: &str) -> bool {
    let mut todo = vec![base.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = todo.pop() {
        seen += 1;
        assert!(
            seen < 10_000,
            "{} holds too many directories",
            base.display()
        );
        if dir.join(rel).exists() {
            return true;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if entry.file_type().is_ok_and(|t| t.is_dir())
                && !name.to_string_lossy().starts_with('.')
                && name != "target"
                && name != "corpus"
            {
                todo.push(entry.path());
            }
        }
    }
    false
}

#[test]
fn bare_file_names_are_recognised() {
    for yes in [
        "conn.rs",
        "module-cycles.py",
        "test.sh",
        "flow.md",
        "clippy.toml",
    ] {
        assert!(is_bare_file(yes), "{yes}");
    }
    for no in [
        "inbound.checks",
        "a/b.rs",
        ".rs",
        "mta queue",
        "DATA_DIR/control.sock",
        "1.0",
    ] {
        assert!(!is_bare_file(no), "{no}");
    }
}
