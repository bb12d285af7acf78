"""End to end: statements through a real `scalple serve`, then `scalple dsar` over its ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg

from scalple.sandbox import Sandbox
from tests.proxyproc import ProxyProc

TABLE = "dsar_customers"
SHAPES = {
    "literal": f"SELECT email FROM {TABLE} WHERE id = 42",
    "param": f"SELECT region FROM {TABLE} WHERE email = %s",
    "result": f"SELECT id, email FROM {TABLE} WHERE id BETWEEN 40 AND 45",
    "copy": f"COPY {TABLE} (id, email) TO STDOUT",
    # Found only through the exported lines: the WHERE names no subject value.
    "copy_query": f"COPY (SELECT c.email, c.id FROM {TABLE} c WHERE c.id BETWEEN 41 AND 43) "
    "TO STDOUT WITH (FORMAT csv)",
    "bulk": f"SELECT * FROM {TABLE}",
}


def _config(tmp: Path, sandbox: Sandbox) -> Path:
    path = tmp / "scalple.toml"
    path.write_text(
        "[analysis]\n"
        f'catalog_dsn = "{sandbox.dsn("postgres")}"\n'
        f'subject_columns = {{ "{TABLE}.id" = "customer", "{TABLE}.email" = "email" }}\n'
    )
    return path


def _dsar(config: Path, ledger: Path, *args: str) -> tuple[int, dict[str, object]]:
    # The proxy keeps its keys next to its ledger (tests/proxyproc.py sets SCALPLE_KEY_DIR).
    env = {**os.environ, "SCALPLE_KEY_DIR": str(ledger.parent / "keys")}
    out = subprocess.run(
        [sys.executable, "-m", "scalple", "dsar", "-c", str(config), "--ledger", str(ledger),
         "--json", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    return out.returncode, json.loads(out.stdout)


def test_subject_through_the_proxy_found_by_every_path(
    sandbox: Sandbox, make_proxy: Callable[..., ProxyProc], tmp_path: Path
) -> None:
    sandbox.psql(
        f"DROP TABLE IF EXISTS {TABLE}; "
        f"CREATE TABLE {TABLE} (id int PRIMARY KEY, email text, region text); "
        f"INSERT INTO {TABLE} SELECT i, 'c' || i || '@example.com', 'eu' "
        "FROM generate_series(1, 60) i; "
        f"GRANT ALL ON {TABLE} TO app_user",
        dbname="app",
    )
    config = _config(tmp_path, sandbox)
    proxy = make_proxy("--config", str(config), upstream=sandbox.pg_port)
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute(SHAPES["literal"]).fetchall()
        conn.execute(SHAPES["param"], ("c42@example.com",)).fetchall()
        conn.execute(SHAPES["result"]).fetchall()
        with conn.cursor().copy(SHAPES["copy"]) as copy:
            data = b"".join(bytes(chunk) for chunk in copy)
        assert b"c42@example.com" in data
        with conn.cursor().copy(SHAPES["copy_query"]) as copy:
            data = b"".join(bytes(chunk) for chunk in copy)
        assert b"c42@example.com,42" in data
        conn.execute(SHAPES["bulk"]).fetchall()
    proxy.statements(until=lambda rows: sum(TABLE in (r["statement"] or "") for r in rows) >= 6)

    code, answer = _dsar(
        config, proxy.ledger, "-s", f"{TABLE}.id=42", "-s", f"{TABLE}.email=c42@example.com"
    )
    assert code == 0, answer
    accesses = answer["accesses"]
    assert isinstance(accesses, list)
    seen = {a["statement"]: a for a in accesses}
    for name in SHAPES:
        prefix = SHAPES[name].split(" WHERE ")[0].split(" (")[0]
        matches = [s for s in seen if s.startswith(prefix) and _same_shape(s, SHAPES[name])]
        assert matches, f"the {name} access is missing: {sorted(seen)}"
    assert answer["verification"]["result"] == "intact"  # type: ignore[index]

    code, empty = _dsar(config, proxy.ledger, "-s", f"{TABLE}.id=999")
    assert code == 0 and empty["count"] == 0 and empty["accesses"] == []


def _same_shape(recorded: str, sent: str) -> bool:
    """The recorded statement is the sent one with literals masked: compare the words around."""
    keep = [w for w in sent.replace("%s", "$1").split() if not any(c.isdigit() for c in w)]
    return all(w in recorded for w in keep if "@" not in w)
