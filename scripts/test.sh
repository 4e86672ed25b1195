#!/usr/bin/env bash
# THE test command (see README): installs what the tests need on a fresh Debian machine, then
# runs every check in order — format, lints, build, unit + end-to-end tests, client matrix.
#
# Needs on the machine: the pinned Rust toolchain, gcc/make (rdkafka builds its bundled
# librdkafka), python3, node/npm, OpenJDK 17 + Maven, Go. Installs when missing: cargo-nextest and
# s3s-fs (the S3 server of the S3 tests) with `cargo install` into ~/.cargo/bin; kcat (apt), the
# pinned Python clients (tests/compat/.venv), kafkajs (npm ci) and the Go clients franz-go + Sarama
# (go build, tests/compat/go) and Sarama 1.22.1 (tests/compat/sarama122) — see tests/compat/setup.sh; the
# JVM classpath (Apache Kafka 4.4.0, kafka-clients, kafka-tools from Maven Central) — see
# tests/java/setup.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s ===\n' "$*"; }

# The S3 tests find s3s-fs on PATH or in ~/.cargo/bin; put the latter on PATH for them.
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$CARGO_BIN:$PATH"
S3S_FS_VERSION=0.14.1
# 0.9.151 builds with the pinned rustc (its rust-version is 1.91).
NEXTEST_VERSION=0.9.151

step "install test dependencies"
if command -v cargo-nextest >/dev/null 2>&1 && cargo nextest --version 2>/dev/null | grep -qF "$NEXTEST_VERSION"; then
  echo "cargo-nextest $NEXTEST_VERSION: $(command -v cargo-nextest)"
else
  echo "cargo-nextest $NEXTEST_VERSION missing: cargo install cargo-nextest --version $NEXTEST_VERSION --locked"
  cargo install cargo-nextest --version "$NEXTEST_VERSION" --locked
fi
if command -v s3s-fs >/dev/null 2>&1 && s3s-fs --version 2>/dev/null | grep -qF "$S3S_FS_VERSION"; then
  echo "s3s-fs $S3S_FS_VERSION: $(command -v s3s-fs)"
else
  # 0.15+ needs a newer rustc than the pinned toolchain; --locked keeps its dependencies as released.
  echo "s3s-fs $S3S_FS_VERSION missing: cargo install s3s-fs --version $S3S_FS_VERSION --features binary --locked"
  cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked
fi
tests/compat/setup.sh
tests/java/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build"
cargo build --workspace --all-targets

step "cargo nextest"
# The end-to-end tests run the binary built above (target/debug/sluice); the harness checks it
# against its sources (target/debug/sluice.d) and rebuilds it if any is newer (tests/src/binary.rs).
cargo nextest run --workspace --no-fail-fast

step "client compatibility matrix"
COMPAT_SKIP_SETUP=1 tests/compat/run.sh
step "client compatibility matrix, S3 WAL (WAL objects in the local object store)"
COMPAT_SKIP_SETUP=1 COMPAT_SLUICE_ARGS="--wal object" tests/compat/run.sh
