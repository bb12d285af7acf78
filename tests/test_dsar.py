"""`scalple dsar` and `scalple index` over real ledgers written by the ledger's own sink."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scalple.analysis.subjects import subject_hash
from scalple.dsar.export import check_export
from scalple.dsar.index import open_index, update_index
from scalple.dsar.run import parse_time
from scalple.events import AuditEvent
from scalple.ledger import open_sink
from scalple.ledger.keys import load_public_key, subject_secret
from scalple.ledger.layout import Layout
from scalple.ledger.writer import LedgerSink
from tests.cli import run

T0 = 1_735_689_600_000_000  # 2025-01-01
CONFIG = """
[ledger]
ledger = "{ledger}"
key_dir = "{keys}"

[analysis]
subject_columns = {{ "customers.id" = "customer", "orders.customer_id" = "customer", \
"customers.email" = "email" }}
"""


class Ledger:
    """A ledger written through `LedgerSink`, with the config and secret a dsar needs."""

    def __init__(self, tmp: Path) -> None:
        self.root, self.keys, self.config = tmp / "ledger", tmp / "keys", tmp / "scalple.toml"
        self.config.write_text(CONFIG.format(ledger=self.root, keys=self.keys))
        self.secret = subject_secret(self.keys)
        self.sink: LedgerSink | None = None
        self.n = 0

    def open(self, *, derived: bool = False) -> LedgerSink:
        """The sink; `derived` as the proxy runs it (indexing each seal), else the index is
        left to the test."""
        self.sink = open_sink(
            self.root, "os", key_dir=str(self.keys), seal_bytes=1 << 40, derived=derived
        )
        self.derived = derived
        return self.sink

    def customer(self, i: int) -> str:
        return subject_hash(self.secret, "customer", str(i))

    def email(self, i: int) -> str:
        return subject_hash(self.secret, "email", f"c{i}@example.com")

    def statement(
        self, *, actor: str = "alice@corp.example", where: tuple[str, ...] = (), sql: str = "",
        cls: str = "READ",
    ) -> AuditEvent:  # fmt: skip
        self.n += 1
        return AuditEvent(
            kind="statement",
            event_id=f"{self.n:032x}",
            ts_start=T0 + self.n * 3_600_000_000,
            actor=actor,
            identity_source="proxy_auth",
            client_addr="10.2.0.7",
            application_name="psql",
            statement=sql or "SELECT * FROM customers WHERE id = $1",
            audit_class=cls,  # type: ignore[arg-type]
            tables=("public.customers",),
            columns=("public.customers.id", "public.customers.email"),
            subjects=where,
        )

    def outcome(
        self, st: AuditEvent, *, rows: int = 1, seen: tuple[str, ...] = (), status: str = "ok"
    ) -> AuditEvent:
        return AuditEvent(
            kind="outcome",
            event_id=st.event_id,
            ts_start=st.ts_start,
            ts_end=st.ts_start + 500,
            duration_us=500,
            rows=rows,
            status=status,  # type: ignore[arg-type]
            sqlstate="42501" if status == "error" else None,
            subjects=seen,
        )

    def write(self, *events: AuditEvent) -> None:
        assert self.sink is not None
        self.sink.append_sync(list(events))

    def seal(self) -> None:
        """Seal the live journal now, as the sink does when it is full, and wait for it."""
        assert self.sink is not None
        self.sink.close()
        self.open(derived=self.derived)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path)
    led.open()
    yield led
    if led.sink is not None:
        led.sink.close()


def dsar_json(capsys: pytest.CaptureFixture[str], led: Ledger, *args: str) -> dict[str, object]:
    code, out, err = run(capsys, "dsar", "-c", str(led.config), "--json", *args)
    assert code == 0, out + err
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


def ids(answer: dict[str, object]) -> list[str]:
    accesses = answer["accesses"]
    assert isinstance(accesses, list)
    return [a["event_id"] for a in accesses]


def touch_everywhere(led: Ledger, who: int) -> dict[str, str]:
    """The subject `who` touched by a literal, a parameter, a result row, a COPY and a bulk read,
    spread over sealed segments, a statement/outcome pair split by a seal, and the live journal."""
    other = led.customer(who + 1)
    found: dict[str, str] = {}
    literal = led.statement(
        where=(led.customer(who),), sql="SELECT * FROM customers WHERE id = ***"
    )
    led.write(literal, led.outcome(literal, seen=(led.customer(who),)))
    found["literal"] = literal.event_id
    noise = led.statement(where=(other,))
    led.write(noise, led.outcome(noise, seen=(other,)))
    led.seal()
    param = led.statement(where=(led.email(who),), sql="SELECT id FROM customers WHERE email = $1")
    led.write(param)
    found["param"] = param.event_id
    led.seal()  # its outcome lands in the next segment
    led.write(led.outcome(param, seen=(led.customer(who),)))
    result = led.statement(sql="SELECT * FROM customers WHERE signup > '***'")
    led.write(result, led.outcome(result, seen=(led.customer(who),)))
    found["result"] = result.event_id
    led.seal()
    copy = led.statement(actor="bob@corp.example", sql="COPY customers TO STDOUT")
    led.write(copy)
    found["copy"] = copy.event_id
    bulk = led.statement(actor="bob@corp.example", sql="SELECT * FROM customers")
    crowd = (*tuple(led.customer(i) for i in range(1000, 1400)), led.customer(who))
    led.write(bulk, led.outcome(bulk, rows=401, seen=crowd))
    found["bulk"] = bulk.event_id
    led.seal()
    led.write(led.outcome(copy, rows=2000, seen=(other, led.customer(who))))  # live journal
    return found


def test_subject_found_by_literal_param_result_copy_and_bulk(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    want = touch_everywhere(ledger, 42)
    answer = dsar_json(capsys, ledger, "--subject", "customers.id=42")
    got = ids(answer)
    assert sorted(got) == sorted(want.values())
    by_id = {a["event_id"]: a for a in answer["accesses"]}  # type: ignore[union-attr]
    assert all(len(a["proof"]) == 2 for a in by_id.values())  # statement and outcome, always
    assert by_id[want["literal"]]["seen_in"] == ["statement", "result"]
    assert by_id[want["copy"]]["seen_in"] == ["result"]
    assert by_id[want["copy"]]["rows"] == 2000  # outcome from the live journal merged in
    assert by_id[want["param"]]["status"] == "ok"  # outcome from the next segment merged in
    ts = [a["ts"] for a in answer["accesses"]]  # type: ignore[union-attr]
    assert ts == sorted(ts, reverse=True)
    ledger_range = answer["ledger"]
    assert isinstance(ledger_range, dict) and ledger_range["journal_events"] == 1
    assert answer["verification"]["result"] == "intact"  # type: ignore[index]


def test_any_identifier_of_the_same_kind_finds_the_person(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    want = touch_everywhere(ledger, 42)
    via_orders = ids(dsar_json(capsys, ledger, "--subject", "orders.customer_id=042"))
    by_email = ids(dsar_json(capsys, ledger, "--subject", "customers.email=C42@Example.com"))
    both = ids(
        dsar_json(
            capsys, ledger, "--subject", "customers.id=42", "-s", "customers.email=c42@example.com"
        )
    )
    assert sorted(via_orders) == sorted(want.values())
    assert by_email == [want["param"]]
    assert sorted(both) == sorted(want.values())


def test_index_gives_the_same_answer_as_reading_everything(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    want = touch_everywhere(ledger, 7)
    unindexed = ids(dsar_json(capsys, ledger, "--subject", "customers.id=7"))
    code, out, _ = run(capsys, "index", "rebuild", "-c", str(ledger.config), "--json")
    assert code == 0 and json.loads(out)["segments"] == 4
    indexed = ids(dsar_json(capsys, ledger, "--subject", "customers.id=7"))
    more = ledger.statement(where=(ledger.customer(7),))
    ledger.write(more, ledger.outcome(more))
    ledger.seal()  # a segment the index does not cover yet
    partly = ids(dsar_json(capsys, ledger, "--subject", "customers.id=7"))
    update_index(ledger.root)
    updated = ids(dsar_json(capsys, ledger, "--subject", "customers.id=7"))
    assert sorted(unindexed) == sorted(indexed) == sorted(want.values())
    assert sorted(partly) == sorted(updated) == sorted([*want.values(), more.event_id])
    assert open_index(ledger.root).upto == Layout(ledger.root).segments()[-1].last_seq


def test_the_sink_indexes_each_seal_in_a_few_runs_that_answer_as_a_rebuild_does(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ledger.sink is not None
    ledger.sink.close()
    ledger.open(derived=True)  # as `scalple serve` runs it
    want = touch_everywhere(ledger, 7)
    for i in range(9):
        st = ledger.statement(where=(ledger.customer(7 if i % 3 == 0 else 100 + i),))
        ledger.write(st, ledger.outcome(st))
        if i % 3 == 0:
            want[f"more{i}"] = st.event_id
        ledger.seal()
    state = open_index(ledger.root)
    assert state.upto == Layout(ledger.root).segments()[-1].last_seq  # nothing left to scan
    assert len(state.runs) <= 4, [p.name for p in state.runs]  # 13 seals: a binary counter
    followed = ids(dsar_json(capsys, ledger, "--subject", "customers.id=7"))
    code, out, _ = run(capsys, "index", "rebuild", "-c", str(ledger.config), "--json")
    assert code == 0 and json.loads(out)["runs"] == 1
    rebuilt = ids(dsar_json(capsys, ledger, "--subject", "customers.id=7"))
    assert sorted(followed) == sorted(rebuilt) == sorted(want.values())


def test_index_links_a_statement_to_an_outcome_sealed_later(ledger: Ledger) -> None:
    st = ledger.statement(where=(ledger.customer(5),))
    ledger.write(st)
    ledger.seal()
    update_index(ledger.root)
    assert [p.event_id for p in open_index(ledger.root).manifest.pending] == [st.event_id]
    ledger.write(ledger.outcome(st, seen=(ledger.customer(6),)))
    ledger.seal()
    update_index(ledger.root)
    assert open_index(ledger.root).manifest.pending == []


def test_subject_never_touched_gives_an_empty_well_formed_answer(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    touch_everywhere(ledger, 42)
    answer = dsar_json(capsys, ledger, "--subject", "customers.id=999999")
    assert answer["count"] == 0 and answer["accesses"] == []
    assert answer["ledger"]["last_seq"] > 0  # type: ignore[index]
    code, out, _ = run(capsys, "dsar", "-c", str(ledger.config), "-s", "customers.id=999999")
    assert code == 0 and "no accesses found" in out
    code, out, _ = run(
        capsys, "dsar", "-c", str(ledger.config), "-s", "customers.id=5", "-f", "csv"
    )
    assert code == 0 and out.splitlines()[0].startswith("ts,event_id,seq,actor")


def test_unknown_subject_column_is_a_clear_error(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "dsar", "-c", str(ledger.config), "-s", "customers.phone=1")
    assert code == 2
    assert "customers.phone is not a subject column" in err and "Traceback" not in err + out
    code, out, _ = run(capsys, "dsar", "-c", str(ledger.config), "--json", "-s", "users.x=1")
    assert code == 2 and json.loads(out)["result"] == "error"


def test_the_value_asked_about_is_written_nowhere(
    ledger: Ledger, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    touch_everywhere(ledger, 42)
    update_index(ledger.root)
    report = tmp_path / "report.html"
    code, _, _ = run(
        capsys, "dsar", "-c", str(ledger.config), "-s", "customers.email=c42@example.com",
        "-f", "html", "-o", str(report),
    )  # fmt: skip
    assert code == 0
    for path in [report, *ledger.root.rglob("*")]:
        if path.is_file():
            assert b"c42@example.com" not in path.read_bytes(), path


def _tamper(path: Path) -> None:
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_ledger_failing_verification_gets_no_answer(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    touch_everywhere(ledger, 42)
    dsar_json(capsys, ledger, "-s", "customers.id=42")  # verified once: remembered as unchanged
    segment = Layout(ledger.root).segments()[1].parquet
    time.sleep(0.01)
    _tamper(segment)
    code, out, err = run(capsys, "dsar", "-c", str(ledger.config), "-s", "customers.id=42")
    assert code == 1
    flat = "".join(err.split())
    assert "failsverification" in flat and segment.name in flat and not out
    code, out, _ = run(capsys, "dsar", "-c", str(ledger.config), "--actor", "bob@corp.example",
                       "--json")  # fmt: skip
    assert code == 1 and json.loads(out)["result"] == "error"


def test_a_forged_checkpoint_is_caught(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    touch_everywhere(ledger, 42)
    cp = Layout(ledger.root).segments()[0].checkpoint
    os.chmod(cp, stat.S_IRUSR | stat.S_IWUSR)
    cp.write_bytes(cp.read_bytes().replace(b'"events":', b'"events":1'))
    code, _, err = run(capsys, "dsar", "-c", str(ledger.config), "-s", "customers.id=42")
    assert code == 1 and cp.name in err


def test_html_report_is_self_contained_and_checks_out(
    ledger: Ledger, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    want = touch_everywhere(ledger, 42)
    report = tmp_path / "report.html"
    code, _, _ = run(capsys, "dsar", "-c", str(ledger.config), "-s", "customers.id=42",
                     "-f", "html", "-o", str(report))  # fmt: skip
    assert code == 0
    text = report.read_text()
    assert "<svg" in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert all(event_id in text for event_id in want.values())
    key = load_public_key(ledger.keys / "signing.pub")
    alone = check_export(report, key)
    assert alone.ok, alone.problems
    assert alone.records == 10 and alone.unsealed == 1  # the COPY's outcome is in the journal
    with_ledger = check_export(report, key, ledger.root)
    assert with_ledger.ok and with_ledger.against_ledger, with_ledger.problems
    forged = tmp_path / "forged.html"
    forged.write_text(text.replace('"rows":401', '"rows":4'))
    assert not check_export(forged, key).ok
    other_key = "00" * 32
    assert not check_export(report, other_key).ok
    # The same through the command a third party runs.
    pub = str(ledger.keys / "signing.pub")
    code, out, _ = run(capsys, "verify", "--export", str(report), "--public-key", pub)
    assert code == 0 and "export checks out" in out
    code, _, err = run(capsys, "verify", "--export", str(forged), "--public-key", pub)
    assert code == 1 and "does not check out" in " ".join(err.split())


def test_actor_view(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    touch_everywhere(ledger, 42)
    failed = ledger.statement(actor="bob@corp.example", where=(ledger.customer(3),))
    ledger.write(failed, ledger.outcome(failed, rows=0, status="error"))
    answer = dsar_json(capsys, ledger, "--actor", "bob@corp.example", "--limit", "10")
    assert answer["statements_total"] == 3
    assert [b["event_id"] for b in answer["bulk_reads"]] == [  # type: ignore[union-attr]
        want for want in ids({"accesses": answer["statements"]}) if want != failed.event_id
    ]
    assert [e["event_id"] for e in answer["errors"]] == [failed.event_id]  # type: ignore[union-attr]
    days = answer["days"]
    assert isinstance(days, list) and sum(d["statements"] for d in days) == 3
    assert sum(d["distinct_subjects"] for d in days) == 403  # 400 crowd + 42 + 43 + 3
    code, out, _ = run(capsys, "dsar", "-c", str(ledger.config), "--actor", "bob@corp.example")
    assert code == 0 and "Bulk reads" in out
    ledger.seal()
    update_index(ledger.root)  # now the access rows of the index answer, not the segments
    indexed = dsar_json(capsys, ledger, "--actor", "bob@corp.example", "--limit", "10")
    for part in ("statements_total", "days", "tables", "bulk_reads", "errors", "statements"):
        assert indexed[part] == answer[part], part


def test_since_and_until(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    want = touch_everywhere(ledger, 42)
    early = ids(dsar_json(capsys, ledger, "-s", "customers.id=42", "--until", "2025-01-01T04:00"))
    late = ids(dsar_json(capsys, ledger, "-s", "customers.id=42", "--since", "2025-01-01T04:00"))
    assert sorted(early + late) == sorted(want.values()) and early and late


def test_parse_time() -> None:
    now = 1_750_000_000.0
    assert parse_time("30d", now=now) == int((now - 30 * 86400) * 1e6)
    assert parse_time("6mo", now=now) == int((now - 180 * 86400) * 1e6)
    assert parse_time("2025-01-01") == T0
    assert parse_time("2025-01-01", end=True) == T0 + 86_400_000_000
    with pytest.raises(Exception, match="cannot read"):
        parse_time("last tuesday")
