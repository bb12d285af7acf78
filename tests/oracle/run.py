"""Drive generated scenarios through `scalple serve` into PostgreSQL, then judge them.

Two proxies share one config (require_identity, trusted_roles = ["app_user"]): one in front of
PgBouncer (transaction pooling, as deployed) and one straight in front of PostgreSQL, where a
client owns its server connection and shadow.actor can speak for PostgreSQL's identity rules.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from scalple.ledger.query import events_view
from scalple.sandbox import Sandbox
from tests import wire
from tests.oracle import audit, check, schema
from tests.oracle.gen import Mode, Scenario
from tests.proxyproc import Event, ProxyProc, statements

MODES: tuple[Mode, ...] = ("direct", "bouncer")


@dataclass
class Rig:
    """The sandbox's PostgreSQL and PgBouncer, the oracle database, and one proxy per mode."""

    sandbox: Sandbox
    work: Path
    proxies: dict[str, ProxyProc] = field(default_factory=dict)
    runs: int = 0

    @classmethod
    def start(cls, sandbox: Sandbox, work: Path, modes: Sequence[Mode] = MODES) -> Rig:
        schema.create(sandbox)
        work.mkdir(parents=True, exist_ok=True)
        config = work / "scalple.toml"
        config.write_text(schema.proxy_config(sandbox))
        rig = cls(sandbox, work)
        for mode in modes:
            upstream = sandbox.pg_port if mode == "direct" else sandbox.bouncer_port
            proxy = ProxyProc(upstream, work / mode / "ledger", ("--config", str(config)))
            rig.proxies[mode] = proxy.start()
        return rig

    def stop(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()

    def tag(self) -> str:
        """A prefix for application names no earlier run of this rig used."""
        self.runs += 1
        return f"o{self.runs}"


@dataclass
class Outcome:
    """A run's report, and what it was judged from (to judge again, or doctored)."""

    report: check.Report
    runs: list[check.ClientRun]
    scenarios: dict[int, Scenario]
    sqlstates: Counter[str]
    seconds: float
    units: list[audit.Unit] = field(default_factory=list)
    marks: list[audit.Mark] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    pii: dict[int, set[str]] = field(default_factory=dict)

    def judge(
        self, events: Sequence[Event] | None = None, apps: set[str] | None = None
    ) -> check.Report:
        """Judge again: against `events` in place of the ledger's if given, and only the clients
        named in `apps` if given."""
        chosen = self.events if events is None else events
        runs = [r for r in self.runs if apps is None or r.app in apps]
        units = [u for u in self.units if apps is None or u.app in apps]
        return check.check(runs, units, self.marks, chosen, self.pii)


def drive(
    scn: Scenario, mode: Mode, port: int, tag: str, sqlstates: Counter[str], timeout: float = 5.0
) -> list[check.ClientRun]:
    """Connect every client, then send each step and read it to its last ReadyForQuery."""
    wires: dict[int, wire.Wire] = {}
    lost: dict[int, str] = {}
    apps = {i: f"{tag}-{scn.index}-{i}-{mode}" for i in range(len(scn.clients))}
    for i, client in enumerate(scn.clients):
        params = client.startup(mode, apps[i])
        try:
            wires[i] = wire.Wire.connect(
                port, client.role(mode), schema.DATABASE, params=params, timeout=timeout
            )
        except (wire.WireError, OSError) as exc:
            lost[i] = f"at startup: {exc}"
    scs = {i: w.parameters.get("standard_conforming_strings") != "off" for i, w in wires.items()}
    for step in scn.steps:
        w = wires.get(step.client)
        if w is None:
            continue
        try:
            replies = w.roundtrip(*(op.encode(w.encoding) for op in step.ops))
        except wire.WireError as exc:
            replies = exc.received
            lost[step.client] = str(exc)
            w.sock.close()
            del wires[step.client]
        sqlstates.update(e.sqlstate for e in wire.errors(replies))
        scs[step.client] = w.parameters.get("standard_conforming_strings") != "off"
    for w in wires.values():
        w.close()
    return [
        check.ClientRun(
            scn.index, i, mode, apps[i], c.profile, c.profile != "untrusted",
            scs.get(i, True), lost.get(i),
        )
        for i, c in enumerate(scn.clients)
    ]  # fmt: skip


def _read(ledger: Path, apps: list[str]) -> list[Event]:
    """Statement and outcome records of the given clients (application names)."""
    con = duckdb.connect()
    try:
        events_view(con, ledger)
        cur = con.execute(
            "SELECT * FROM events WHERE event_id IN (SELECT event_id FROM events "
            "WHERE list_contains(?, application_name)) ORDER BY seq",
            [apps],
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def ledger(
    rig: Rig, apps: set[str], modes: Sequence[Mode] = MODES, settle: float = 5.0
) -> list[Event]:
    """The clients' statements merged with their outcomes, once the ledger stops growing
    (an outcome is written after the answer is relayed)."""
    deadline = time.monotonic() + settle
    names = sorted(apps)
    seen = -1
    while True:
        events = [ev for m in modes for ev in _read(rig.proxies[m].ledger, names)]
        if len(events) == seen or time.monotonic() > deadline:
            return statements(events)
        seen = len(events)
        time.sleep(0.1)


def run(rig: Rig, scenarios: Iterable[Scenario], modes: Sequence[Mode] = MODES) -> Outcome:
    """Drive every scenario in every mode, then judge them all against pgAudit's log."""
    started = time.monotonic()
    tag = rig.tag()
    offset = rig.sandbox.pg_log.stat().st_size
    scns = {s.index: s for s in scenarios}
    runs: list[check.ClientRun] = []
    sqlstates: Counter[str] = Counter()
    for scn in scns.values():
        for mode in modes:
            runs += drive(scn, mode, rig.proxies[mode].port, tag, sqlstates)
    events = ledger(rig, {r.app for r in runs}, modes)
    lines = audit.audit_lines(audit.read_log(rig.sandbox.pg_log, offset), schema.DATABASE)
    pii = {i: s.pii | set(schema.SEED_PII) for i, s in scns.items()}
    units, marks = audit.units(lines)
    out = Outcome(check.Report(), runs, scns, sqlstates, 0.0, units, marks, events, pii)
    out.report = out.judge()
    out.report.counts["sequences"] += len(scns)
    out.report.counts["sequence runs"] += len(scns) * len(modes)
    out.seconds = time.monotonic() - started
    return out
