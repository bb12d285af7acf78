"""proxy_auth: people sign in to scalple with their own password; statements run as one role."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import psycopg
import pytest

from scalple.proxy.people import AuthFailed, ServerExchange, make_verifier
from scalple.sandbox import ROLES, Sandbox, client
from tests.proxyproc import ProxyProc, read_events, statements

ALICE, ALICE_PW = "alice@corp.example", "correct horse battery"


def _client_final(password: str, first_bare: str, server_first: str, gs2: str = "n,,") -> str:
    """What a SCRAM-SHA-256 client sends last (RFC 5802), computed here from first principles."""
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    without_proof = f"c={base64.b64encode(gs2.encode()).decode()},r={attrs['r']}"
    message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored, message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}"


@pytest.mark.parametrize("gs2", ["n,,", "y,,"])
def test_scram_exchange_accepts_the_password_and_only_it(gs2: str) -> None:
    verifier = make_verifier("s3cret")
    ok = ServerExchange(verifier)
    server_first = ok.first(f"{gs2}n=,r=clientnonce")  # libpq's empty user name
    assert ok.final(_client_final("s3cret", "n=,r=clientnonce", server_first, gs2)).startswith("v=")
    bad = ServerExchange(verifier)
    server_first = bad.first(f"{gs2}n=,r=clientnonce")
    with pytest.raises(AuthFailed, match="does not match"):
        bad.final(_client_final("guess", "n=,r=clientnonce", server_first, gs2))


def test_scram_exchange_refuses_channel_binding_and_a_foreign_nonce() -> None:
    with pytest.raises(AuthFailed, match="channel binding"):
        ServerExchange(make_verifier("x")).first("p=tls-server-end-point,,n=,r=abc")
    ex = ServerExchange(make_verifier("x"))
    server_first = ex.first("n,,n=,r=abc")
    forged = _client_final("x", "n=,r=abc", server_first.replace("r=abc", "r=abcX", 1))
    with pytest.raises(AuthFailed, match="nonce"):
        ex.final(forged)


def _add_person(people: Path, name: str, password: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "scalple", "people", "add", name, "--people-file", str(people)],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert oct(people.stat().st_mode & 0o777) == "0o600"
    assert password not in people.read_text()


@pytest.fixture
def people_file(tmp_path: Path) -> Path:
    path = tmp_path / "people"
    _add_person(path, ALICE, ALICE_PW)
    _add_person(path, "bob@corp.example", "bob's own")
    return path


def _connect(proxy: ProxyProc, user: str, password: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host="127.0.0.1", port=proxy.port, dbname="app", user=user, password=password
    )


def _env(people: Path, role: str = "app_user") -> dict[str, str]:
    return {
        "SCALPLE_PEOPLE_FILE": str(people),
        "SCALPLE_PEOPLE_ROLE": role,
        "SCALPLE_PEOPLE_PASSWORD": ROLES[role][0],
    }


def test_a_person_signs_in_and_every_statement_is_theirs(
    make_proxy: Callable[..., ProxyProc], people_file: Path
) -> None:
    proxy = make_proxy(env=_env(people_file))
    argv, env = client("psql", proxy.port, "-At", "-c", "SELECT current_user", role=ALICE)
    out = subprocess.run(argv, env={**env, "PGPASSWORD": ALICE_PW}, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "app_user"  # the upstream sees the shared role

    with _connect(proxy, ALICE, ALICE_PW) as conn:
        conn.execute("SELECT 'from psycopg'").fetchall()
        # A person is who they signed in as: neither SET nor a comment changes it.
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not assert"):
            conn.execute("SET scalple.user = 'bob@corp.example'")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not assert"):
            conn.execute("/*user='bob%40corp.example'*/ SELECT 'as bob'")
        conn.rollback()

    async def prepared() -> int:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=proxy.port,
            database="app",
            user="bob@corp.example",
            password="bob's own",
        )
        try:
            return int(await conn.fetchval("SELECT $1::int + 1", 41))
        finally:
            await conn.close()

    assert asyncio.run(prepared()) == 42
    # An application that is not in the people file goes on as before.
    with psycopg.connect(proxy.dsn()) as conn:
        conn.execute("SELECT 'the app'").fetchall()

    recorded = statements(read_events(proxy.ledger))
    by_text = {e["statement"]: e for e in recorded}
    for text, actor in [
        ("SELECT current_user", ALICE),
        ("SELECT 'from psycopg'", ALICE),
        ("SELECT $1::int + 1", "bob@corp.example"),
    ]:
        assert by_text[text]["actor"] == actor, text
        assert by_text[text]["identity_source"] == "proxy_auth"
        assert by_text[text]["db_role"] == "app_user"
    assert by_text["SELECT 'the app'"]["identity_source"] == "none"
    assert all(e["actor"] != "bob@corp.example" or e["statement"] == "SELECT $1::int + 1"
               for e in recorded)  # fmt: skip


def test_a_person_signs_in_over_tls(
    make_proxy: Callable[..., ProxyProc], people_file: Path, certificate: tuple[Path, Path]
) -> None:
    # libpq over TLS announces it could bind the channel ("y,,"); we offer plain SCRAM only.
    env = _env(people_file) | {
        "SCALPLE_TLS_CERT": str(certificate[0]),
        "SCALPLE_TLS_KEY": str(certificate[1]),
        "SCALPLE_REQUIRE_TLS": "true",
    }
    proxy = make_proxy(env=env)
    argv, cenv = client("psql", proxy.port, "-At", "-c", "SELECT 'over tls'", role=ALICE)
    cenv |= {"PGPASSWORD": ALICE_PW, "PGSSLMODE": "verify-full",
             "PGSSLROOTCERT": str(certificate[0])}  # fmt: skip
    out = subprocess.run(argv, env=cenv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    recorded = statements(read_events(proxy.ledger))
    (event,) = [e for e in recorded if e["statement"] == "SELECT 'over tls'"]
    assert event["actor"] == ALICE and event["identity_source"] == "proxy_auth"


def test_a_wrong_password_is_refused_before_anything_reaches_the_upstream(
    make_proxy: Callable[..., ProxyProc], people_file: Path
) -> None:
    proxy = make_proxy(env=_env(people_file))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(proxy, ALICE, "wrong")
    with _connect(proxy, ALICE, ALICE_PW) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert "sign-in of 'alice@corp.example' failed: password does not match" in proxy.log_text()
    recorded = [e["statement"] for e in statements(read_events(proxy.ledger))]
    assert recorded == ["BEGIN", "SELECT 1", "COMMIT"]  # nothing of the failed sign-in


@pytest.mark.parametrize("role", ["app_user", "md5_user", "pw_user"])
def test_scalple_answers_each_upstream_password_method(
    sandbox: Sandbox, make_proxy: Callable[..., ProxyProc], people_file: Path, role: str
) -> None:
    # Straight to PostgreSQL, whose pg_hba gives these roles scram-sha-256, md5 and password.
    proxy = make_proxy(env=_env(people_file, role), upstream=sandbox.pg_port)
    with _connect(proxy, ALICE, ALICE_PW) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)


def test_a_wrong_upstream_password_ends_only_that_sign_in(
    sandbox: Sandbox, make_proxy: Callable[..., ProxyProc], people_file: Path
) -> None:
    env = {**_env(people_file), "SCALPLE_PEOPLE_PASSWORD": "not it"}
    proxy = make_proxy(env=env, upstream=sandbox.pg_port)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(proxy, ALICE, ALICE_PW)
    with psycopg.connect(proxy.dsn()) as conn:  # others go on
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_bad_people_settings_stop_serve_with_the_line(
    make_proxy: Callable[..., ProxyProc], people_file: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.write_text(people_file.read_text() + "carol SCRAM-SHA-256$oops\n")
    with pytest.raises(RuntimeError) as failed:
        make_proxy(env=_env(broken))
    assert f"{broken}:3: carol: not a SCRAM-SHA-256 verifier" in str(failed.value)
    with pytest.raises(RuntimeError) as failed:
        make_proxy(env={"SCALPLE_PEOPLE_FILE": str(people_file)})
    assert "needs people_role" in str(failed.value)


def test_people_list_names_them(people_file: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "scalple", "people", "list", "--people-file", str(people_file)],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.split() == [ALICE, "bob@corp.example"]
