"""The session state machine with bytes alone: what it forwards, answers and records."""

from __future__ import annotations

import itertools
import struct

from scalple.events import AuditEvent
from scalple.proxy import codec
from scalple.proxy.codec import message
from scalple.proxy.session import PROBE_SQL, Policy, Session, Step

PARSE_OK, BIND_OK, NO_DATA = message(b"1", b""), message(b"2", b""), message(b"n", b"")


def _session(policy: Policy | None = None) -> tuple[Session, Step]:
    clock = itertools.count(1_000_000, 10)
    s = Session(policy or Policy(), "127.0.0.1", 5555, lambda: next(clock), session_id="s1")
    step = s.client_data(
        codec.encode_startup(
            {"user": "app_user", "database": "app", "options": "-c scalple.user=alice -c x=y"}
        )
    )
    s.server_data(
        message(b"R", b"\x00\x00\x00\x00")
        + codec.encode_backend_key(77, 99)
        + codec.encode_ready("I")
    )
    return s, step


def _bind(portal: str = "", stmt: str = "", params: tuple[bytes, ...] = ()) -> bytes:
    body = portal.encode() + b"\x00" + stmt.encode() + b"\x00" + b"\x00\x00"
    body += struct.pack("!h", len(params))
    body += b"".join(struct.pack("!i", len(p)) + p for p in params) + b"\x00\x00"
    return message(b"B", body)


def _execute(portal: str = "", limit: int = 0) -> bytes:
    return message(b"E", portal.encode() + b"\x00" + struct.pack("!i", limit))


SYNC = message(b"S", b"")


def _outcomes(step: Step) -> list[tuple[str, str | None, str]]:
    return [(e.status, e.sqlstate, e.event_id) for e in step.records]


def test_startup_strips_identity_and_answers_ssl() -> None:
    s = Session(Policy(), "127.0.0.1", 1, lambda: 0)
    ssl = struct.pack("!II", 8, codec.SSL_REQUEST)
    step = s.client_data(
        ssl + codec.encode_startup({"user": "u", "options": "-c scalple.user=bob@x.io"})
    )
    assert step.client == [b"N"]
    forwarded = codec.decode_startup_params(step.upstream[0])
    assert forwarded == {"user": "u"} and s.startup_claim is not None
    assert s.current_claim() is not None and s.current_claim().actor == "bob@x.io"  # type: ignore[union-attr]


def test_backend_key_is_replaced_with_ours() -> None:
    s, _ = _session()
    assert s.upstream_key == (77, 99)
    assert s.client_key != (77, 99)


def test_pipelined_error_is_attributed_to_its_execute_and_the_rest_skipped() -> None:
    s, _ = _session()
    parse = codec.encode_parse("", "SELECT $1::int")
    client = b"".join(
        parse + _bind(params=(str(i).encode(),)) + _execute() + SYNC for i in range(3)
    )
    step = s.client_data(client)
    assert [e.params for e in step.write_ahead] == [("0",), ("1",), ("2",)]
    assert all(e.actor == "alice" and e.identity_source == "startup" for e in step.write_ahead)
    assert b"".join(step.upstream) == client
    ids = [e.event_id for e in step.write_ahead]
    ok = (
        PARSE_OK
        + BIND_OK
        + message(b"D", b"\x00\x01\x00\x00\x00\x010")
        + message(b"C", b"SELECT 1\x00")
        + codec.encode_ready("I")
    )
    err = codec.encode_error("22012", "division by zero")
    answer = s.server_data(
        ok + PARSE_OK + BIND_OK + err + codec.encode_ready("I") + codec.encode_ready("I")
    )
    # The third Execute was in its own Sync batch: the upstream never answered it but with Z.
    assert _outcomes(answer) == [
        ("ok", None, ids[0]),
        ("error", "22012", ids[1]),
        ("skipped", None, ids[2]),
    ]
    assert answer.records[0].rows == 1


def test_refused_write_ahead_sends_a_probe_and_shows_our_error() -> None:
    s, _ = _session()
    step = s.client_data(codec.encode_query("DELETE FROM accounts"))
    assert len(step.write_ahead) == 1
    s.refuse_unwritten(step, "disk full")
    assert step.write_ahead == []
    assert codec.decode_query(step.upstream[0][5:]) == PROBE_SQL
    probe_error = codec.encode_error("42601", 'syntax error at or near "SCALPLE"')
    answer = s.server_data(probe_error + codec.encode_ready("I"))
    fields = codec.decode_error_fields(answer.client[0][5:])
    assert fields["C"] == "58030" and "disk full" in fields["M"]
    assert [e.status for e in answer.records] == ["refused"]


def test_identity_set_never_reaches_the_upstream() -> None:
    s, _ = _session()
    step = s.client_data(codec.encode_query("SET scalple.user = 'carol@x.io'; SELECT 1"))
    sent = codec.decode_query(step.upstream[0][5:])
    assert "carol" not in sent and "scalple.noop" in sent and "SELECT 1" in sent
    assert [e.actor for e in step.write_ahead] == ["carol@x.io", "carol@x.io"]
    step = s.client_data(codec.encode_parse("s1", "SET LOCAL scalple.user = 'dave'"))
    assert b"dave" not in step.upstream[0]


def test_suspended_portal_is_one_statement() -> None:
    s, _ = _session()
    first = s.client_data(
        codec.encode_parse("", "SELECT g FROM t")
        + _bind("c1")
        + _execute("c1", 2)
        + message(b"H", b"")
    )
    assert len(first.write_ahead) == 1
    row = message(b"D", b"\x00\x01\x00\x00\x00\x011")
    suspended = s.server_data(PARSE_OK + BIND_OK + row + row + message(b"s", b""))
    assert suspended.records == []
    again = s.client_data(_execute("c1", 2) + SYNC)
    assert again.write_ahead == []
    done = s.server_data(row + message(b"C", b"SELECT 1\x00") + codec.encode_ready("T"))
    (outcome,) = done.records
    assert outcome.rows == 3 and outcome.status == "ok"


def test_connection_loss_marks_owed_statements_incomplete() -> None:
    s, _ = _session()
    step = s.client_data(codec.encode_query("SELECT pg_sleep(10)"))
    (event,) = step.write_ahead
    leftover: list[AuditEvent] = s.close_out()
    assert [(e.event_id, e.status) for e in leftover] == [(event.event_id, "incomplete")]


def test_require_identity_refuses_with_28000_but_lets_transaction_control_pass() -> None:
    clock = itertools.count()
    s = Session(Policy(require_identity=True), "127.0.0.1", 1, lambda: next(clock))
    s.client_data(codec.encode_startup({"user": "app_user"}))
    s.server_data(codec.encode_ready("I"))
    begin = s.client_data(codec.encode_query("BEGIN"))
    assert codec.decode_query(begin.upstream[0][5:]) == "BEGIN"
    s.server_data(message(b"C", b"BEGIN\x00") + codec.encode_ready("T"))
    step = s.client_data(codec.encode_query("SELECT * FROM customers"))
    assert codec.decode_query(step.upstream[0][5:]) == PROBE_SQL
    assert [e.status for e in step.write_ahead] == ["refused"]
    answer = s.server_data(codec.encode_error("42601", "syntax error") + codec.encode_ready("E"))
    fields = codec.decode_error_fields(answer.client[0][5:])
    assert fields["C"] == "28000" and "scalple.user" in fields["H"]
    assert s.tx_status == "E"
