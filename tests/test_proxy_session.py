"""The session state machine with bytes alone: what it forwards, answers, holds and records."""

from __future__ import annotations

import itertools
import struct

from scalple.events import AuditEvent
from scalple.proxy import codec
from scalple.proxy.codec import message
from scalple.proxy.session import Policy, Session, Step

PARSE_OK, BIND_OK, CLOSE_OK, NO_DATA = (message(t, b"") for t in (b"1", b"2", b"3", b"n"))
SYNC = message(b"S", b"")
ROW = message(b"D", b"\x00\x01\x00\x00\x00\x011")


def _session(policy: Policy | None = None, options: str = "-c scalple.user=alice") -> Session:
    clock = itertools.count(1_000_000, 10)
    s = Session(policy or Policy(), "127.0.0.1", 5555, lambda: next(clock), session_id="s1")
    params = {"user": "app_user", "database": "app"}
    if options:
        params["options"] = options
    s.client_data(codec.encode_startup(params))
    s.server_data(
        message(b"R", b"\x00\x00\x00\x00")
        + codec.encode_backend_key(77, 99)
        + codec.encode_ready("I")
    )
    return s


def _bind(portal: str = "", stmt: str = "", params: tuple[bytes, ...] = ()) -> bytes:
    body = portal.encode() + b"\x00" + stmt.encode() + b"\x00" + b"\x00\x00"
    body += struct.pack("!h", len(params))
    body += b"".join(struct.pack("!i", len(p)) + p for p in params) + b"\x00\x00"
    return message(b"B", body)


def _execute(portal: str = "", limit: int = 0) -> bytes:
    return message(b"E", portal.encode() + b"\x00" + struct.pack("!i", limit))


def _done(tag: str, status: str = "I") -> bytes:
    return message(b"C", tag.encode() + b"\x00") + codec.encode_ready(status)


def _sent(step: Step) -> list[str]:
    """The SQL of each Query or Parse forwarded (Parse as `P:name:sql`)."""
    out = []
    for piece in step.upstream:
        framer = codec.Framer()
        for frame in framer.feed(piece):
            assert frame.body is not None
            if frame.type == ord("Q"):
                out.append(codec.decode_query(frame.body))
            elif frame.type == ord("P"):
                name, sql, _ = codec.decode_parse(frame.body)
                out.append(f"P:{name}:{sql}")
    return out


def _outcomes(step: Step) -> list[tuple[str, str | None, str]]:
    return [(e.status, e.sqlstate, e.event_id) for e in step.records]


def _error_of(step: Step) -> dict[str, str]:
    for piece in step.client:
        if piece[:1] == b"E":
            return codec.decode_error_fields(piece[5:])
    raise AssertionError("no ErrorResponse to the client")


def _probe_error(s: Session) -> bytes:
    return codec.encode_error("42601", f'syntax error at or near "{s._probe}"')


def test_startup_strips_identity_and_answers_ssl() -> None:
    s = Session(Policy(), "127.0.0.1", 1, lambda: 0)
    ssl = struct.pack("!II", 8, codec.SSL_REQUEST)
    step = s.client_data(
        ssl + codec.encode_startup({"user": "u", "options": "-c scalple.user=bob@x.io"})
    )
    assert step.client == [b"N"]
    assert codec.decode_startup_params(step.upstream[0]) == {"user": "u"}
    assert s.attribution.startup is not None and s.attribution.startup.actor == "bob@x.io"


def test_the_identity_as_a_startup_parameter_of_its_own_is_stripped_too() -> None:
    s = Session(Policy(), "127.0.0.1", 1, lambda: 0)
    step = s.client_data(codec.encode_startup({"user": "u", "Scalple.User": "eve"}))
    assert codec.decode_startup_params(step.upstream[0]) == {"user": "u"}
    assert s.attribution.startup is not None and s.attribution.startup.actor == "eve"


def test_backend_key_keeps_the_server_pid_and_replaces_the_secret() -> None:
    s = _session()
    assert s.upstream_key == (77, 99)
    assert s.client_key is not None and s.client_key[0] == 77 and s.client_key[1] != 99


