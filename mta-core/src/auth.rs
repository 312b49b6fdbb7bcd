//! The user database: who may log in (SMTP AUTH, RFC 4954) and with which password.
//!
//! A user is a login address and an argon2id hash in PHC string format; plaintext passwords
//! are hashed on the way in ([`hash_password`]) and never stored. The text format of the
//! users file lives here ([`UserDb::parse`], [`UserDb::to_text`]); reading and writing the
//! file, and reloading it while the server runs, is `mta-bin`'s (`users.rs`). Which sender
//! addresses a user may use is policy's (`policy.rs`).
//!
//! [`UserDb::verify`] spends the same argon2 work on an unknown login as on a known one, so
//! the time an AUTH takes does not tell a client which users exist.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;
use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params};

use crate::address::{Address, AddressError};

/// The shortest password [`check_password_policy`] accepts, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password [`check_password_policy`] accepts, in bytes: a bound on the work
/// one AUTH attempt can ask of the server.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The header [`UserDb::to_text`] writes, so an operator who opens the file knows its format.
const HEADER: &str = "\
# mta users: one user per line, \"ADDRESS PHC\" (a space or a tab between them).
# PHC is an argon2id hash in PHC string format, never a plaintext password.
# Lines starting with '#' and blank lines are ignored. Edit with `mta user add|del|passwd`.
";

/// Why the user database, a line of the users file, or a password was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserDbError {
    /// A line of the users file does not have the two fields `ADDRESS PHC`.
    #[error("line {line}: expected \"ADDRESS PHC\" (an address, a space, an argon2 hash)")]
    MissingField {
        /// 1-based line number in the users file.
        line: usize,
    },
    /// The address field of a line is not a valid address.
    #[error("line {line}: {text:?} is not a valid address")]
    BadAddress {
        /// 1-based line number in the users file.
        line: usize,
        /// The address field as written.
        text: String,
        /// What the address parser objected to.
        #[source]
        source: AddressError,
    },
    /// The hash field of a line is not an argon2 hash in PHC string format.
    #[error("line {line}: the password hash of {address} is not an argon2 PHC string")]
    BadHash {
        /// 1-based line number in the users file.
        line: usize,
        /// The user whose hash it is.
        address: Address,
        /// What the PHC or argon2 parser objected to.
        #[source]
        source: argon2::password_hash::Error,
    },
    /// The same user (compared case-insensitively) appears on two lines.
    #[error("line {line}: {address} is listed twice (first on line {first})")]
    Duplicate {
        /// 1-based line number of the second entry.
        line: usize,
        /// 1-based line number of the first entry.
        first: usize,
        /// The user listed twice.
        address: Address,
    },
    /// `add` for a user who already exists.
    #[error("user {0} already exists")]
    Exists(Address),
    /// `set_password` or `remove` for a user who does not exist.
    #[error("no such user: {0}")]
    Unknown(Address),
    /// The password is shorter than [`MIN_PASSWORD_CHARS`].
    #[error("password too short: at least {MIN_PASSWORD_CHARS} characters are required")]
    PasswordTooShort,
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    #[error("password too long: at most {MAX_PASSWORD_BYTES} bytes are allowed")]
    PasswordTooLong,
    /// The password contains a control character (NUL, newline, DEL, …).
    #[error("password contains a control character (such as NUL, tab or newline)")]
    PasswordControlChar,
    /// Hashing failed (in practice: the system's random number generator failed).
    #[error("hashing the password failed")]
    Hash(#[source] argon2::password_hash::Error),
}

/// One user: their login address and argon2id PHC hash. Never a plaintext password.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The login name and mailbox, as `mta user add` was given it (case preserved).
    pub address: Address,
    /// The argon2 hash in PHC string format (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
    pub phc: String,
}

impl fmt::Debug for UserRecord {
    /// Leaves the hash out: it has no business in logs or panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("address", &self.address)
            .field("phc", &"<redacted>")
            .finish()
    }
}

