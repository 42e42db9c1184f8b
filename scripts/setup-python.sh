#!/usr/bin/env bash
# Creates .venv at the repository root and installs the pinned local AWS
# emulator (ministack) and its dependencies into it. Never installs anything
# system-wide. Safe to run again: it does nothing when the pins are unchanged.
# With --lambda it also installs cargo-lambda and zig (scripts/requirements-lambda.txt).
# With --infra it also creates .venv-infra with cfn-lint and the SAM CLI
# (scripts/requirements-infra.txt), kept apart because the SAM CLI needs a
# newer botocore than the emulator pins.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
infra_venv="$root/.venv-infra"
python="${PYTHON:-python3}"

command -v "$python" >/dev/null 2>&1 || { echo "error: $python is required (Python 3.10 or later)" >&2; exit 1; }

make_venv() {
  local dir="$1"
  [ -x "$dir/bin/python" ] && return
  echo "==> creating $dir"
  if ! "$python" -m venv "$dir" 2>/dev/null; then
    # Debian-like systems ship venv separately; fall back to virtualenv in the user site.
    echo "    python3 -m venv is unavailable; using virtualenv" >&2
    rm -rf "$dir"
    "$python" -m pip install --user --quiet "virtualenv==20.29.3" \
      || { echo "error: cannot create a virtualenv: install python3-venv" >&2; exit 1; }
    "$python" -m virtualenv --quiet "$dir"
  fi
}

make_venv "$venv"

install() {
  local requirements="$1" target="${2:-$venv}"
  local stamp="$target/.$(basename "$1").sha256"
  local want
  want="$(sha256sum "$requirements" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return
  fi
  echo "==> installing $(basename "$requirements") into $(basename "$target")"
  "$target/bin/python" -m pip install --quiet --disable-pip-version-check --require-virtualenv -r "$requirements"
  echo "$want" > "$stamp"
}

install "$root/scripts/requirements.txt"
for option in "$@"; do
  case "$option" in
    --lambda) install "$root/scripts/requirements-lambda.txt" ;;
    --infra)
      make_venv "$infra_venv"
      install "$root/scripts/requirements-infra.txt" "$infra_venv"
      ;;
    *) echo "error: unknown option $option (use --lambda, --infra)" >&2; exit 2 ;;
  esac
done

"$venv/bin/python" -c "import ministack, cryptography" \
  || { echo "error: the emulator did not install correctly into .venv" >&2; exit 1; }
