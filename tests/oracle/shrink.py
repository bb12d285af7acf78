"""Minimal reproductions: shrink a failing scenario while the same kind of mismatch remains,
then write it out as code over tests/wire.py, ready to become a regression test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TypeVar

from tests.oracle import check, sqltext
from tests.oracle.gen import Mode, Op, Scenario, Step
from tests.oracle.run import Rig, run


def reproduces(rig: Rig, scn: Scenario, mode: Mode, klass: str) -> check.Mismatch | None:
    out = run(rig, [scn], modes=(mode,))
    return next((m for m in out.report.mismatches if m.klass == klass), None)


T = TypeVar("T")


def _reduce(items: list[T], fails: Callable[[list[T]], bool], deadline: float) -> list[T]:
    """Delta debugging, complements only: drop chunks (halves, quarters, ... single items)
    while `fails` still holds for what is left."""
    size = max(len(items) // 2, 1)
    while items and time.monotonic() < deadline:
        i, dropped = 0, False
        while i < len(items) and time.monotonic() < deadline:
            rest = items[:i] + items[i + size :]
            if rest != items and fails(rest):
                items, dropped = rest, True
            else:
                i += size
        if size == 1 and not dropped:
            break
        size = max(size // 2, 1)
    return items


def _queries(step: Step, scs: bool) -> Iterator[tuple[int, list[str]]]:
    for j, op in enumerate(step.ops):
        if op.kind == "Q":
            try:
                parts = sqltext.split(str(op.args[0]), scs)
            except sqltext.LexError:
                continue
            if len(parts) > 1:
                yield j, parts


def _drop_idle_clients(scn: Scenario) -> Scenario:
    used = sorted({s.client for s in scn.steps})
    renumber = {old: new for new, old in enumerate(used)}
    clients = tuple(scn.clients[c] for c in used)
    steps = tuple(Step(renumber[s.client], s.ops) for s in scn.steps)
    return replace(scn, clients=clients, steps=steps)


def _ops(step: Step) -> list[tuple[Op, ...]]:
    """A step's messages but the last, a claim pair's as one item."""
    items: list[tuple[Op, ...]] = []
    for op in step.ops[:-1]:
        if op.pair and items and items[-1][-1].pair == op.pair:
            items[-1] += (op,)
        else:
            items.append((op,))
    return items


def _statements(parts: list[str]) -> list[tuple[str, ...]]:
    """A Query's statements, a claim and the shadow right after it as one item."""
    items: list[tuple[str, ...]] = []
    for part in parts:
        if "shadow" in part.lower() and items and "scalple" in items[-1][-1].lower():
            items[-1] += (part,)
        else:
            items.append((part,))
    return items


def shrink(scn: Scenario, fails: Callable[[Scenario], bool], seconds: float = 60.0) -> Scenario:
    """The smallest scenario found within `seconds` for which `fails` still holds: fewer steps,
    then fewer messages per step (each keeps the Query or Sync that ends it), then fewer
    statements per Query; a claim and its shadow go together."""
    deadline = time.monotonic() + seconds

    def with_steps(steps: list[Step]) -> Scenario:
        return replace(scn, steps=tuple(steps))

    scn = with_steps(_reduce(list(scn.steps), lambda st: fails(with_steps(st)), deadline))
    for i in range(len(scn.steps)):
        scn = _shrink_step(scn, i, fails, deadline)
    smaller = _drop_idle_clients(scn)
    return smaller if fails(smaller) else scn


def _shrink_step(
    scn: Scenario, i: int, fails: Callable[[Scenario], bool], deadline: float
) -> Scenario:
    step = scn.steps[i]

    def with_ops(items: list[tuple[Op, ...]]) -> Scenario:
        ops = tuple(op for item in items for op in item)
        return _with_step(scn, i, Step(step.client, (*ops, step.ops[-1])))

    scn = with_ops(_reduce(_ops(step), lambda o: fails(with_ops(o)), deadline))
    scs = scn.clients[step.client].scs is not False
    for j, parts in list(_queries(scn.steps[i], scs)):
        base = scn

        def with_text(items: list[tuple[str, ...]], j: int = j, base: Scenario = base) -> Scenario:
            st = base.steps[i]
            new = Op("Q", ("; ".join(p for item in items for p in item),))
            return _with_step(base, i, Step(st.client, (*st.ops[:j], new, *st.ops[j + 1 :])))

        kept = _reduce(_statements(parts), lambda p: bool(p) and fails(with_text(p)), deadline)
        scn = with_text(kept)
    return scn


def _with_step(scn: Scenario, i: int, step: Step) -> Scenario:
    steps = list(scn.steps)
    steps[i] = step
    return replace(scn, steps=tuple(steps))


def render(scn: Scenario, mode: Mode, mismatch: check.Mismatch) -> str:
    """The scenario as Python over tests/wire.py (`port` is the proxy's)."""
    lines = [
        f"# {mismatch.klass} ({mode}): {check.CLASSES[mismatch.klass]}",
        f"#   {mismatch.detail}",
    ]
    for i, client in enumerate(scn.clients):
        params = client.startup(mode, f"repro-{i}")
        role = client.role(mode)
        lines.append(f"c{i} = wire.Wire.connect(port, {role!r}, 'oracle', params={params!r})")
    for step in scn.steps:
        calls = ", ".join(op.code() for op in step.ops)
        lines.append(f"c{step.client}.roundtrip({calls})")
    return "\n".join(lines)
