"""Personal data goes through the proxy by every road; none of it lands in the ledger in clear,
and every data subject it touched is recorded as a keyed hash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import psycopg
import pytest

from scalple.analysis import subject_hash
from scalple.ledger.keys import subject_secret
from scalple.sandbox import Sandbox
from tests.proxyproc import ProxyProc

PII = {
    "literal": ("ann.literal@example.com", "+44 20 7946 0011", "GB82WEST12345698765432"),
    "param": ("bo.param@example.com", "+44 20 7946 0022", "DE89370400440532013000"),
    "copy": ("cy.copy@example.com", "+44 20 7946 0033", "FR1420041010050500013M02606"),
}
ONLY_IN_RESULTS = "dee.result@example.com"  # inserted directly, only ever read via the proxy
PATTERN_ONLY = "zed.pattern@example.org"  # no PII column involved: the e-mail pattern catches it
IN_ERROR = "err.leak@example.com"  # quoted back by the server in an error message
READ_BY_CAST = "+44 20 7946 0999"  # read from the table into an error message
READ_BY_RAISE = "Zebulon Quartermaine"  # read from the table into a RAISE's text


@pytest.fixture
def pii_proxy(make_proxy: Callable[..., ProxyProc], sandbox: Sandbox, tmp_path: Path) -> ProxyProc:
    sandbox.psql(
        "DROP TABLE IF EXISTS patients;"
        "CREATE TABLE patients (id int primary key, name text, email text, phone text, iban text,"
        " profile jsonb);"
        "ALTER TABLE patients OWNER TO app_user;"
        f"INSERT INTO patients VALUES (900, 'Dee', '{ONLY_IN_RESULTS}', '+1 555 0100', NULL);"
        f"INSERT INTO patients VALUES (901, '{READ_BY_RAISE}', NULL, '{READ_BY_CAST}', NULL);",
        dbname="app",
    )
    config = tmp_path / "scalple.toml"
    config.write_text(
        "[analysis]\n"
        'pii_columns = ["patients.email", "patients.phone", "patients.iban", "patients.profile"]\n'
        'subject_columns = { "patients.id" = "patient", "patients.email" = "email" }\n'
        f'catalog_dsn = "postgresql://postgres@127.0.0.1:{sandbox.pg_port}/app"\n'
    )
    return make_proxy("--config", str(config))


def test_no_pii_in_clear_anywhere_in_the_ledger(pii_proxy: ProxyProc) -> None:
    proxy = pii_proxy
    email, phone, iban = PII["literal"]
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute(f"INSERT INTO patients VALUES (1, 'Ann', '{email}', '{phone}', '{iban}')")
        conn.execute("INSERT INTO patients VALUES (%s, %s, %s, %s, %s)", (2, "Bo", *PII["param"]))
        conn.execute("SELECT name FROM patients WHERE email = %s", (PII["param"][0],))
        with conn.cursor().copy("COPY patients (id, name, email, phone, iban) FROM STDIN") as cp:
            cp.write_row((3, "Cy", *PII["copy"]))
        with conn.cursor().copy("COPY patients TO STDOUT") as cp:
            assert sum(1 for _ in cp) == 5
        rows = conn.execute("SELECT id, email, phone FROM patients ORDER BY id").fetchall()
        assert (900, ONLY_IN_RESULTS, "+1 555 0100") in rows
        conn.execute(f"SELECT '{PATTERN_ONLY}' AS contact")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            conn.execute(f"SELECT '{IN_ERROR}'::int")
    assert proxy.stop() == 0  # seals the journal into a Parquet segment

    secrets = [
        *(v for values in PII.values() for v in values),
        ONLY_IN_RESULTS,
        PATTERN_ONLY,
        IN_ERROR,
    ]
    assert_nowhere_in_clear(proxy, secrets)

    events = proxy.statements()
    inserts = [e for e in events if str(e["statement"]).startswith("INSERT")]
    assert inserts and all(e["masked_fields"] for e in inserts)
    assert all("patients" in t for e in inserts for t in e["tables"])
    errored = [e for e in events if e["status"] == "error"]
    assert errored and errored[0]["error"] and "invalid input syntax" in errored[0]["error"]

    # Every subject touched, by every road, is recorded as a keyed hash.
    key = subject_secret(proxy.ledger.parent / "keys")
    recorded = {s for e in events for s in e["subjects"]}
    for road, value in [
        ("literal", PII["literal"][0]),
        ("param", PII["param"][0]),
        ("copy", PII["copy"][0]),
        ("result", ONLY_IN_RESULTS),
    ]:
        assert subject_hash(key, "email", value) in recorded, f"subject by {road} not recorded"
    for patient in (1, 2, 3, 900):
        assert subject_hash(key, "patient", str(patient)) in recorded


def assert_nowhere_in_clear(proxy: ProxyProc, secrets: list[str]) -> None:
    """None of `secrets` in any ledger file, in any decompressed Parquet value, or in the log."""
    files = [p for p in proxy.ledger.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    for path in files:
        data = path.read_bytes()
        for value in secrets:
            assert value.encode() not in data, f"{value} in clear in {path}"
    # Parquet pages are compressed: read every value back and look again.
    con = duckdb.connect()
    for path in (p for p in files if p.suffix == ".parquet"):
        text = str(con.execute(f"SELECT * FROM read_parquet('{path}')").fetchall())
        for value in secrets:
            assert value not in text, f"{value} in clear in {path.name}"
    for value in secrets:
        assert value not in proxy.log_text()


# Phone numbers match no value pattern: only following where each one goes can mask it.
SHAPES = {
    "regex": "SELECT id FROM patients WHERE phone ~ '{}'",
    "row comparison": "SELECT id FROM patients WHERE (name, phone) = ('Ann', '{}')",
    "row assignment": "UPDATE patients SET (name, phone) = ('Ann', '{}') WHERE id = 1",
    "CTE into INSERT": "WITH v(p) AS (VALUES ('{}')) INSERT INTO patients (id, phone) "
    "SELECT 10, p FROM v",
    "VALUES into INSERT": "INSERT INTO patients (id, phone) SELECT i, p "
    "FROM (VALUES (11, '{}')) AS v(i, p)",
    "VALUES into UPDATE": "UPDATE patients SET phone = v.p FROM (VALUES (1, '{}')) AS v(i, p) "
    "WHERE patients.id = v.i",
    "scalar subquery": "SELECT id FROM patients WHERE phone = (SELECT '{}')",
    "JSON built": "UPDATE patients SET profile = jsonb_build_object('phone', '{}') WHERE id = 1",
    "JSON compared": "SELECT id FROM patients WHERE profile->>'phone' = '{}'",
    "JSON inserted": 'INSERT INTO patients (id, profile) VALUES (12, \'{{"phone": "{}"}}\')',
    "free-text comment": "SELECT 1 /* nurse rang {} */",
    "sqlcommenter value": "SELECT 1 /*controller='{}',user='svc'*/",
}


def test_pii_in_less_common_shapes_and_errors_stays_out_of_the_ledger(
    pii_proxy: ProxyProc,
) -> None:
    proxy = pii_proxy
    secrets = {shape: f"44 20 7946 {i:04d}" for i, shape in enumerate(SHAPES, 100)}
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("INSERT INTO patients (id, name) VALUES (1, 'Ann')")
        for shape, sql in SHAPES.items():
            conn.execute(sql.format(secrets[shape]))
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            conn.execute("SELECT phone::int FROM patients WHERE id = 901")
        with pytest.raises(psycopg.errors.RaiseException):
            conn.execute(
                "DO $$BEGIN RAISE EXCEPTION 'patient % refused', "
                "(SELECT name FROM patients WHERE id = 901); END$$"
            )
    assert proxy.stop() == 0
    assert_nowhere_in_clear(proxy, [*secrets.values(), READ_BY_CAST, READ_BY_RAISE])
    events = proxy.statements()
    errors = {e["sqlstate"]: e["error"] for e in events if e["status"] == "error"}
    assert errors["22P02"].startswith('invalid input syntax for type integer: "')
    assert errors["P0001"] and len(errors["P0001"]) == len(f"patient {READ_BY_RAISE} refused")
    assert "user='svc'" in next(e["statement"] for e in events if "controller=" in e["statement"])
