#!/usr/bin/env bash
# Builds the release binaries and runs the benchmarks (bench/):
#   - the size of the stripped jitr-registrar binary and of its Lambda zip
#     (`bootstrap`), made by `cargo lambda` when available, else by python3;
#   - check-bench:  µs per certificate check (no emulator);
#   - rounds-bench: sequential rounds of AWS calls per provisioning (emulator);
#   - cold-start:   init time, first-event latency and peak RSS of the binary
#                   under a local Lambda Runtime API (emulator);
#   - hook-bench:   answer time and DynamoDB rounds of the fleet-provisioning hook
#                   (emulator, through a delaying proxy);
#   - rotation-scan: items read and capacity consumed by the rotation run's
#                    expiry scan and by a whole run, for inventories of several
#                    sizes with the same number of expiring certificates (emulator);
#   - kms-issuer-bench: time the kmsCa issuer adds per certificate over
#                    CreateCertificateFromCsr, and its requests by operation,
#                    KMS included (emulator, through a recording proxy).
#
# Usage: scripts/bench.sh [--python-zip]
#   --python-zip   zip with python3 even when cargo-lambda is available (it
#                  makes a second release build, for its own target directory)
#
# Options of the benchmarks can be passed through the environment:
#   CHECK_ITERATIONS (2000), ROUNDS_LATENCY_MS (50), ROUNDS_DEVICES (10), COLD_RUNS (5),
#   MINT_P256 (5000), MINT_RSA (200), ROTATION_SIZES (10000,100000), ROTATION_EXPIRING (100),
#   HOOK_LATENCY_MS (50), HOOK_REQUESTS (20), KMS_CERTIFICATES (200), KMS_LATENCY_MS (0).
#
# cargo-lambda is looked for on PATH and in .venv/bin; `scripts/setup-python.sh --lambda`
# installs the pinned version (scripts/requirements-lambda.txt) into .venv.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

cargo_lambda_pin="$(sed -n 's/^cargo-lambda==//p' scripts/requirements-lambda.txt 2>/dev/null || true)"

use_cargo_lambda=1
for arg in "$@"; do
    case "$arg" in
        --python-zip) use_cargo_lambda=0 ;;
        -h | --help)
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "bench.sh: unknown argument $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

python="${ONBOARDING_PYTHON:-$root/.venv/bin/python}"
if [[ ! -x "$python" ]]; then
    echo "bench.sh: the emulator's Python environment is missing ($python)." >&2
    echo "bench.sh: run scripts/setup-python.sh first (or set ONBOARDING_PYTHON)." >&2
    exit 1
fi
if ! "$python" -c 'import ministack' 2>/dev/null; then
    echo "bench.sh: $python cannot import ministack (the emulator)." >&2
    echo "bench.sh: run scripts/setup-python.sh first (or set ONBOARDING_PYTHON)." >&2
    exit 1
fi

human() { # bytes -> "N bytes (X.Y MiB)"
    awk -v b="$1" 'BEGIN { printf "%d bytes (%.1f MiB)", b, b / 1048576 }'
}

echo "==> cargo build --release -p jitr-registrar -p onboarding-bench -p onboard"
cargo build --release -p jitr-registrar -p onboarding-bench -p onboard

