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

/// The SHA-256 of the SubjectPublicKeyInfo of the (first) certificate in `cert`, in hex:
/// the data of a `3 1 1` TLSA record (RFC 7671 §5.1).
pub fn spki_sha256(cert: &Path) -> String {
    let pubkey = run(
        "openssl x509 -pubkey",
        Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(cert),
        b"",
        secs(30),
    );
    pubkey.assert_success("openssl x509 -pubkey");
    sha256_of_der(
        Command::new("openssl").args(["pkey", "-pubin", "-outform", "der"]),
        pubkey.stdout.as_bytes(),
    )
}

/// The SHA-256 of the DER of the (first) certificate in `cert`, in hex: the data of a
/// `2 0 1` or `3 0 1` TLSA record.
pub fn cert_sha256(cert: &Path) -> String {
    sha256_of_der(
        Command::new("openssl")
            .args(["x509", "-outform", "der", "-in"])
            .arg(cert),
        b"",
    )
}

/// Runs `der` (an openssl command writing DER to stdout) and hashes its output with
/// `openssl dgst`, both through a shell pipe so the binary never passes through a String.
fn sha256_of_der(der: &mut Command, stdin: &[u8]) -> String {
    let program = format!("{der:?}");
    let out = run(
        "openssl … | openssl dgst -sha256",
        Command::new("sh")
            .arg("-c")
            .arg(format!("{program} | openssl dgst -sha256 -r")),
        stdin,
        secs(30),
    );
    out.assert_success("openssl dgst");
    out.stdout
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no digest in {:?}", out.stdout))
        .to_string()
}

/// A private CA and a certificate for `name` issued by it (P-256, two days), for DANE-TA:
/// writes `DIR/STEM-ca.crt`, `DIR/STEM.crt` (the leaf followed by the CA, the chain a server
/// sends) and `DIR/STEM.key`; returns (CA certificate, chain, key).
pub fn ca_and_leaf(dir: &Path, stem: &str, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let file = |suffix: &str| dir.join(format!("{stem}{suffix}"));
    let (ca, ca_key, csr) = (file("-ca.crt"), file("-ca.key"), file(".csr"));
    let (leaf, chain, key, ext) = (file("-leaf.crt"), file(".crt"), file(".key"), file(".ext"));
    let openssl = |what: &str, cmd: &mut Command| {
        run(what, cmd, b"", secs(30)).assert_success(what);
    };
    let new_key = |cmd: &mut Command| {
        cmd.args([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ]);
    };
    let mut req = Command::new("openssl");
    req.args(["req", "-x509", "-days", "2"]);
    new_key(&mut req);
    req.arg("-subj")
        .arg(format!("/CN=DANE test CA {stem}"))
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign"])
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca);
    openssl("openssl req (CA)", &mut req);
    let mut req = Command::new("openssl");
    req.arg("req");
    new_key(&mut req);
    req.arg("-subj")
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr);
    openssl("openssl req (leaf)", &mut req);
    std::fs::write(
        &ext,
        format!("subjectAltName=DNS:{name}\nbasicConstraints=critical,CA:FALSE\n"),
    )
    .expect("write the extensions file");
    openssl(
        "openssl x509 (sign the leaf)",
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&leaf),
    );
    let pem = [
        std::fs::read(&leaf).expect("read the leaf"),
        std::fs::read(&ca).expect("read the CA"),
    ]
    .concat();
    std::fs::write(&chain, pem).expect("write the chain");
    (ca, chain, key)
}
