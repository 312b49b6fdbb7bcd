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

use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::PasswordHash;
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
    /// `add` for an address that starts with `#`: its line in the users file would be read
    /// back as a comment, and the user would silently not exist.
    #[error(
        "{0}: an address starting with '#' cannot be a user (its line in the users file \
         would read as a comment)"
    )]
    CommentLike(Address),
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
    /// [`UserDbError::CommentLike`] for an address starting with `#` (the users file reads
    /// such a line as a comment), [`UserDbError::Exists`] if the user exists (in any case
    /// spelling), a password policy error from [`check_password_policy`], or
    /// [`UserDbError::Hash`].
    pub fn add(&mut self, address: Address, password: &str) -> Result<(), UserDbError> {
        if address.to_string().starts_with('#') {
            return Err(UserDbError::CommentLike(address));
        }
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
    /// fixed dummy hash), so timing does not reveal which users exist. Allocates the argon2
    /// working memory for this one check; [`UserDb::verify_with`] reuses it.
    pub fn verify(&self, login: &str, password: &str) -> Verified {
        self.verify_with(login, password, &mut Scratch::default())
    }

    /// [`UserDb::verify`] with the argon2 working memory in `scratch`, kept for the next
    /// check: a thread that checks passwords one after the other holds one buffer for good,
    /// instead of leaving the allocator a fresh 19 MiB to keep after each check.
    pub fn verify_with(&self, login: &str, password: &str, scratch: &mut Scratch) -> Verified {
        let record = Address::parse(login)
            .ok()
            .and_then(|address| self.users.get(&address.key()));
        let stored = record.and_then(|record| PasswordHash::new(&record.phc).ok());
        match (record, stored) {
            (Some(record), Some(hash)) => match matches(password.as_bytes(), &hash, scratch) {
                true => Verified::User(record.address.clone()),
                false => Verified::Rejected,
            },
            // Unknown user (or a record whose hash cannot be read, which parse and add never
            // store): do the same work, then refuse whatever its outcome.
            _ => {
                let _ = matches(password.as_bytes(), dummy_hash(), scratch);
                Verified::Rejected
            }
        }
    }

    fn insert(&mut self, record: UserRecord) {
        self.users.insert(record.address.key(), record);
    }
}

/// Argon2 working memory (`m_cost` blocks of 1 KiB; 19 MiB for the default parameters),
/// grown to what a hash needs and kept for the next check.
#[derive(Default)]
pub struct Scratch(Vec<argon2::Block>);

/// True when `password` hashes to `hash` under the hash's own algorithm, version and
/// parameters, as argon2's `verify_password` decides, but in `scratch`'s memory. The outputs
/// are compared in constant time (`Output`'s equality).
fn matches(password: &[u8], hash: &PasswordHash, scratch: &mut Scratch) -> bool {
    use argon2::password_hash::phc::Output;
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(argon2::Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(hash) else {
        return false;
    };
    let blocks = params.block_count();
    if scratch.0.len() < blocks {
        scratch.0.resize(blocks, argon2::Block::default());
    }
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let Some(out) = buffer.get_mut(..expected.len()) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params);
    if argon
        .hash_password_into_with_memory(password, salt, &mut *out, &mut scratch.0[..blocks])
        .is_err()
    {
        return false;
    }
    Output::new(out).is_ok_and(|computed| computed == *expected)
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
#[path = "auth_tests.rs"]
mod tests;
