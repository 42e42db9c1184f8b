#!/usr/bin/env bash
# The main job: `onboard demo` on the local AWS emulator. Installs what it
# needs first (the pinned emulator, cargo-lambda and zig into .venv), builds
# every function's Lambda zip (x86_64) and the CLI, then deploys the SAM
# template into the emulator and onboards a fleet of good and bad devices over
# MQTT. Arguments go to `onboard demo` (e.g. --keep, --devices 100, --json).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
command -v cargo >/dev/null 2>&1 || { echo "error: the Rust toolchain (cargo) is required" >&2; exit 1; }
scripts/setup-python.sh --lambda
export PATH="$root/.venv/bin:$PATH"          # cargo-lambda and zig
echo "==> building the functions' Lambda zips (release, x86_64; the first build takes several minutes)"
functions=(); for dir in functions/*/; do functions+=(-p "$(basename "$dir")"); done
cargo lambda build --release --locked --output-format zip --lambda-dir target/lambda/x86_64 "${functions[@]}"
echo "==> building the onboard CLI"
cargo build --locked -p onboard
exec target/debug/onboard demo "$@"
