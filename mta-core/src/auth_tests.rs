//! Unit tests of auth.

use super::*;
use argon2::password_hash::PasswordVerifier;

fn addr(text: &str) -> Address {
    Address::parse(text).expect("test address is valid")
}

/// Two hashes made once and shared, to keep the number of argon2 runs low.
fn alice_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password("alice-secret").expect("hashable"))
}

fn bob_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password("bob-secret!").expect("hashable"))
}

fn sample_db() -> UserDb {
    UserDb::parse(&format!(
        "alice@example.org {}\nBob@Example.net\t{}\n",
        alice_hash(),
        bob_hash()
    ))
    .expect("sample parses")
}

#[test]
fn parse_accepts_comments_blanks_and_separators() {
    let a = alice_hash();
    let b = bob_hash();
    let cases: &[(&str, String, &[&str])] = &[
        ("empty", String::new(), &[]),
        ("only comments", "# users\n\n   \n#x y\n".into(), &[]),
        (
            "space",
            format!("alice@example.org {a}\n"),
            &["alice@example.org"],
        ),
        (
            "tab",
            format!("alice@example.org\t{a}"),
            &["alice@example.org"],
        ),
        (
            "crlf",
            format!("alice@example.org {a}\r\n"),
            &["alice@example.org"],
        ),
        (
            "run of blanks",
            format!("  alice@example.org \t {a}  \n"),
            &["alice@example.org"],
        ),
        (
            "sorted by key",
            format!("# c\nzed@example.org {b}\n\nAlice@Example.org {a}\n"),
            &["Alice@example.org", "zed@example.org"],
        ),
        (
            "quoted local part",
            format!("\"a b\"@example.org {a}"),
            &["\"a b\"@example.org"],
        ),
    ];
    for (name, text, want) in cases {
        let db = UserDb::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<String> = db.users().map(ToString::to_string).collect();
        assert_eq!(&got, want, "{name}");
    }
}

#[test]
fn to_text_round_trips() {
    let dbs = [UserDb::default(), sample_db()];
    for db in dbs {
        let text = db.to_text();
        assert!(text.starts_with("# mta users"), "{text}");
        let again = UserDb::parse(&text).expect("to_text output parses");
        assert_eq!(again, db);
        assert_eq!(again.to_text(), text);
    }
    let text = sample_db().to_text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            format!("alice@example.org {}", alice_hash()),
            format!("Bob@example.net {}", bob_hash()),
        ]
    );
}

#[test]
fn parse_errors_name_the_line() {
    let a = alice_hash();
    let cases: &[(&str, String, &str)] = &[
        (
            "missing hash",
            "# h\nalice@example.org\n".into(),
            "line 2: expected \"ADDRESS PHC\"",
        ),
        (
            "missing hash, quoted",
            "\"a b\"@example.org".into(),
            "line 1: expected \"ADDRESS PHC\"",
        ),
        (
            "bad address",
            format!("\n\nnot-an-address {a}\n"),
            "line 3: \"not-an-address\" is not a valid address",
        ),
        (
            "two fields before hash",
            format!("a@b.org x {a}"),
            "line 1: \"a@b.org x\" is not a valid address",
        ),
        (
            "hash not PHC",
            "alice@example.org secret\n".into(),
            "line 1: the password hash of alice@example.org is not an argon2 PHC string",
        ),
        (
            "hash truncated",
            "alice@example.org $argon2id$v=19$m=19456,t=2,p=1\n".into(),
            "line 1: the password hash of alice@example.org",
        ),
        (
            "not argon2",
            "alice@example.org $2b$12$abcdefghijklmnopqrstuv\n".into(),
            "line 1: the password hash of alice@example.org",
        ),
        (
            "bad params",
            format!("alice@example.org {}\n", a.replace("m=19456", "m=1")),
            "line 1: the password hash of alice@example.org",
        ),
        (
            "duplicate",
            format!("alice@example.org {a}\n#\nALICE@example.org {a}\n"),
            "line 3: ALICE@example.org is listed twice (first on line 1)",
        ),
    ];
    for (name, text, want) in cases {
        match UserDb::parse(text) {
            Ok(_) => panic!("{name}: parsed"),
            Err(e) => assert!(e.to_string().starts_with(want), "{name}: {e}"),
        }
    }
}

#[test]
fn add_set_password_remove() {
    let mut db = sample_db();
    let carol = addr("carol@example.org");

    db.add(carol.clone(), "carol-pass").expect("new user");
    assert!(db.contains(&addr("CAROL@example.org")));
    assert_eq!(db.len(), 3);

    let cases: &[(&str, Result<(), UserDbError>, &str)] = &[
        (
            "duplicate",
            db.clone().add(addr("Carol@Example.org"), "whatever1"),
            "user Carol@example.org already exists",
        ),
        (
            "weak",
            db.clone().add(addr("dave@example.org"), "short"),
            "password too short",
        ),
        (
            "set unknown",
            db.clone()
                .set_password(&addr("dave@example.org"), "whatever1"),
            "no such user: dave@example.org",
        ),
        (
            "set weak",
            db.clone().set_password(&carol, "short"),
            "password too short",
        ),
        (
            "remove unknown",
            db.clone().remove(&addr("dave@example.org")),
            "no such user: dave@example.org",
        ),
    ];
    for (name, result, want) in cases {
        match result {
            Ok(()) => panic!("{name}: succeeded"),
            Err(e) => assert!(e.to_string().starts_with(want), "{name}: {e}"),
        }
    }

    db.set_password(&addr("Carol@example.org"), "carol-new-pass")
        .expect("known user");
    assert_eq!(
        db.verify("carol@example.org", "carol-new-pass"),
        Verified::User(carol.clone())
    );
    assert_eq!(
        db.verify("carol@example.org", "carol-pass"),
        Verified::Rejected
    );
    // The spelling given to add is kept.
    assert!(db.users().any(|a| a.to_string() == "carol@example.org"));

    db.remove(&addr("CAROL@example.org")).expect("known user");
    assert!(!db.contains(&carol));
    assert_eq!(db.len(), 2);
}

