#!/usr/bin/env bash
# THE test command (see README): installs what the tests need on a fresh Debian machine, then
# runs every check in order — format, lints, build, unit + end-to-end tests, client matrix.
#
# Needs on the machine: the pinned Rust toolchain, cargo-nextest, gcc/make (rdkafka builds its
# bundled librdkafka), python3 and node/npm. Installs: kcat (apt), the pinned Python clients
# (tests/compat/.venv) and kafkajs (npm ci) — see tests/compat/setup.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s ===\n' "$*"; }

step "install test dependencies"
tests/compat/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build"
cargo build --workspace --all-targets

step "cargo nextest"
# The end-to-end tests run the binary built above (target/debug/sluice).
cargo nextest run --workspace --no-fail-fast

step "client compatibility matrix"
COMPAT_SKIP_SETUP=1 tests/compat/run.sh