def test_the_cancel_key_a_worker_gives_names_that_worker() -> None:
    for worker in range(5):
        keys = {_session(Policy(worker=worker, worker_bits=3)).client_key for _ in range(20)}
        assert {key[1] & 0b111 for key in keys if key} == {worker}
        assert len(keys) > 1 and all(key and 0 <= key[1] < 2**31 for key in keys)


def test_pipelined_batches_wait_for_the_one_in_flight() -> None:
    s = _session()
    parse = codec.encode_parse("", "SELECT $1::int")
    batches = [parse + _bind(params=(str(i).encode(),)) + _execute() + SYNC for i in range(3)]
    step = s.client_data(b"".join(batches))
    assert b"".join(step.upstream) == batches[0]  # the others wait behind it
    assert [e.params for e in step.write_ahead] == [("0",)]
    assert s.held_bytes == len(batches[1]) + len(batches[2])
    ok = PARSE_OK + BIND_OK + ROW + _done("SELECT 1")
    second = s.server_data(ok)
    assert b"".join(second.upstream) == batches[1] and [e.params for e in second.write_ahead] == [
        ("1",)
    ]
    err = codec.encode_error("22012", "division by zero")
    third = s.server_data(PARSE_OK + BIND_OK + err + codec.encode_ready("I"))
    assert [(o[0], o[1]) for o in _outcomes(third)] == [("error", "22012")]
    assert b"".join(third.upstream) == batches[2]
    assert second.records[0].rows == 1 and second.records[0].status == "ok"


def test_a_failed_write_ahead_sends_probes_and_shows_58030() -> None:
    s = _session()
    step = s.client_data(codec.encode_query("DELETE FROM accounts"))
    assert len(step.write_ahead) == 1 and step.unwritten is not None
    assert _sent(Step(upstream=step.unwritten)) == [s._probe]
    answer = s.server_data(_probe_error(s) + codec.encode_ready("I"))
    fields = _error_of(answer)
    assert fields["C"] == "58030"
    (record,) = answer.records
    assert record.kind == "statement" and record.status == "refused"  # written now, whole


def test_identity_set_never_reaches_the_upstream() -> None:
    s = _session()
    step = s.client_data(codec.encode_query("SET scalple.user = 'carol@x.io'; SELECT 1"))
    sent = _sent(step)[0]
    assert "carol" not in sent and "scalple.noop" in sent and "SELECT 1" in sent
    assert [e.actor for e in step.write_ahead] == ["carol@x.io", "carol@x.io"]
    s.server_data(_done("SET").replace(codec.encode_ready("I"), b"") + _done("SELECT 1"))
    step = s.client_data(codec.encode_parse("s1", "SET LOCAL scalple.user = 'dave'") + SYNC)
    assert b"dave" not in b"".join(step.upstream)


def test_suspended_portal_is_one_statement() -> None:
    s = _session()
    first = s.client_data(
        codec.encode_parse("", "SELECT g FROM t") + _bind("c1") + _execute("c1", 2) + SYNC
    )
    assert len(first.write_ahead) == 1
    suspended = s.server_data(PARSE_OK + BIND_OK + ROW + ROW + message(b"s", b"") + b"")
    assert suspended.records == []
    s.server_data(codec.encode_ready("T"))
    again = s.client_data(_execute("c1", 2) + SYNC)
    assert again.write_ahead == []
    done = s.server_data(ROW + _done("SELECT 1", "T"))
    (outcome,) = done.records
    assert outcome.rows == 3 and outcome.status == "ok"


def test_connection_loss_marks_owed_statements_incomplete() -> None:
    s = _session()
    step = s.client_data(codec.encode_query("SELECT pg_sleep(10)"))
    (event,) = step.write_ahead
    leftover: list[AuditEvent] = s.close_out()
    assert [(e.event_id, e.status) for e in leftover] == [(event.event_id, "incomplete")]


def test_require_identity_refuses_with_28000_but_lets_transaction_control_pass() -> None:
    s = _session(Policy(require_identity=True), options="")
    begin = s.client_data(codec.encode_query("BEGIN"))
    assert _sent(begin) == ["BEGIN"]
    s.server_data(_done("BEGIN", "T"))
    step = s.client_data(codec.encode_query("SELECT * FROM customers"))
    assert _sent(step) == [s._probe]
    assert [e.status for e in step.write_ahead] == ["refused"]
    answer = s.server_data(_probe_error(s) + codec.encode_ready("E"))
    fields = _error_of(answer)
    assert fields["C"] == "28000" and "scalple.user" in fields["H"]
    assert s.mirror.failed