/// The result of a login check. `User` carries the canonical address from the database, not
/// the spelling the client typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Right password for this user.
    User(Address),
    /// Unknown user, malformed login, or wrong password: the client is told the same for all.
    Rejected,
}

/// All users, keyed by [`Address::key`] (so lookups ignore case), in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDb {
    users: BTreeMap<String, UserRecord>,
}

impl UserDb {
    /// Parses the users file: one user per line, `ADDRESS PHC`, separated by a space or a tab
    /// (a run of them is accepted too); blank lines and lines starting with `#` are ignored.
    ///
    /// # Errors
    /// The first bad line, by number: [`UserDbError::MissingField`],
    /// [`UserDbError::BadAddress`], [`UserDbError::BadHash`] or [`UserDbError::Duplicate`].
    pub fn parse(text: &str) -> Result<UserDb, UserDbError> {
        let mut db = UserDb::default();
        let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.trim_matches([' ', '\t']);
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let (address, phc) = split_line(line, content)?;
            let address = Address::parse(address).map_err(|source| UserDbError::BadAddress {
                line,
                text: address.to_string(),
                source,
            })?;
            if let Err(source) = parse_phc(phc) {
                return Err(UserDbError::BadHash {
                    line,
                    address,
                    source,
                });
            }
            match first_line.entry(address.key()) {
                Entry::Occupied(first) => {
                    return Err(UserDbError::Duplicate {
                        line,
                        first: *first.get(),
                        address,
                    });
                }
                Entry::Vacant(slot) => {
                    slot.insert(line);
                }
            }
            db.insert(UserRecord {
                address,
                phc: phc.to_string(),
            });
        }
        Ok(db)
    }

    /// The file text: a header comment explaining the format, then one line per user, sorted
    /// by [`Address::key`]. [`UserDb::parse`] of this text gives back an equal database.
    pub fn to_text(&self) -> String {
        let mut text = String::from(HEADER);
        for record in self.users.values() {
            text.push_str(&format!("{} {}\n", record.address, record.phc));
        }
        text
    }

    /// Adds a user with a new hash of `password`.
    ///
    /// # Errors
    /// [`UserDbError::Exists`] if the user exists (in any case spelling), a password policy
    /// error from [`check_password_policy`], or [`UserDbError::Hash`].
    pub fn add(&mut self, address: Address, password: &str) -> Result<(), UserDbError> {
        if self.contains(&address) {
            return Err(UserDbError::Exists(address));
        }
        let phc = hash_password(password)?;
        self.insert(UserRecord { address, phc });
        Ok(())
    }

    /// Replaces a user's hash with a new hash of `password`. The stored address keeps its
    /// spelling.
    ///
    /// # Errors
    /// [`UserDbError::Unknown`] if there is no such user, a password policy error from
    /// [`check_password_policy`], or [`UserDbError::Hash`].
    pub fn set_password(&mut self, address: &Address, password: &str) -> Result<(), UserDbError> {
        if !self.contains(address) {
            return Err(UserDbError::Unknown(address.clone()));
        }
        let phc = hash_password(password)?;
        match self.users.get_mut(&address.key()) {
            Some(record) => {
                record.phc = phc;
                Ok(())
            }
            None => Err(UserDbError::Unknown(address.clone())),
        }
    }

    /// Removes a user.
    ///
    /// # Errors
    /// [`UserDbError::Unknown`] if there is no such user.
    pub fn remove(&mut self, address: &Address) -> Result<(), UserDbError> {
        match self.users.remove(&address.key()) {
            Some(_) => Ok(()),
            None => Err(UserDbError::Unknown(address.clone())),
        }
    }

    /// Every user's address, sorted by [`Address::key`].
    pub fn users(&self) -> impl Iterator<Item = &Address> {
        self.users.values().map(|record| &record.address)
    }

    /// True when the user exists (compared case-insensitively).
    pub fn contains(&self, address: &Address) -> bool {
        self.users.contains_key(&address.key())
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a login: `login` is the AUTH username, parsed as an address and looked up
    /// case-insensitively; anything that does not parse is an unknown user.
    ///
    /// An unknown user costs the same argon2 work as a known one (a verification against a
    /// fixed dummy hash), so timing does not reveal which users exist.
    pub fn verify(&self, login: &str, password: &str) -> Verified {
        let record = Address::parse(login)
            .ok()
            .and_then(|address| self.users.get(&address.key()));
        let stored = record.and_then(|record| PasswordHash::new(&record.phc).ok());
        match (record, stored) {
            (Some(record), Some(hash)) => {
                match Argon2::default().verify_password(password.as_bytes(), &hash) {
                    Ok(()) => Verified::User(record.address.clone()),
                    Err(_) => Verified::Rejected,
                }
            }
            // Unknown user (or a record whose hash cannot be read, which parse and add never
            // store): do the same work, then refuse whatever its outcome.
            _ => {
                let _ = Argon2::default().verify_password(password.as_bytes(), dummy_hash());
                Verified::Rejected
            }
        }
    }

    fn insert(&mut self, record: UserRecord) {
        self.users.insert(record.address.key(), record);
    }
}

