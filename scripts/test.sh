#!/usr/bin/env bash
# The whole test suite. Installs what it needs first (the pinned emulator,
# cargo-lambda and zig into .venv; cfn-lint and the SAM CLI into .venv-infra).
# CI runs exactly this (.ci/run).
#
#   1. cargo fmt --check and cargo clippy -D warnings;
#   2. the SAM template: cfn-lint, the IAM grants, the dashboard, sam validate --lint,
#      sam build (arm64, as deployed);
#   3. the Lambda zips for the local architecture (x86_64), which the
#      end-to-end tests deploy into the emulator with the template;
#   4. cargo test: unit tests, SDK edge cases, integration and end-to-end tests.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

command -v cargo >/dev/null 2>&1 || { echo "error: the Rust toolchain (cargo) is required" >&2; exit 1; }
scripts/setup-python.sh --lambda --infra
export PATH="$root/.venv/bin:$PATH"          # cargo-lambda and zig
export SAM_CLI_TELEMETRY=0

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> cfn-lint infra/template.yaml"
.venv-infra/bin/cfn-lint infra/template.yaml
echo "==> IAM grants against the Service Authorization Reference"
.venv-infra/bin/python scripts/check-iam.py --self-test infra/template.yaml
echo "==> the dashboard against the functions' metrics and the template's resources"
.venv-infra/bin/python scripts/check-dashboard.py --self-test infra/template.yaml
echo "==> documentation links (README.md, ARCHITECTURE.md, docs/)"
python3 scripts/check-links.py --code-paths
echo "==> sam validate --lint"
# Validation is offline; the SAM CLI only wants a region to be named.
(cd infra && AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" ../.venv-infra/bin/sam validate --lint)
echo "==> sam build (arm64, cargo-lambda)"
command -v rustup >/dev/null 2>&1 || { echo "error: rustup is required to add the aarch64 target for sam build" >&2; exit 1; }
rustup target add aarch64-unknown-linux-gnu >/dev/null
(cd infra && AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" PATH="$root/.venv/bin:$PATH" \
  ../.venv-infra/bin/sam build --build-dir "$root/target/sam-build" --cache-dir "$root/target/sam-cache")

echo "==> cargo lambda build (x86_64 zips for the end-to-end tests)"
functions=(); for dir in functions/*/; do functions+=(-p "$(basename "$dir")"); done
cargo lambda build --release --locked --output-format zip --lambda-dir target/lambda/x86_64 "${functions[@]}"

echo "==> cargo test"
cargo test --workspace --locked
