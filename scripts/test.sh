#!/usr/bin/env bash
# The whole test suite, as a newcomer or CI runs it: installs what the tests need (swaks,
# dnsmasq for the relay tests' DNS, nsd and ldnsutils for the DANE tests' DNSSEC-signed DNS,
# pebble as the ACME CA, openssl, strace for the syscall-order test, libfaketime for the clock-step tests, Dovecot for the IMAP/POP3 test, rspamd for the milter test, systemd for
# `systemd-analyze verify`, postfix (private instances as peers, and the benchmark), msmtp,
# python3-fusepy and fuse3 for the
# short runs of the soak and benchmark scripts, from Debian packages; dkimpy and aiosmtpd
# from PyPI) when it is missing, builds the `mta` binary the end-to-end tests start, runs
# every test in the workspace, then every figure-producing script in its short form
# (scripts/short-runs.sh). Before the tests: the module cycle check and clippy (no warning).
#
#   scripts/test.sh              everything (what CI runs)
#   scripts/test.sh FILTER...    only `cargo test --workspace FILTER...`, no short runs
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v strace >/dev/null 2>&1 || missing+=(strace)
[ -x /usr/sbin/dnsmasq ] || command -v dnsmasq >/dev/null 2>&1 || missing+=(dnsmasq-base)
[ -x /usr/sbin/nsd ] || missing+=(nsd)
command -v ldns-signzone >/dev/null 2>&1 || missing+=(ldnsutils)
# pebble, Let's Encrypt's test CA, for the [acme] tests (tests/it/acme.rs).
command -v pebble >/dev/null 2>&1 || missing+=(pebble)
# The short runs of the figure-producing scripts: Postfix (the benchmark's peer, smtp-source
# and smtp-sink), python3-fusepy and fuse3 (the power-loss harness's FUSE file system).
[ -x /usr/sbin/smtp-source ] || missing+=(postfix)
/usr/bin/python3 -c 'import fusepy' 2>/dev/null || missing+=(python3-fusepy)
command -v fusermount >/dev/null 2>&1 || missing+=(fuse3)
# Dovecot reads what mta delivered, over IMAPS and POP3S; systemd-analyze verifies the units.
[ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd dovecot-pop3d)
[ -x /usr/bin/systemd-analyze ] || missing+=(systemd)
# libfaketime steps the wall clock under a running server (tests/it/clock_steps.rs); prlimit
# (util-linux) lowers its descriptor limit (tests/it/fd_limit.rs).
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] \
  || [ -e "/usr/lib/$(uname -m)-linux-gnu/faketime/libfaketime.so.1" ] || missing+=(libfaketime)
command -v prlimit >/dev/null 2>&1 || missing+=(util-linux)
# rspamd, as a real milter (tests/it/milter.rs runs its own private instance).
[ -x /usr/bin/rspamd ] || missing+=(rspamd)
# msmtp submits to mta as a real client (tests/it/msmtp.rs); Postfix above also runs as
# private instances, the peer of tests/it/postfix_*.rs.
command -v msmtp >/dev/null 2>&1 || missing+=(msmtp)
# Cyrus SASL's PLAIN mechanism, for a Postfix that relays through mta's submission port as
# a user (tests/it/postfix_dsn.rs); only a recommendation of Postfix's libsasl2-2.
ls /usr/lib/*/sasl2/libplain.so* >/dev/null 2>&1 || missing+=(libsasl2-modules)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  # The tests start their own nsd on a loopback port; the system service the package would
  # start (port 53 on every address, which may be taken) is not wanted: policy-rc.d says no
  # to every service start during the install, and under systemd it is disabled after.
  policy_rc=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    policy_rc=yes
  fi
  installed=0
  # Postfix asks how to configure the system's mail; the tests and the benchmark run private
  # instances with their own configs, so the system one is left unconfigured.
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections 2>/dev/null || true
  $sudo apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
    || installed=$?
  [ -z "$policy_rc" ] || $sudo rm -f /usr/sbin/policy-rc.d
  [ "$installed" = 0 ] || { echo "test.sh: apt-get failed ($installed)" >&2; exit 1; }
  if [ -d /run/systemd/system ]; then
    for unit in nsd postfix dovecot rspamd; do
      [[ " ${missing[*]} " == *" $unit"* ]] && $sudo systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
    done
  fi
fi

# An independent DKIM verifier for the signing tests (dkimpy, with PyNaCl for Ed25519), and a
# real LMTP server for the local delivery tests (aiosmtpd).
if ! python3 -c 'import dkim, nacl, aiosmtpd.lmtp' 2>/dev/null; then
  echo "test.sh: installing dkimpy, pynacl and aiosmtpd from PyPI"
  python3 -m pip install -q --disable-pip-version-check dkimpy pynacl aiosmtpd \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages dkimpy pynacl aiosmtpd
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# The checks that fail the run without being tests, named again in the closing line so that
# it never reads as a pass when one of them failed.
failed_checks=()
# The quick checks first, before the long tests. Dependencies between the modules of each
# crate run one way, as they do between the crates: an import cycle in any crate fails the
# run. Clippy's warnings (among them a function over clippy.toml's line limit) fail it too.
{ python3 scripts/module-cycles.py --self-test && python3 scripts/module-cycles.py; } \
  || { status=1; failed_checks+=("module cycles"); }
cargo clippy --workspace --all-targets -- -D warnings \
  || { echo "test.sh: clippy warnings" >&2; status=1; failed_checks+=("clippy"); }
# The end-to-end tests in tests/ run target/debug/mta: build it first so it is never stale.
cargo build --workspace --bins
cargo test --workspace "$@" 2>&1 | tee "$log" || { status=$?; failed_checks+=("cargo test (exit $status)"); }
# The scripts behind the figures in docs/ (soaks, power loss, disk full, benchmarks, fuzzing),
# in short form, each counted as one test. A run given a test filter is a developer's
# targeted run: the short runs go with the whole suite only.
runs=$(mktemp)
trap 'rm -f "$log" "$runs"' EXIT
if [ "$#" = 0 ]; then
  scripts/short-runs.sh 2>&1 | tee "$runs" || { status=1; failed_checks+=("short runs"); }
fi
# One closing line for the whole run (cargo prints one per test binary, the last of which
# is often an empty doc-test run).
{
  awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
       END { print p + 0, f + 0 }' "$log"
  awk '/^short run [^ ]+: ok/ { p++ } /^short run [^ ]+: FAILED/ { f++ } END { print p + 0, f + 0 }' "$runs"
} | awk '{ p += $1; f += $2 } END { printf "all tests: %d passed, %d failed\n", p, f }'
if [ "$status" != 0 ]; then
  echo "test.sh: FAILED (exit $status): ${failed_checks[*]:-see above}"
fi
exit "$status"