/// Hashes a password for storage: argon2id with the crate's default (OWASP) parameters and a
/// fresh random salt, as a PHC string. Applies [`check_password_policy`] first.
///
/// # Errors
/// A password policy error, or [`UserDbError::Hash`] if the random number generator fails.
pub fn hash_password(password: &str) -> Result<String, UserDbError> {
    check_password_policy(password)?;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(UserDbError::Hash)
}

/// The password policy: at least [`MIN_PASSWORD_CHARS`] characters, at most
/// [`MAX_PASSWORD_BYTES`] bytes, and no control characters (NUL, newline, DEL, C1 …), which
/// cannot be typed reliably at a prompt or sent in every SASL mechanism.
///
/// # Errors
/// [`UserDbError::PasswordTooShort`], [`UserDbError::PasswordTooLong`] or
/// [`UserDbError::PasswordControlChar`].
pub fn check_password_policy(password: &str) -> Result<(), UserDbError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(UserDbError::PasswordTooLong);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UserDbError::PasswordTooShort);
    }
    if password.chars().any(char::is_control) {
        return Err(UserDbError::PasswordControlChar);
    }
    Ok(())
}

/// Splits a non-blank, non-comment line into its address and hash fields.
fn split_line(line: usize, content: &str) -> Result<(&str, &str), UserDbError> {
    match content.rsplit_once([' ', '\t']) {
        // A PHC string always starts with '$'; without one the hash was left out, even if the
        // address itself contains a space (a quoted local part).
        Some((address, phc)) if phc.starts_with('$') => {
            Ok((address.trim_end_matches([' ', '\t']), phc))
        }
        Some((address, phc)) if Address::parse(content).is_err() => {
            Ok((address.trim_end_matches([' ', '\t']), phc))
        }
        _ => Err(UserDbError::MissingField { line }),
    }
}

/// Parses a PHC string and checks that argon2 can verify against it: a known argon2 variant,
/// version and parameters, a salt and a hash.
fn parse_phc(phc: &str) -> Result<PasswordHash, argon2::password_hash::Error> {
    use argon2::password_hash::Error;
    let hash = PasswordHash::new(phc)?;
    Algorithm::try_from(hash.algorithm.as_str())?;
    if let Some(version) = hash.version {
        argon2::Version::try_from(version)?;
    }
    Params::try_from(&hash)?;
    if hash.salt.is_none() {
        return Err(Error::SaltInvalid);
    }
    if hash.hash.is_none() {
        return Err(Error::EncodingInvalid);
    }
    Ok(hash)
}

/// The hash an unknown login is checked against: default parameters, like every hash that
/// [`hash_password`] makes, so both paths cost the same. Made once, on first use.
fn dummy_hash() -> &'static PasswordHash {
    static DUMMY: OnceLock<PasswordHash> = OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password_with_salt(b"mta dummy password", b"mta-dummy-salt-0")
            .expect("default argon2 parameters with a 16-byte salt are valid")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
