"""Alice and Bob share app_user through PgBouncer; Scalple still knows who ran what."""

from __future__ import annotations

import psycopg
import pytest

from scalple.sandbox import Sandbox
from tests.proxyproc import ProxyProc

ALICE, BOB = "alice@corp.example", "bob@corp.example"


@pytest.fixture(scope="module")
def customers(sandbox: Sandbox) -> str:
    sandbox.psql(
        "DROP TABLE IF EXISTS customers;"
        "CREATE TABLE customers (id int primary key, email text, name text);"
        "INSERT INTO customers SELECT g, 'c' || g || '@example.com', 'Customer ' || g "
        "FROM generate_series(1, 50) g;"
        "ALTER TABLE customers OWNER TO app_user;",
        dbname="app",
    )
    return "customers"


def _by_marker(rows: list[dict[str, object]], marker: str) -> list[dict[str, object]]:
    return [r for r in rows if marker in str(r["statement"])]


def test_each_channel_attributes_interleaved_statements(
    proxy: ProxyProc, sandbox: Sandbox, customers: str
) -> None:
    with (
        psycopg.connect(proxy.dsn(), options=f"-c scalple.user={ALICE}", autocommit=True) as a,
        psycopg.connect(proxy.dsn(), autocommit=True) as b,
        psycopg.connect(proxy.dsn(), autocommit=True) as c,
    ):
        c.execute(f"SET scalple.user = '{BOB}'")
        for i in range(1, 6):
            a.execute(f"SELECT name FROM customers WHERE id = {i} /* m-startup */")
            b.execute(f"SELECT name FROM customers WHERE id = {i} /*user='bob%40corp.example'*/")
            c.execute(f"SELECT name FROM customers WHERE id = {i} -- m-set")
        with c.transaction():
            c.execute(f"SET LOCAL scalple.user = '{ALICE}'")
            c.execute("SELECT count(*) FROM customers -- m-local")
        c.execute("SELECT 1 -- m-after-local")
        # The identity never reached the pooled server connection.
        assert c.execute("SELECT current_setting('scalple.user', true)").fetchone() in (
            (None,),
            ("",),
        )
    rows = proxy.statements()
    startup = _by_marker(rows, "m-startup")
    comment = [r for r in rows if "user='bob" in str(r["statement"])]
    via_set = _by_marker(rows, "m-set")
    assert len(startup) == len(comment) == len(via_set) == 5
    assert {(r["actor"], r["identity_source"]) for r in startup} == {(ALICE, "startup")}
    assert {(r["actor"], r["identity_source"]) for r in comment} == {(BOB, "comment")}
    assert {(r["actor"], r["identity_source"]) for r in via_set} == {(BOB, "set")}
    assert all(
        r["status"] == "ok" and r["rows"] == 1 and r["db_role"] == "app_user"
        for r in startup + comment + via_set
    )
    (local,) = _by_marker(rows, "m-local")
    assert (local["actor"], local["identity_source"]) == (ALICE, "set")
    (after,) = _by_marker(rows, "m-after-local")
    assert after["actor"] == BOB, "SET LOCAL must end with its transaction"
    assert len({r["session_id"] for r in startup + comment + via_set}) == 3

    # pgAudit, behind the pool, sees only the shared role for every one of these reads (in this
    # test's database: the oracle's other roles read a customers table of their own).
    log = sandbox.postgres_log()
    audited = [
        line
        for line in log.splitlines()
        if "AUDIT" in line and " db=app " in line and "FROM customers WHERE id =" in line
    ]
    assert len(audited) >= 15
    assert all("user=app_user" in line for line in audited)
    assert not any(ALICE in line or "alice" in line for line in audited)


