#!/usr/bin/env bash
# Sets up the host (idempotent) and runs every test: unit tests, real libvirt/QEMU, real
# libguestfs + nbdkit, real SQLite and PostgreSQL. Works on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh --tests
# Tests reach PostgreSQL here (created by setup-host.sh --tests).
export PYTI_TEST_POSTGRES_URL="${PYTI_TEST_POSTGRES_URL:-postgres://pyti:pyti@127.0.0.1:5432/pyti_test}"
# libguestfs: no libvirt in between, and TCG where KVM does not work (the tests probe too).
export LIBGUESTFS_BACKEND="${LIBGUESTFS_BACKEND:-direct}"
# Build every binary first: the image tests bake target/debug/pyti-agent into the guest.
cargo build --workspace --bins --locked
if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doctests: run them first, so nextest's summary closes the run.
  cargo test --workspace --locked --doc --quiet
  cargo nextest run --workspace --locked --no-tests=warn "$@"
else
  echo "cargo-nextest not found: using cargo test (real-VM tests run one at a time)" >&2
  cargo test --workspace --locked -- --test-threads=1 "$@"
fi