# --- the session follows the server, not the client (issue: the record is the truth) --------


def test_a_name_the_server_kept_cannot_be_taken_over_by_a_second_parse() -> None:
    s = _session(Policy(require_identity=True), options="")
    s.client_data(codec.encode_parse("s", "BEGIN") + SYNC)
    s.server_data(PARSE_OK + codec.encode_ready("I"))
    # The server would answer 42P05 and keep BEGIN; the proxy refuses before it.
    step = s.client_data(codec.encode_parse("s", "UPDATE t SET x = 1") + SYNC)
    assert all("UPDATE" not in q for q in _sent(step))
    answer = s.server_data(_probe_error(s) + codec.encode_ready("I"))
    assert _error_of(answer)["C"] == "42P05"
    step = s.client_data(_bind("", "s") + _execute() + SYNC)
    (event,) = step.write_ahead
    assert event.statement == "BEGIN"


def test_a_close_the_server_skipped_leaves_the_statement_in_place() -> None:
    s = _session()
    s.client_data(codec.encode_parse("s", "SELECT 1") + SYNC)
    s.server_data(PARSE_OK + codec.encode_ready("I"))
    s.client_data(codec.encode_parse("bad", "SELEC") + codec.encode_target(b"C", "S", "s") + SYNC)
    s.server_data(codec.encode_error("42601", "syntax error") + codec.encode_ready("I"))
    assert "s" in s.mirror.statements  # the server never ran the Close
    step = s.client_data(_bind("", "s") + _execute() + SYNC)
    assert step.write_ahead[0].statement == "SELECT 1"


def test_names_this_connection_did_not_make_are_refused() -> None:
    s = _session()
    for message_, sqlstate in (
        (_bind("", "someone_elses") + _execute() + SYNC, "26000"),
        (_execute("their_cursor") + SYNC, "34000"),
        (codec.encode_query("FETCH 10 FROM their_cursor"), "34000"),
        (codec.encode_query("EXECUTE their_statement"), "26000"),
    ):
        step = s.client_data(message_)
        assert all(e.status == "refused" for e in step.write_ahead) and step.write_ahead
        answer = s.server_data(_probe_error(s) + codec.encode_ready("I"))
        assert _error_of(answer)["C"] == sqlstate


def test_execute_and_fetch_record_the_real_statement() -> None:
    s = _session(Policy(pool_mode="session"))
    s.client_data(codec.encode_query("PREPARE p AS SELECT email FROM customers WHERE id = $1"))
    s.server_data(_done("PREPARE"))
    step = s.client_data(codec.encode_query("EXECUTE p(42)"))
    (event,) = step.write_ahead
    assert "FROM customers" in (event.statement or "") and event.detail == "EXECUTE p(42)"
    s.server_data(_done("SELECT 1"))
    step = s.client_data(
        codec.encode_query("BEGIN; DECLARE c CURSOR FOR SELECT email FROM customers; FETCH 5 c")
    )
    fetch = step.write_ahead[-1]
    assert "FROM customers" in (fetch.statement or "") and fetch.detail == "FETCH 5 c"


def test_behind_transaction_pooling_sql_names_last_one_transaction() -> None:
    s = _session()  # pool_mode = "transaction"
    step = s.client_data(codec.encode_query("PREPARE p AS SELECT 1; EXECUTE p"))
    assert [e.statement for e in step.write_ahead] == ["PREPARE p AS SELECT 1", "SELECT 1"]
    s.server_data(message(b"C", b"PREPARE\x00") + _done("SELECT 1"))
    s.client_data(codec.encode_query("EXECUTE p"))  # next transaction: any server connection
    answer = s.server_data(_probe_error(s) + codec.encode_ready("I"))
    assert _error_of(answer)["C"] == "26000"


