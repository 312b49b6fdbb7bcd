#!/usr/bin/env bash
# The whole test suite, as a newcomer or CI runs it: installs what the tests need (swaks,
# from Debian packages) when it is missing, builds the `mta` binary the end-to-end tests
# start, and runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The end-to-end tests in tests/ run target/debug/mta: build it first so it is never stale.
cargo build --workspace --bins
cargo test --workspace "$@"
