#!/bin/sh
# Install (or update) claude-sidecar for this user and start it at login.
#
#   sh install.sh                     # from PyPI, with uv tool, else pipx, else a private venv
#   sh install.sh --source ~/src/claude-sidecar   # from a checkout (or a wheel, or a pip spec)
#   sh install.sh --no-service        # install the command only
#   sh install.sh --no-enable         # write the service files, do not enable them
#   sh install.sh --method venv       # force one method: uv | pipx | venv
#
# Running it again after an update reinstalls and restarts the daemon on the new code.
set -eu

SOURCE=claude-sidecar
METHOD=auto
SERVICE=1
ENABLE_ARG=

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --source) SOURCE=$2; shift 2 ;;
    --method) METHOD=$2; shift 2 ;;
    --no-service) SERVICE=0; shift ;;
    --no-enable) ENABLE_ARG=--no-enable; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

# A local path becomes absolute: uv and pipx resolve it from their own working directory.
if [ -e "$SOURCE" ]; then
  SOURCE=$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")
fi

if [ "$METHOD" = auto ]; then
  if command -v uv >/dev/null 2>&1; then METHOD=uv
  elif command -v pipx >/dev/null 2>&1; then METHOD=pipx
  else METHOD=venv
  fi
fi

PYTHON=${PYTHON:-python3}
DATA_HOME=${XDG_DATA_HOME:-$HOME/.local/share}
VENV=${CLAUDE_SIDECAR_VENV:-$DATA_HOME/claude-sidecar/venv}

case "$METHOD" in
  uv)
    uv tool install --force --reinstall "$SOURCE"
    BIN="$(uv tool dir --bin)/claude-sidecar"
    ;;
  pipx)
    pipx install --force "$SOURCE"
    BIN="$(pipx environment --value PIPX_BIN_DIR)/claude-sidecar"
    ;;
  venv)
    if [ ! -x "$VENV/bin/python" ]; then
      "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$SOURCE"
    BIN="$VENV/bin/claude-sidecar"
    ;;
  *)
    echo "install.sh: --method must be uv, pipx or venv (not $METHOD)" >&2
    exit 2
    ;;
esac

if [ ! -x "$BIN" ]; then
  echo "install.sh: the install finished but $BIN is missing" >&2
  exit 1
fi
echo "installed: $("$BIN" --version) at $BIN"

if [ "$SERVICE" = 1 ]; then
  # Rendered with the absolute path of this binary; restarts the daemon when it is enabled.
  "$BIN" service install $ENABLE_ARG
fi

case ":$PATH:" in
  *":$(dirname "$BIN"):"*) ;;
  *) echo "note: $(dirname "$BIN") is not on PATH; add it, or run $BIN directly" ;;
esac