target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
release="$target_dir/release"
binary="$release/jitr-registrar"
[[ -x "$binary" ]] || { echo "bench.sh: $binary was not built" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo
echo "==> binary and zip sizes"
# The release profile strips symbols already; strip a copy to be sure.
cp "$binary" "$work/bootstrap"
if command -v strip >/dev/null; then
    strip "$work/bootstrap"
fi
binary_size="$(stat -c %s "$binary")"
stripped_size="$(stat -c %s "$work/bootstrap")"

cargo_lambda=""
if [[ "$use_cargo_lambda" == 1 ]]; then
    if command -v cargo-lambda >/dev/null; then
        cargo_lambda="$(command -v cargo-lambda)"
    elif [[ -x "$root/.venv/bin/cargo-lambda" ]]; then
        cargo_lambda="$root/.venv/bin/cargo-lambda"
    fi
fi
zip_how=""
if [[ -n "$cargo_lambda" ]]; then
    # `cargo lambda` finds zig through the venv's python (the ziglang wheel).
    PATH="$(dirname "$cargo_lambda"):$root/.venv/bin:$PATH"
    export PATH
    version="$(cargo lambda --version | awk '{print $2}')"
    if [[ -n "$cargo_lambda_pin" && "$version" != "$cargo_lambda_pin" ]]; then
        echo "bench.sh: warning: cargo-lambda $version, the pinned version is $cargo_lambda_pin" >&2
    fi
    lambda_dir="$target_dir/lambda/x86_64"
    echo "==> cargo lambda build --release --output-format zip --lambda-dir $lambda_dir -p jitr-registrar"
    cargo lambda build --release --output-format zip --lambda-dir "$lambda_dir" -p jitr-registrar
    zip_file="$lambda_dir/jitr-registrar/bootstrap.zip"
    zip_how="cargo lambda $version (x86_64, its own release build)"
else
    zip_file="$work/bootstrap.zip"
    python3 - "$work/bootstrap" "$zip_file" <<'PY'
import sys, zipfile
source, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    info = zipfile.ZipInfo("bootstrap")
    info.external_attr = 0o100755 << 16  # a regular, executable file
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(source, "rb") as f:
        z.writestr(info, f.read(), compresslevel=9)
PY
    zip_how="python3 zipfile, deflate level 9, of the stripped target/release binary"
    if [[ "$use_cargo_lambda" == 1 ]]; then
        echo "(cargo-lambda not found; for its zip run scripts/setup-python.sh --lambda)"
    fi
fi
[[ -f "$zip_file" ]] || { echo "bench.sh: no zip at $zip_file" >&2; exit 1; }
zip_size="$(stat -c %s "$zip_file")"
# What the zip holds: bootstrap, executable.
zip_entry="$(python3 - "$zip_file" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    entry = z.getinfo("bootstrap")
    print(entry.file_size, oct((entry.external_attr >> 16) & 0o777))
PY
)"
bootstrap_size="${zip_entry%% *}"

echo
echo "## sizes"
echo
echo "| artifact | size |"
echo "| --- | ---: |"
echo "| target/release/jitr-registrar (release profile, strip = \"symbols\") | $(human "$binary_size") |"
echo "| the same, after \`strip\` | $(human "$stripped_size") |"
echo "| \`bootstrap\` inside the zip (mode ${zip_entry##* }) | $(human "$bootstrap_size") |"
echo "| Lambda zip ($zip_how) | $(human "$zip_size") |"

echo
echo "==> check-bench"
"$release/check-bench" --iterations "${CHECK_ITERATIONS:-2000}"

echo
echo "==> rounds-bench"
"$release/rounds-bench" --latency-ms "${ROUNDS_LATENCY_MS:-50}" --devices "${ROUNDS_DEVICES:-10}"

echo
echo "==> cold-start"
"$release/cold-start" --binary "$binary" --runs "${COLD_RUNS:-5}"

echo
echo "==> hook-bench"
"$release/hook-bench" --latency-ms "${HOOK_LATENCY_MS:-50}" --requests "${HOOK_REQUESTS:-20}"

echo
echo "==> rotation-scan"
"$release/rotation-scan" --sizes "${ROTATION_SIZES:-10000,100000}" --expiring "${ROTATION_EXPIRING:-100}"

echo
echo "==> kms-issuer-bench"
"$release/kms-issuer-bench" --certificates "${KMS_CERTIFICATES:-200}" --latency-ms "${KMS_LATENCY_MS:-0}"

echo
echo "==> onboard device mint throughput"
mint_dir="$work/mint"
"$release/onboard" ca create --out "$mint_dir/ca" >/dev/null
echo "| key type | certificates | seconds | per second |"
echo "| --- | ---: | ---: | ---: |"
for spec in "p256 ${MINT_P256:-5000}" "rsa2048 ${MINT_RSA:-200}"; do
    key_type="${spec%% *}"
    count="${spec##* }"
    "$release/onboard" --json device mint --ca "$mint_dir/ca" --key-type "$key_type" --count "$count" \
        --name "$key_type-{n:06}" --out "$mint_dir/$key_type" |
        python3 -c '
import json, sys
r = json.load(sys.stdin)
print("| %s | %d | %.2f | %.0f |" % (sys.argv[1], r["minted"], r["seconds"], r["perSecond"]))
' "$key_type"
done
