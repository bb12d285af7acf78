"""DSAR latency for one subject and one actor at each ledger size, cold and warm, and memory.

    python bench/bench_dsar.py [--compact] OUT_1M OUT_10M ...   (made by bench/gen_ledger.py)

cold: a fresh `scalple dsar` process (imports, DuckDB start, footers read from disk; the OS page
cache is not dropped — that needs privileges this machine does not give). warm: the same
question asked again inside one process. RSS is the peak resident set of the dsar process.
The first answer over a ledger also checks every segment the verification cache does not hold
(LEDGER/verified.json: `scalple serve` notes each segment it seals there, a bulk-generated
ledger has none); that one-time answer is reported apart, as is the index build.
"python+import" is a process that only starts Python and imports what `scalple dsar` imports:
the floor under every cold figure.
--compact then runs `scalple index compact` on each ledger and measures it again.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scalple import config as cfg
from scalple.dsar.index import open_index
from scalple.dsar.proof import verify_range
from scalple.dsar.run import Request, run_actor, run_subject, trusted_key
from scalple.dsar.subjects import load_secret
from scalple.ledger.keys import resolve_key_dir
from scalple.ledger.layout import Layout


def _process(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB) and stdout of one `python -m scalple ...` process."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "scalple", *args], stdout=subprocess.PIPE, env=env
    )
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"scalple {' '.join(args)} failed")
    return wall, usage.ru_maxrss // 1024, out.decode()


def _warm(fn: Any, n: int = 5) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


_IMPORTS = "import scalple.cli.main, scalple.dsar.run, scalple.dsar.query, duckdb"


def _segments(ledger: Path) -> int:
    return len([s for s in Layout(ledger).segments() if s.checkpoint.exists()])


def compact(out: Path) -> dict[str, Any]:
    """Compact the ledger of `out` through the CLI: wall time, peak RSS, segments before/after."""
    env = {**os.environ, "SCALPLE_CONFIG": str(out / "scalple.toml")}
    wall, rss, text = _process(["index", "compact", "--json"], env)
    result = json.loads(text)
    return {
        "compact_s": wall,
        "compact_rss_mb": rss,
        "segments_before": result["segments_before"],
        "segments_after": result["segments_after"],
        "compacted_events": result["events"],
    }


def bench(out: Path, label: str = "") -> dict[str, Any]:
    meta = json.loads((out / "meta.json").read_text())
    ledger = Path(meta["ledger"])
    config = out / "scalple.toml"
    env = {**os.environ, "SCALPLE_CONFIG": str(config)}
    row: dict[str, Any] = {"events": meta["plan"]["events"], "label": label}
    row["segments"] = _segments(ledger)
    # Everything before the cold figures runs in processes of its own: a child forked from a
    # parent that grew (DuckDB, an index build) would report the parent's size as its peak RSS.
    if open_index(ledger).upto == 0:
        row["index_build_s"] = _process(["index", "update", "--json"], env)[0]
    row["index_mb"] = sum(p.stat().st_size for p in open_index(ledger).runs) / 2**20
    subject = meta["examples"]["subjects"]["middle"]
    actor = meta["examples"]["actors"]["human"]
    s_args = ["dsar", "--json", "-s", subject]
    a_args = ["dsar", "--json", "--actor", actor]
    # Checks each segment the cache does not hold yet (a serve-sealed one it holds already).
    row["first_verify_s"] = _process(s_args, env)[0]
    row["subject_cold_s"], rss_s, text = _process(s_args, env)
    row["subject_accesses"] = json.loads(text)["count"]
    row["actor_cold_s"], rss_a, text = _process(a_args, env)
    row["actor_statements"] = json.loads(text)["statements_total"]
    row["subject_warm_proc_s"] = min(_process(s_args, env)[0] for _ in range(2))
    row["rss_mb"] = max(rss_s, rss_a)
    row["startup_s"] = min(_process(["--version"], env)[0] for _ in range(2))
    row["imports_s"] = min(_python(["-c", _IMPORTS], env) for _ in range(2))
    settings = cfg.load(config)
    key = trusted_key(None, settings)
    secret = load_secret(resolve_key_dir(settings["key_dir"]))
    req = Request(ledger, None, "quick", None, None)
    row["subject_warm_s"] = _warm(lambda: run_subject(settings, req, [subject]))
    row["actor_warm_s"] = _warm(lambda: run_actor(settings, req, actor, 100), 3)
    row["verify_quick_s"] = _warm(lambda: verify_range(ledger, key, "quick", secret))
    return row


def _python(args: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True)
    return time.perf_counter() - t


COLUMNS = (
    ("events", "events", "{:,}"),
    ("label", "", "{}"),
    ("segments", "segments", "{}"),
    ("index_mb", "index MB", "{:.0f}"),
    ("subject_cold_s", "subject cold", "{:.2f}s"),
    ("subject_warm_proc_s", "subject 2nd proc", "{:.2f}s"),
    ("subject_warm_s", "subject warm", "{:.3f}s"),
    ("actor_cold_s", "actor cold", "{:.2f}s"),
    ("actor_warm_s", "actor warm", "{:.3f}s"),
    ("verify_quick_s", "quick verify", "{:.3f}s"),
    ("rss_mb", "peak RSS", "{} MiB"),
    ("subject_accesses", "accesses", "{}"),
    ("actor_statements", "actor stmts", "{}"),
    ("startup_s", "--version", "{:.2f}s"),
    ("imports_s", "python+import", "{:.2f}s"),
)


def table(rows: list[dict[str, Any]]) -> str:
    head = [c[1] for c in COLUMNS]
    body = [[c[2].format(r.get(c[0], 0)) for c in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = [" | ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += [" | ".join(x.rjust(w) for x, w in zip(b, widths, strict=True)) for b in body]
    for label in dict.fromkeys(r.get("label", "") for r in rows):
        same = [r for r in rows if r.get("label", "") == label]
        for prev, cur in itertools.pairwise(same):
            size = cur["events"] / prev["events"]
            growth = ", ".join(
                f"{k} x{cur[k] / prev[k]:.2f}"
                for k in ("subject_cold_s", "subject_warm_s", "actor_warm_s", "rss_mb")
            )
            lines.append(
                f"growth {label} {prev['events']:,} -> {cur['events']:,} (x{size:.0f} events): "
                + growth
            )
    once = [
        f"{r['events']:,} {r.get('label', '')}: index build "
        f"{r.get('index_build_s', float('nan')):.1f}s (if built here), first answer "
        f"(checks each segment not checked before) {r['first_verify_s']:.1f}s"
        + (
            f"; compaction {r['compact_s']:.1f}s, {r['compact_rss_mb']} MiB, "
            f"{r['segments_before']} -> {r['segments_after']} segments"
            if "compact_s" in r
            else ""
        )
        for r in rows
    ]
    return "\n".join([*lines, "one-time:", *once])


def main() -> None:
    args = sys.argv[1:]
    also_compacted = "--compact" in args
    rows = []
    for path in (Path(a) for a in args if a != "--compact"):
        rows.append(bench(path))
        print(json.dumps(rows[-1]), flush=True)
        if also_compacted:
            done = compact(path)
            rows.append({**bench(path, "compacted"), **done})
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
