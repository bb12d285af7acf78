"""Proxy throughput and memory, measured side by side in one run on this machine.

pgbench -S (select-only) with 8 clients straight to PostgreSQL, through PgBouncer, and through
a bare relay (no protocol work: the ceiling for a Python proxy), and Scalple in front of
PgBouncer (auditing on, in both durability modes; analysis on and off), then a 1 GB COPY TO
STDOUT through Scalple with its peak RSS.

    python bench/bench_proxy.py [--seconds 20] [--clients 8] [--copy-mb 1024] [--mode simple]
                                [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scalple.sandbox import Sandbox, client, free_port
from tests.proxyproc import ProxyProc

NO_ANALYSIS = (
    "import sys, scalple.proxy.server as s\n"
    "async def none(config): return None\n"
    "s.build_analyzer = none\n"
    "from scalple.cli.main import main\n"
    "sys.argv[0] = 'scalple'\n"
    "main()\n"
)


def pgbench(port: int, seconds: int, clients: int, mode: str) -> float:
    argv, env = client("pgbench", port, "-S", "-n", "-M", mode, "-c", str(clients), "-j", "2",
                       "-T", str(seconds))  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    m = re.search(r"tps = ([\d.]+) \((?:without|excluding)", out.stdout)
    if m is None:
        raise RuntimeError(out.stdout + out.stderr)
    return float(m.group(1))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_proxy(sb: Sandbox, work: Path, name: str, *args: str, analysis: bool = True) -> ProxyProc:
    proxy = ProxyProc(sb.bouncer_port, work / name / "ledger", args)
    if not analysis:
        proxy.python_args = ("-c", NO_ANALYSIS)
    return proxy.start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--copy-mb", type=int, default=1024)
    ap.add_argument("--mode", default="simple", choices=["simple", "extended"])
    ap.add_argument("--rounds", type=int, default=4, help="alternate the paths this many times")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scalple-bench-"))
    sb = Sandbox(pool_size=args.clients)
    try:
        sb.start_postgres()
        sb.start_pgbouncer()
        argv, env = client("pgbench", sb.pg_port, "-i", "-s", "10", "-q")
        subprocess.run(argv, check=True, capture_output=True, env=env)
        proxies = {
            "scalple fsync": start_proxy(sb, work, "fsync"),
            "scalple os": start_proxy(sb, work, "os", "--durability", "os"),
            "scalple os, no analysis": start_proxy(
                sb, work, "raw", "--durability", "os", analysis=False
            ),
        }
        relay_port = free_port()
        relay_py = str(Path(__file__).with_name("relay.py"))
        relay = subprocess.Popen([sys.executable, relay_py, str(relay_port), str(sb.bouncer_port)])
        targets = {"postgres direct": sb.pg_port, "pgbouncer": sb.bouncer_port}
        targets["bare relay (no audit)"] = relay_port
        targets |= {name: p.port for name, p in proxies.items()}
        pgbench(sb.bouncer_port, 3, args.clients, args.mode)  # warm caches
        # Rounds, each path in turn: a burst of load from elsewhere on this shared machine then
        # lands on every path, not on one.
        runs: dict[str, list[float]] = {name: [] for name in targets}
        share = max(1, args.seconds // args.rounds)
        for _ in range(args.rounds):
            for name, port in targets.items():
                runs[name].append(pgbench(port, share, args.clients, args.mode))
                print(f"{name:26} {runs[name][-1]:10.0f} tps", flush=True)
        tps = {name: sum(values) / len(values) for name, values in runs.items()}
        base = tps["pgbouncer"]
        print(f"\npgbench -S -M {args.mode} -c {args.clients} -T {args.seconds} (2 cores, shared)")
        print(f"{'path':26} {'tps':>10} {'× pgbouncer':>12}")
        for name, value in tps.items():
            print(f"{name:26} {value:10.0f} {value / base:12.2f}")
        print(
            "target: scalple ≥ 0.80 × pgbouncer (the bare relay, doing no work, reaches "
            f"{tps['bare relay (no audit)'] / base:.2f}×); analysis on ≥ 0.90 × off: "
            f"{tps['scalple os'] / tps['scalple os, no analysis']:.2f}"
        )
        relay.terminate()
        relay.wait()
        for p in proxies.values():
            p.stop()
        copy_rss(sb, work, args.copy_mb)
    finally:
        sb.cleanup()


def copy_rss(sb: Sandbox, work: Path, megabytes: int) -> None:
    proxy = start_proxy(sb, work, "copy", "--durability", "os")
    assert proxy.proc is not None
    rows = megabytes * 1024
    sql = f"COPY (SELECT repeat('x', 1023) FROM generate_series(1, {rows})) TO STDOUT"
    argv, env = client("psql", proxy.port, "-c", sql)
    started = time.monotonic()
    with open(os.devnull, "wb") as sink:
        subprocess.run(argv, stdout=sink, check=True, env=env)
    took = time.monotonic() - started
    rss = peak_rss_mb(proxy.proc.pid)
    proxy.stop()
    print(
        f"\nCOPY TO STDOUT of {megabytes} MB through scalple: {took:.1f} s, "
        f"{megabytes / took:.0f} MB/s, proxy peak RSS {rss:.0f} MB (target < 150 MB)"
    )


if __name__ == "__main__":
    main()
