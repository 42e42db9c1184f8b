#!/usr/bin/env bash
# The main job: onboards a small fleet through the JITR registrar against the
# local AWS emulator (installed into .venv on first run) and prints who got in.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
command -v cargo >/dev/null 2>&1 || { echo "error: the Rust toolchain (cargo) is required" >&2; exit 1; }
scripts/setup-python.sh
exec cargo run --quiet --locked -p jitr-registrar --example local_demo
