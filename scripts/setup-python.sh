#!/usr/bin/env bash
# Creates .venv at the repository root and installs the pinned local AWS
# emulator (ministack) and its dependencies into it. Never installs anything
# system-wide. Safe to run again: it does nothing when the pins are unchanged.
# With --lambda it also installs cargo-lambda (scripts/requirements-lambda.txt).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"

command -v "$python" >/dev/null 2>&1 || { echo "error: $python is required (Python 3.10 or later)" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian-like systems ship venv separately; fall back to virtualenv in the user site.
    echo "    python3 -m venv is unavailable; using virtualenv" >&2
    rm -rf "$venv"
    "$python" -m pip install --user --quiet "virtualenv==20.29.3" \
      || { echo "error: cannot create a virtualenv: install python3-venv" >&2; exit 1; }
    "$python" -m virtualenv --quiet "$venv"
  fi
fi

install() {
  local requirements="$1"
  local stamp="$venv/.$(basename "$1").sha256"
  local want
  want="$(sha256sum "$requirements" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return
  fi
  echo "==> installing $(basename "$requirements") into .venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-virtualenv -r "$requirements"
  echo "$want" > "$stamp"
}

install "$root/scripts/requirements.txt"
if [ "${1:-}" = "--lambda" ]; then
  install "$root/scripts/requirements-lambda.txt"
fi

"$venv/bin/python" -c "import ministack, cryptography" \
  || { echo "error: the emulator did not install correctly into .venv" >&2; exit 1; }