def test_leaked_set_through_pgbouncer_blames_the_wrong_person(
    make_proxy: object, sandbox: Sandbox, customers: str
) -> None:
    """The usual patch: SET app.user_id straight to PgBouncer. Bob's read runs under Alice's
    value, because the SET stayed on the server connection the pool handed to Bob."""
    direct = f"postgresql://app_user:app_secret@127.0.0.1:{sandbox.bouncer_port}/app"
    with psycopg.connect(direct, autocommit=True) as alice:
        alice.execute("SET app.user_id = 'alice'")
    with psycopg.connect(direct, autocommit=True) as bob:
        seen = bob.execute(
            "SELECT current_setting('app.user_id', true), name "
            "FROM customers WHERE id = 7 /* bob-read */"
        ).fetchone()
    assert seen is not None and seen[0] == "alice", "Bob's read is blamed on Alice"
    bob_line = [
        line
        for line in sandbox.postgres_log().splitlines()
        if "AUDIT" in line and "bob-read" in line
    ]
    assert bob_line and "user=app_user" in bob_line[-1]


def test_scalple_keeps_identities_apart_through_the_same_pool(
    proxy: ProxyProc, customers: str
) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as alice:
        alice.execute(f"SET scalple.user = '{ALICE}'")
        alice.execute("SELECT name FROM customers WHERE id = 1 -- alice-read")
    with psycopg.connect(proxy.dsn(), autocommit=True) as bob:
        bob.execute("SELECT name FROM customers WHERE id = 7 -- anon-read")
        bob.execute(f"SET scalple.user = '{BOB}'")
        bob.execute("SELECT name FROM customers WHERE id = 7 -- bob-read")
        bob.execute("RESET scalple.user")
        bob.execute("SELECT 1 -- after-reset")
    rows = proxy.statements()
    assert _by_marker(rows, "alice-read")[0]["actor"] == ALICE
    anon = _by_marker(rows, "anon-read")[0]
    assert (anon["actor"], anon["identity_source"]) == (None, "none")
    assert _by_marker(rows, "bob-read")[0]["actor"] == BOB
    assert _by_marker(rows, "after-reset")[0]["actor"] is None


def test_require_identity_refuses_unattributed_statements(
    make_proxy: object, customers: str
) -> None:
    proxy: ProxyProc = make_proxy("--require-identity")  # type: ignore[operator]
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as err:
            conn.execute("SELECT name FROM customers WHERE id = 3 -- refused-read")
        assert "scalple.user" in (err.value.diag.message_hint or "")
        conn.execute("BEGIN")  # transaction control needs no identity
        conn.execute("ROLLBACK")
        conn.execute(f"SET scalple.user = '{ALICE}'")
        assert conn.execute("SELECT name FROM customers WHERE id = 3").fetchone() == ("Customer 3",)
    with psycopg.connect(proxy.dsn()) as conn:  # extended protocol, in a transaction
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
            conn.execute("SELECT name FROM customers WHERE id = %s", (4,))
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    rows = proxy.statements()
    refused = _by_marker(rows, "refused-read")
    assert refused and refused[0]["status"] == "refused" and refused[0]["sqlstate"] == "28000"


def test_untrusted_clients_may_not_assert_identity(make_proxy: object, customers: str) -> None:
    proxy: ProxyProc = make_proxy(  # type: ignore[operator]
        env={"SCALPLE_TRUSTED_ROLES": "svc_only"}
    )
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SET scalple.user = '{ALICE}'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT 1 /*user='mallory'*/")
        assert conn.execute("SELECT 2").fetchone() == (2,)
    with pytest.raises(psycopg.OperationalError, match="may not assert"):
        psycopg.connect(proxy.dsn(), options="-c scalple.user=mallory")
    assert all(r["actor"] is None for r in proxy.statements())


def test_set_config_of_the_identity_is_refused_not_leaked(proxy: ProxyProc) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        # ClientCursor speaks the simple protocol; the default cursor the extended one (unnamed
        # statements: named ones would meet other clients' on PgBouncer's pooled connections).
        for cursor in (psycopg.ClientCursor(conn), conn.cursor()):
            with pytest.raises(psycopg.errors.SyntaxError, match="use SET"):
                cursor.execute("SELECT set_config('scalple.user', 'alice', false)")
        assert conn.execute("SELECT 3").fetchone() == (3,)
    refused = [r for r in proxy.statements() if "set_config" in str(r["statement"])]
    assert len(refused) == 2 and all(r["status"] == "refused" for r in refused)
