#!/usr/bin/env bash
# The one test command (README, CI): install what the tests need, then lint, type-check and run
# the suite against real PostgreSQL 15 + pgAudit + PgBouncer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
echo "== ruff"; python3 -m ruff check scalple tests bench scripts
echo "== mypy"; python3 -m mypy
echo "== docs are current"; python3 scripts/gen_docs.py --check
echo "== pytest"; python3 -m pytest -q -p no:cacheprovider "$@"
