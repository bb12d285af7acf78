#!/usr/bin/env bash
# Installs what Scalple needs on this machine, then Scalple itself into a virtual environment of
# its own, and puts the `scalple` command on PATH.
#
#   bash scripts/install.sh [--test]        (--test adds the test tools)
#
# Debian/Ubuntu packages, installed with apt-get when missing and we are root (otherwise named,
# and we stop): PostgreSQL 15 server binaries, pgAudit, PgBouncer, and venv support (and the
# headers) for the Python that builds the venv. A distribution's own python3 is never installed
# into (PEP 668): Scalple gets a venv, chosen as scripts/venv.sh says (SCALPLE_VENV overrides;
# an already active venv is used as it is). The command is linked into SCALPLE_BIN_DIR
# (/usr/local/bin as root, ~/.local/bin otherwise) unless `scalple` on PATH is already this one.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh

say() { echo "install.sh: $*" >&2; }
can_apt() { [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; }

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql-15)
ls /usr/lib/postgresql/*/lib/pgaudit.so >/dev/null 2>&1 || need+=(postgresql-15-pgaudit)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
# zsh and fish only check the completion scripts: installed for the tests when we can (root
# with apt-get); otherwise those tests say which shell is missing and skip.
if [ "${1:-}" = "--test" ] && can_apt; then
  command -v zsh >/dev/null 2>&1 || need+=(zsh)
  command -v fish >/dev/null 2>&1 || need+=(fish)
fi

venv=$(scalple_venv)
py="$SCALPLE_PYTHON"
if [ ! -x "$venv/bin/python" ]; then
  # We build a venv: the interpreter must exist, be new enough and be able to make one.
  if ! command -v "$py" >/dev/null 2>&1; then
    [ "$py" = python3 ] || { say "SCALPLE_PYTHON=$py is not a command"; exit 1; }
    need+=(python3 python3-venv python3-dev)
  elif ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    say "scalple needs Python 3.11 or newer; $py is $("$py" -V 2>&1)." \
      "Install python3.11 and python3.11-venv, then run: SCALPLE_PYTHON=python3.11 bash $0"
    exit 1
  else
    ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    # Debian and Ubuntu ship ensurepip (which venv needs) in pythonX.Y-venv, and the headers a
    # package without a wheel needs to build in pythonX.Y-dev.
    "$py" -c 'import ensurepip, venv' 2>/dev/null || need+=("python$ver-venv")
    headers=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    if [ ! -e "$headers/Python.h" ]; then
      if can_apt; then
        need+=("python$ver-dev")
      else
        say "note: no Python headers ($headers/Python.h; Debian package python$ver-dev):" \
          "a dependency without a wheel for this machine would fail to build"
      fi
    fi
  fi
fi

# A C compiler and the Python headers compile the per-statement hot path (Cython, setup.py);
# without them Scalple installs uncompiled, and runs slower.
vpy="$py"
[ -x "$venv/bin/python" ] && vpy="$venv/bin/python"
if command -v "$vpy" >/dev/null 2>&1; then
  vver=$("$vpy" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  vheaders=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  if ! command -v cc >/dev/null 2>&1 || [ ! -e "$vheaders/Python.h" ]; then
    if can_apt; then
      command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
      [ -e "$vheaders/Python.h" ] || [[ " ${need[*]} " == *" python$vver-dev "* ]] \
        || need+=("python$vver-dev")
    else
      say "note: no C compiler or Python headers: scalple installs uncompiled (slower);" \
        "to compile it: sudo apt-get install -y gcc python$vver-dev"
    fi
  fi
fi

if [ ${#need[@]} -gt 0 ]; then
  if can_apt; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    say "scalple needs ${need[*]}: run 'sudo apt-get install -y ${need[*]}' and try again"
    exit 1
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating a virtual environment for scalple in $venv"
  mkdir -p "$(dirname "$venv")"
  if ! "$py" -m venv "$venv"; then
    rm -rf "$venv"
    say "could not create a virtual environment with $py in $venv (see above)"
    exit 1
  fi
fi

# Into a venv of its own, Scalple is copied: it then runs whoever owns this checkout and
# wherever it lies (a service user cannot read /root). For the tests, or into a developer's
# active venv, it is installed editable, so the checkout is what runs.
if [ "${1:-}" = "--test" ]; then
  spec=(-e ".[test]")
elif [ "$venv" = "$(scalple_active_venv)" ]; then
  spec=(-e .)
else
  spec=(.)
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${spec[@]}"

# The command on PATH: a link to the venv's script, unless PATH already finds that script.
target="$venv/bin/scalple"
found=$(command -v scalple 2>/dev/null || true)
if [ -z "$found" ] || [ "$(readlink -f "$found")" != "$(readlink -f "$target")" ]; then
  if [ "$(id -u)" -eq 0 ]; then bindir="${SCALPLE_BIN_DIR:-/usr/local/bin}"
  else bindir="${SCALPLE_BIN_DIR:-$HOME/.local/bin}"; fi
  link="$bindir/scalple"
  mkdir -p "$bindir"
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    say "left $link alone (it is not a link this script made); run $target instead"
  else
    ln -sfn "$target" "$link"
    say "linked $link -> $target"
  fi
  case ":$PATH:" in
    *":$bindir:"*)
      found=$(command -v scalple 2>/dev/null || true)
      if [ "$(readlink -f "$found")" != "$(readlink -f "$target")" ]; then
        say "note: 'scalple' on PATH is $found, which comes before $bindir;" \
          "remove it or run $target"
      fi
      ;;
    *) say "add $bindir to PATH to run scalple:  export PATH=\"$bindir:\$PATH\"" ;;
  esac
fi
say "scalple $("$target" --version | cut -d' ' -f2) is in $venv (its python: $venv/bin/python)"
