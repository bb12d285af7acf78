# Sourced by install.sh and test.sh, so both agree on where Scalple is installed.
#
# The interpreter: SCALPLE_PYTHON, else python3. The virtual environment, first that applies:
#   1. SCALPLE_VENV;
#   2. the one the interpreter already runs in (sys.prefix != sys.base_prefix): a developer's
#      active venv is used as it is, never a venv nested inside it or made somewhere else;
#   3. /opt/scalple/venv as root, ${XDG_DATA_HOME:-~/.local/share}/scalple/venv otherwise.
SCALPLE_PYTHON="${SCALPLE_PYTHON:-python3}"

scalple_active_venv() {
  "$SCALPLE_PYTHON" -c 'import sys; sys.prefix != sys.base_prefix and print(sys.prefix)' \
    2>/dev/null || true
}

scalple_venv() {
  local active
  if [ -n "${SCALPLE_VENV:-}" ]; then
    echo "$SCALPLE_VENV"
  elif active=$(scalple_active_venv) && [ -n "$active" ]; then
    echo "$active"
  elif [ "$(id -u)" -eq 0 ]; then
    echo /opt/scalple/venv
  else
    echo "${XDG_DATA_HOME:-$HOME/.local/share}/scalple/venv"
  fi
}
