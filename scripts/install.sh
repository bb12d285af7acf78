#!/usr/bin/env bash
# Installs what Scalple needs on this machine: PostgreSQL 15 server binaries, pgAudit and
# PgBouncer (Debian packages, when missing and we are root), then the scalple package itself.
# Usage: bash scripts/install.sh [--test]   (--test adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql-15)
ls /usr/lib/postgresql/*/lib/pgaudit.so >/dev/null 2>&1 || need+=(postgresql-15-pgaudit)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
# zsh and fish only check the completion scripts: installed for the tests when we can (root
# with apt-get); otherwise those tests say which shell is missing and skip.
if [ "${1:-}" = "--test" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  command -v zsh >/dev/null 2>&1 || need+=(zsh)
  command -v fish >/dev/null 2>&1 || need+=(fish)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "scalple needs ${need[*]}: run 'sudo apt-get install -y ${need[*]}' and try again" >&2
    exit 1
  fi
fi

extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
python3 -m pip install --quiet --disable-pip-version-check -e ".${extra}"