#[test]
fn verify_logins() {
    let db = sample_db();
    let alice = Verified::User(addr("alice@example.org"));
    let bob = Verified::User(addr("Bob@example.net"));
    let cases: &[(&str, &str, &Verified)] = &[
        ("alice@example.org", "alice-secret", &alice),
        ("Alice@Example.org", "alice-secret", &alice),
        ("bob@example.net", "bob-secret!", &bob),
        ("alice@example.org", "alice-secreT", &Verified::Rejected),
        ("alice@example.org", "bob-secret!", &Verified::Rejected),
        ("alice@example.org", "", &Verified::Rejected),
        ("mallory@example.org", "alice-secret", &Verified::Rejected),
        ("alice", "alice-secret", &Verified::Rejected),
        ("", "alice-secret", &Verified::Rejected),
        ("alice@example.org\0", "alice-secret", &Verified::Rejected),
        // The dummy hash's own password opens nothing.
        (
            "nobody@example.org",
            "mta dummy password",
            &Verified::Rejected,
        ),
    ];
    for (login, password, want) in cases {
        assert_eq!(&db.verify(login, password), *want, "{login:?}");
    }
}

#[test]
fn password_policy() {
    let long = "x".repeat(MAX_PASSWORD_BYTES);
    let too_long = "x".repeat(MAX_PASSWORD_BYTES + 1);
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("eight", "12345678", None),
        ("unicode counts characters", "пароль12", None),
        ("max bytes", &long, None),
        ("spaces inside", "correct horse", None),
        ("empty", "", Some("password too short")),
        ("seven", "1234567", Some("password too short")),
        ("too long", &too_long, Some("password too long")),
        (
            "nul",
            "abcdefgh\0",
            Some("password contains a control character"),
        ),
        (
            "newline",
            "abcdefgh\n",
            Some("password contains a control character"),
        ),
        (
            "tab",
            "abcd\tefgh",
            Some("password contains a control character"),
        ),
        (
            "del",
            "abcdefgh\x7f",
            Some("password contains a control character"),
        ),
    ];
    for (name, password, want) in cases {
        let got = check_password_policy(password).err().map(|e| e.to_string());
        match (got.as_deref(), want) {
            (None, None) => {}
            (Some(g), Some(w)) => assert!(g.starts_with(w), "{name}: {g}"),
            (g, w) => panic!("{name}: got {g:?}, want {w:?}"),
        }
    }
}

#[test]
fn record_debug_hides_hash() {
    let db = sample_db();
    let shown = format!("{db:?}");
    assert!(shown.contains("alice"), "{shown}");
    assert!(!shown.contains("argon2"), "{shown}");
}

/// A user whose line would start with `#` is refused on the way in, because on the way back
/// the line is a comment; a quoted local part that starts with `#` is written with its quote
/// and reads back as the same user.
#[test]
fn users_starting_with_hash_are_refused_not_lost() {
    let mut db = UserDb::default();
    let err = db
        .add(addr("#ops@example.org"), "ops-secret-1")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "#ops@example.org: an address starting with '#' cannot be a user (its line in the \
         users file would read as a comment)"
    );
    assert!(db.is_empty());
    // Reading: such a line, written by hand, is a comment, as the header says.
    let read = UserDb::parse(&format!("#ops@example.org {}\n", alice_hash())).expect("parses");
    assert!(read.is_empty());
    // A '#' inside the address is fine both ways.
    db.add(addr("o#ps@example.org"), "ops-secret-1")
        .expect("added");
    let back = UserDb::parse(&db.to_text()).expect("parses");
    assert_eq!(back, db);
    assert!(back.contains(&addr("o#ps@example.org")));
}

/// Checking in reused memory decides as argon2's own `verify_password` does, for right and
/// wrong passwords, other parameters and the dummy hash; the memory grows once.
#[test]
fn verify_with_scratch_agrees_with_argon2() {
    let small = Argon2::new(
        Algorithm::Argon2id,
        argon2::Version::V0x13,
        Params::new(64, 1, 1, Some(32)).expect("params"),
    )
    .hash_password_with_salt(b"small-secret", b"0123456789abcdef")
    .expect("hash")
    .to_string();
    let argon2i = Argon2::new(
        Algorithm::Argon2i,
        argon2::Version::V0x10,
        Params::new(128, 2, 1, Some(16)).expect("params"),
    )
    .hash_password_with_salt(b"older-secret", b"fedcba9876543210")
    .expect("hash")
    .to_string();
    let mut scratch = Scratch::default();
    for phc in [alice_hash(), small.as_str(), argon2i.as_str()] {
        let hash = PasswordHash::new(phc).expect("phc");
        for password in ["alice-secret", "small-secret", "older-secret", "wrong", ""] {
            let theirs = Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok();
            let ours = matches(password.as_bytes(), &hash, &mut scratch);
            assert_eq!(ours, theirs, "{password:?} against {phc}");
        }
    }
    assert_eq!(scratch.0.len(), 19 * 1024, "grown to the largest, once");
    let db = sample_db();
    assert_eq!(
        db.verify_with("ALICE@example.org", "alice-secret", &mut scratch),
        Verified::User(addr("alice@example.org"))
    );
    assert_eq!(
        db.verify_with("nobody@example.org", "alice-secret", &mut scratch),
        Verified::Rejected
    );
}
