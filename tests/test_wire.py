"""tests/wire.py against the sandbox's PostgreSQL: each sign-in it speaks, pipelines, answers."""

from __future__ import annotations

import pytest

from scalple.sandbox import Sandbox
from tests import wire


@pytest.mark.parametrize("role", ["trust_user", "pw_user", "md5_user", "app_user"])
def test_signs_in_by_each_method(sandbox: Sandbox, role: str) -> None:
    with wire.Wire.connect(sandbox.pg_port, role, "app", params={"application_name": "w"}) as w:
        assert w.parameters["application_name"] == "w"
        assert w.backend_key is not None
        assert wire.rows(w.simple("SELECT current_user")) == [(role,)]


def test_a_pipeline_is_answered_in_order_until_its_last_ready(sandbox: Sandbox) -> None:
    params = {"standard_conforming_strings": "off", "client_encoding": "LATIN1"}
    with wire.Wire.connect(sandbox.pg_port, "app_user", "app", params=params) as w:
        assert w.encoding == "latin-1" and w.parameters["standard_conforming_strings"] == "off"
        got = w.roundtrip(
            wire.parse("s1", "SELECT $1::text || 'é'", encoding=w.encoding),
            wire.bind("", "s1", ["caf"], encoding=w.encoding),
            wire.describe("P", ""),
            wire.execute(),
            wire.sync(),
            wire.parse("s1", "SELECT 2"),  # the name exists: 42P05, the rest is skipped
            wire.bind("", "s1", ["x"]),
            wire.execute(),
            wire.sync(),
            wire.query(r"SELECT 'it\'s'"),
        )
    kinds = [type(m).__name__ for m in got if not isinstance(m, wire.NoticeResponse)]
    assert kinds == [
        "ParseComplete", "BindComplete", "RowDescription", "DataRow", "CommandComplete",
        "ReadyForQuery", "ErrorResponse", "ReadyForQuery",
        "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery",
    ]  # fmt: skip
    assert [e.sqlstate for e in wire.errors(got)] == ["42P05"]
    rows = [
        tuple(v.decode("latin-1") for v in m.values if v)
        for m in got
        if isinstance(m, wire.DataRow)
    ]
    assert rows == [("café",), ("it's",)]


def test_a_peer_that_closes_is_reported_with_what_it_said(sandbox: Sandbox) -> None:
    with pytest.raises(wire.WireError, match='3D000 database "no_such_db" does not exist'):
        wire.Wire.connect(sandbox.pg_port, "app_user", "no_such_db")