def test_a_set_in_a_rolled_back_transaction_does_not_last() -> None:
    s = _session(options="")
    s.client_data(codec.encode_query("BEGIN; SET scalple.user = 'mallory'"))
    s.server_data(message(b"C", b"BEGIN\x00") + _done("SET", "T"))
    s.client_data(codec.encode_query("ROLLBACK"))
    s.server_data(_done("ROLLBACK"))
    step = s.client_data(codec.encode_query("SELECT 1"))
    assert step.write_ahead[0].actor is None


def test_set_local_after_a_savepoint_ends_at_rollback_to() -> None:
    s = _session()
    s.client_data(codec.encode_query("BEGIN; SAVEPOINT a; SET LOCAL scalple.user = 'bob'"))
    s.server_data(message(b"C", b"BEGIN\x00") + message(b"C", b"SAVEPOINT\x00") + _done("SET", "T"))
    step = s.client_data(codec.encode_query("ROLLBACK TO a; SELECT 1"))
    assert [e.actor for e in step.write_ahead] == ["bob", "alice"]  # bob until it runs


def test_a_set_after_an_error_in_the_same_message_never_takes_effect() -> None:
    s = _session()
    step = s.client_data(codec.encode_query("SELECT 1/0; SET scalple.user = 'mallory'"))
    assert [e.actor for e in step.write_ahead] == ["alice", "mallory"]  # as it would run
    s.server_data(codec.encode_error("22012", "division by zero") + codec.encode_ready("I"))
    step = s.client_data(codec.encode_query("SELECT 2"))
    assert step.write_ahead[0].actor == "alice"


def test_a_set_rejected_in_an_aborted_transaction_never_takes_effect() -> None:
    s = _session()
    s.client_data(codec.encode_query("BEGIN"))
    s.server_data(_done("BEGIN", "T"))
    s.client_data(codec.encode_query("SELECT 1/0"))
    s.server_data(codec.encode_error("22012", "division by zero") + codec.encode_ready("E"))
    s.client_data(codec.encode_query("SET scalple.user = 'mallory'"))
    s.server_data(codec.encode_error("25P02", "aborted") + codec.encode_ready("E"))
    s.client_data(codec.encode_query("ROLLBACK"))
    s.server_data(_done("ROLLBACK"))
    assert s.client_data(codec.encode_query("SELECT 2")).write_ahead[0].actor == "alice"


def test_standard_conforming_strings_off_is_read_as_the_server_reads_it() -> None:
    s = _session(options="-c scalple.user=alice -c standard_conforming_strings=off")
    s.server_data(message(b"S", b"standard_conforming_strings\x00off\x00"))  # the server confirms
    step = s.client_data(codec.encode_query("SELECT 'a\\'; UPDATE t SET x = 1; --'"))
    (event,) = step.write_ahead  # one statement: the UPDATE is inside the string
    assert event.statement is not None and "UPDATE" not in _sent(step)[0].split("'")[0]


def test_comment_like_text_in_a_dollar_quote_claims_nothing() -> None:
    s = _session(Policy(require_identity=True), options="")
    step = s.client_data(codec.encode_query("SELECT $q$ /*user='mallory'*/ $q$"))
    assert step.write_ahead[0].status == "refused"


def test_the_identity_never_reaches_the_upstream_by_another_spelling() -> None:
    s = _session()
    for sql in (
        "SELECT set_config('scalple.user', 'eve', false)",
        "SELECT set_config('scalple' || '.user', 'eve', false)",
        "ALTER ROLE app_user SET scalple.\"user\" = 'eve'",
    ):
        step = s.client_data(codec.encode_query(sql))
        assert _sent(step) == [s._probe], sql
        s.server_data(_probe_error(s) + codec.encode_ready("I"))
    step = s.client_data(codec.encode_query("SET \"scalple.user\" = 'eve'"))
    assert "eve" not in _sent(step)[0] and step.write_ahead[0].actor == "eve"
    s.server_data(_done("SET"))
    s.client_data(codec.encode_parse("g", "SELECT set_config($1, $2, false)") + SYNC)
    s.server_data(PARSE_OK + codec.encode_ready("I"))
    step = s.client_data(_bind("", "g", (b"Scalple.User", b"eve")) + _execute() + SYNC)
    assert all(b"eve" not in piece for piece in step.upstream)


