#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, SDK edge-case tests and
# integration tests against the local AWS emulator. Installs what it needs
# (the pinned emulator into .venv) first. CI runs exactly this (.ci/run).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

command -v cargo >/dev/null 2>&1 || { echo "error: the Rust toolchain (cargo) is required" >&2; exit 1; }
scripts/setup-python.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked
