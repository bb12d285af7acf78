#!/usr/bin/env bash
# The one test command (README, CI): install what the tests need, then lint, type-check and run
# the suite against real PostgreSQL 15 + pgAudit + PgBouncer, all with the Python of the venv
# install.sh installed into (scripts/venv.sh), so the tests' `python -m scalple` runs that too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
. scripts/venv.sh
venv=$(scalple_venv)
export PATH="$venv/bin:$PATH"
py="$venv/bin/python"
echo "== ruff"; "$py" -m ruff check scalple tests bench scripts setup.py
echo "== mypy"; "$py" -m mypy
echo "== docs are current"; "$py" scripts/gen_docs.py --check
# Two test processes, each with its own PostgreSQL and PgBouncer, a file at a time: most tests
# wait on servers and subprocesses, so two keep both cores busy and CI within 15 minutes.
parallel=(-n 2 --dist loadfile)
echo "== pytest, hot path compiled ($py)"; "$py" -m pytest -q -p no:cacheprovider "${parallel[@]}" "$@"
echo "== pytest, hot path uncompiled (SCALPLE_PURE=1: the files that test its logic, tests/conftest.py)"
SCALPLE_PURE=1 "$py" -m pytest -q -p no:cacheprovider "${parallel[@]}" "$@"
