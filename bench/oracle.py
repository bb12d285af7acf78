"""The differential oracle of issue 10, run long: generated message sequences through
`scalple serve` (in front of PgBouncer, and straight in front of PostgreSQL) against what pgAudit
says PostgreSQL ran. Prints sequences tried, statements compared and mismatches by class;
--show N prints examples, --shrink a minimal reproduction of each class as tests/wire.py code.

    python bench/oracle.py [--seed 1] [--count 200] [--start 0] [--modes direct,bouncer]
                           [--show 2] [--shrink] [--shrink-seconds 60]

The rules that match pgAudit's log to the ledger are in tests/oracle/check.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scalple.sandbox import running
from tests.oracle import check
from tests.oracle.gen import Mode, Scenario, scenario
from tests.oracle.run import MODES, Outcome, Rig, run
from tests.oracle.shrink import render, reproduces, shrink

FIGURES = (
    "sequences",
    "sequence runs",
    "clients",
    "clients lost",
    "statements run",
    "statements bound, never run",
    "statements compared",
    "tables compared",
    "actors compared",
)


def summary(out: Outcome, seed: int) -> str:
    c = out.report.counts
    lines = [f"oracle: seed {seed}, {out.seconds:.1f} s"]
    lines += [f"  {name:<30} {c[name]:>7}" for name in FIGURES]
    lines.append("mismatches by class:")
    for klass, found in out.report.by_class().items():
        by_mode = ", ".join(
            f"{mode} {n}" for mode in MODES if (n := sum(m.mode == mode for m in found))
        )
        lines.append(
            f"  {klass:<18} {len(found):>5}  {check.CLASSES[klass]}"
            + (f" ({by_mode})" if by_mode else "")
        )
    lost = [r for r in out.runs if r.lost]
    if lost:
        lines.append("connections lost:")
        for reason in sorted({r.lost or "" for r in lost}):
            lines.append(f"  {sum(r.lost == reason for r in lost):>3} × {reason}")
    top = ", ".join(f"{s} {n}" for s, n in out.sqlstates.most_common(12))
    lines.append(f"errors the clients saw (SQLSTATE): {top}")
    return "\n".join(lines)


def examples(out: Outcome, per_class: int) -> str:
    lines = []
    for klass, found in out.report.by_class().items():
        for m in found[:per_class]:
            where = f"{m.mode} sequence {m.scenario} client {m.client}"
            lines.append(f"  [{klass}] {where}: {m.detail}")
    return "\n".join(lines)


def minimal(rig: Rig, out: Outcome, klass: str, seconds: float) -> str:
    """Shrink the first occurrence of `klass` that reproduces on its own."""
    tried = 0
    for m in out.report.by_class()[klass]:
        if tried >= 5:
            break
        tried += 1
        mode: Mode = "direct" if m.mode == "direct" else "bouncer"
        scn = out.scenarios[m.scenario]
        if reproduces(rig, scn, mode, klass) is None:
            continue  # it needed what earlier sequences left on pooled server connections

        def fails(s: Scenario, mode: Mode = mode) -> bool:
            return reproduces(rig, s, mode, klass) is not None

        small = shrink(scn, fails, seconds)
        found = reproduces(rig, small, mode, klass)
        if found is not None:
            return render(small, mode, found)
    return f"# {klass}: no occurrence reproduced on its own"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--start", type=int, default=0, help="index of the first sequence")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--show", type=int, default=0, help="examples to print per class")
    ap.add_argument("--shrink", action="store_true", help="a minimal reproduction per class")
    ap.add_argument("--shrink-seconds", type=float, default=60.0)
    args = ap.parse_args()
    modes = tuple(m for m in args.modes.split(",") if m in MODES)
    with running(bouncer=True) as sb:
        rig = Rig.start(sb, sb.base / "oracle", modes)
        try:
            scns = [scenario(args.seed, i) for i in range(args.start, args.start + args.count)]
            out = run(rig, scns, modes)
            print(summary(out, args.seed), flush=True)
            if args.show:
                print("examples:\n" + examples(out, args.show), flush=True)
            if args.shrink:
                for klass, found in out.report.by_class().items():
                    if found:
                        print(minimal(rig, out, klass, args.shrink_seconds) + "\n", flush=True)
        finally:
            rig.stop()


if __name__ == "__main__":
    main()
