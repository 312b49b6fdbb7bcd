//! Test certificates made with openssl: a self-signed P-256 leaf for one name, valid two days,
//! marked as no CA so that it can be its own trust anchor (`ca_file`) for rustls.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run, secs};

/// Writes `DIR/STEM.crt` and `DIR/STEM.key` for `name` (subject CN and DNS SAN); returns
/// (certificate, key). Panics when openssl fails.
pub fn self_signed(dir: &Path, stem: &str, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    write_self_signed(&cert, &key, name);
    (cert, key)
}

/// [`self_signed`] into the given paths.
pub fn write_self_signed(cert: &Path, key: &Path, name: &str) {
    run(
        "openssl req",
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2"])
            .arg("-subj")
            .arg(format!("/CN={name}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{name}"))
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(key)
            .arg("-out")
            .arg(cert),
        b"",
        secs(30),
    )
    .assert_success("openssl req");
}