def test_a_function_call_refusal_ends_with_ready_for_query() -> None:
    s = _session(Policy(require_identity=True), options="")
    step = s.client_data(message(b"F", b"\x00\x00\x04\xd2" + b"\x00\x00\x00\x00\x00\x00"))
    assert _sent(step) == [s._probe]  # a Query: the server answers it with ReadyForQuery
    answer = s.server_data(_probe_error(s) + codec.encode_ready("I"))
    assert _error_of(answer)["C"] == "28000"
    assert answer.client[-1] == codec.encode_ready("I")


def test_behind_transaction_pooling_a_prepared_statement_is_parsed_again_where_it_runs() -> None:
    s = _session()
    step = s.client_data(codec.encode_parse("_pg3_0", "SELECT $1::int") + SYNC)
    (server_name,) = [q.split(":")[1] for q in _sent(step)]
    assert server_name.startswith("scalple_")  # no other client's _pg3_0 can be it
    s.server_data(PARSE_OK + codec.encode_ready("I"))
    # A new transaction: PgBouncer may hand it another server connection.
    step = s.client_data(_bind("", "_pg3_0", (b"7",)) + _execute() + SYNC)
    assert _sent(step) == [f"P:{server_name}:SELECT $1::int"]
    assert step.upstream[0][:1] == b"C"  # closed first: on the same connection, it exists
    answer = s.server_data(CLOSE_OK + PARSE_OK + BIND_OK + ROW + _done("SELECT 1"))
    assert b"".join(answer.client).startswith(BIND_OK)  # the client sees none of it
    assert answer.records[0].status == "ok"
    step = s.client_data(_bind("", "_pg3_0", (b"8",)) + _execute() + SYNC)
    assert len(_sent(step)) == 1  # next transaction again


def test_text_not_in_the_clients_encoding_is_refused_and_the_connection_goes_on() -> None:
    s = _session()
    step = s.client_data(message(b"Q", b"SELECT '\xff\xfe'\x00"))  # not UTF-8
    assert _sent(step) == [s._probe] and step.write_ahead[0].status == "refused"
    answer = s.server_data(_probe_error(s) + codec.encode_ready("I"))
    assert _error_of(answer)["C"] == "22021" and not answer.close
    assert s.client_data(codec.encode_query("SELECT 1")).write_ahead[0].status == "pending"


def test_an_error_on_a_finished_portal_is_not_the_next_statements() -> None:
    # PostgreSQL: a second Execute of a DELETE's portal fails (55000) after the DELETE ran;
    # the Bind and Execute after it in the same batch never run.
    s = _session()
    step = s.client_data(
        codec.encode_parse("s2", "DELETE FROM o WHERE id = 7") + _bind("", "s2") + _execute("", 1)
        + _execute("", 0) + _bind("", "s2") + _execute("", 0) + SYNC
    )  # fmt: skip
    first, second = step.write_ahead
    answer = s.server_data(
        PARSE_OK + BIND_OK + message(b"C", b"DELETE 3\x00")
        + codec.encode_error("55000", 'portal "" cannot be run') + codec.encode_ready("I")
    )  # fmt: skip
    by_id = {e.event_id: (e.status, e.sqlstate) for e in answer.records}
    assert by_id == {first.event_id: ("ok", None), second.event_id: ("skipped", "55000")}


def test_an_error_planning_a_statement_at_its_bind_is_its_error() -> None:
    # `1/$1` with 0 bound is folded while planning, at Bind: the statement failed, it was not
    # skipped; the statement after it in the batch was.
    s = _session()
    describe = message(b"D", b"P\x00")
    step = s.client_data(
        codec.encode_parse("", "SELECT 1/$1") + _bind("", "", (b"0",)) + describe + _execute()
        + codec.encode_parse("", "SELECT 2") + _bind() + describe + _execute() + SYNC
    )  # fmt: skip
    bad, later = step.write_ahead
    answer = s.server_data(
        PARSE_OK + codec.encode_error("22012", "division by zero") + codec.encode_ready("I")
    )
    by_id = {e.event_id: (e.status, e.sqlstate) for e in answer.records}
    assert by_id == {bad.event_id: ("error", "22012"), later.event_id: ("skipped", None)}
