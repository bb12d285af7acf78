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


def _customers(sandbox: Sandbox) -> None:
    sandbox.psql(
        f"DROP TABLE IF EXISTS {TABLE}; "
        f"CREATE TABLE {TABLE} (id int PRIMARY KEY, email text, region text); "
        f"INSERT INTO {TABLE} SELECT i, 'c' || i || '@example.com', 'eu' "
        "FROM generate_series(1, 60) i; "
        f"GRANT ALL ON {TABLE} TO app_user",
        dbname="app",
    )


def test_subject_through_the_proxy_found_by_every_path(
    sandbox: Sandbox, make_proxy: Callable[..., ProxyProc], tmp_path: Path
) -> None:
    _customers(sandbox)
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


def test_after_serve_dsar_neither_scans_nor_rechecks_what_the_proxy_sealed(
    sandbox: Sandbox, make_proxy: Callable[..., ProxyProc], tmp_path: Path
) -> None:
    """The proxy indexes each segment it seals and notes it as verified: the first dsar after
    it stopped reads the index up to the last seq and hashes no segment file again, and a
    segment changed since is still caught by the file check."""
    _customers(sandbox)
    config = _config(tmp_path, sandbox)
    proxy = make_proxy(
        "--config", str(config), upstream=sandbox.pg_port, env={"SCALPLE_SEAL_BYTES": "4000"}
    )
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        for i in range(30):
            conn.execute(f"SELECT email FROM {TABLE} WHERE id = {40 + i % 5}").fetchall()
    assert proxy.stop() == 0
    segments = sorted((proxy.ledger / "segments").glob("*.checkpoint"))
    assert len(segments) > 3

    code, answer = _dsar(config, proxy.ledger, "-s", f"{TABLE}.id=42")
    assert code == 0, answer
    cover, verification = answer["ledger"], answer["verification"]
    assert isinstance(cover, dict) and isinstance(verification, dict)
    assert cover["journal_events"] == 0 and cover["indexed_upto"] == cover["last_seq"], cover
    assert answer["index"] == f"up to seq {cover['last_seq']}"
    summary = verification["summary"]
    assert "0 segment files checked now" in summary, summary
    assert f"{len(segments)} checked at" in summary, summary
    assert answer["count"] == 6

    victim = segments[1].with_suffix(".parquet")
    os.chmod(victim, 0o644)
    with victim.open("r+b") as f:  # same size, and its mtime set back: ctime still moves
        before = os.stat(victim)
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 1]))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    code, answer = _dsar(config, proxy.ledger, "-s", f"{TABLE}.id=42")
    assert code == 1 and victim.name in str(answer["error"]), answer
