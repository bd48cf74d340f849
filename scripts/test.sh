#!/usr/bin/env bash
# Runs every test: formatting and lints, eBPF programs under
# BPF_PROG_TEST_RUN, and integration tests on real lab clusters. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
cargo build --release --workspace --quiet
cargo test --release --workspace
