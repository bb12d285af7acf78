"""The data path's cost, side by side in one run: PgBouncer, a bare relay (no protocol work: the
floor for a Python proxy) and Scalple (hot path compiled and uncompiled; durability os and
fsync), each in front of PgBouncer in transaction mode.

For every path and protocol (-M simple, -M extended) it prints pgbench -S throughput and the
CPU the path's own process spent per transaction (utime + stime from /proc/PID/stat over the
run: far steadier than throughput on a shared machine), then p50 and p99 latency at -c 1 from
pgbench's per-transaction log. Paths run in alternating rounds, so a burst of load from
elsewhere lands on all of them. With fsync it also prints the disk's fdatasync latency and how
many fdatasyncs the ledger made per transaction (group commit: one per batch).

    python bench/bench_proxy.py [--seconds 20] [--rounds 4] [--clients 8]
                                [--modes simple,extended] [--latency-seconds 10]
                                [--paths ...] [--before CHECKOUT] [--copy-mb 0]
    python bench/bench_proxy.py --workers 1,2 [--durability os] [--clients 16] ...

--before CHECKOUT adds the Scalple of another checkout (say, git worktree add /tmp/before
d796c36) as one more path, run the same way.

--workers 1,2 instead compares `scalple serve --workers N` for each N (compiled hot path):
pgbench -S, and pgbench on `SELECT 1` alone (the least the upstream can do per statement, so
the proxy's own cost weighs most), with the CPU of the supervisor and all its workers summed.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scalple.sandbox import Sandbox, client, free_port
from tests.proxyproc import ProxyProc

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (fields 14 and 15 of /proc/PID/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Path_:
    name: str
    port: int
    pid: int
    metrics: int | None = None
    runs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # mode: (tps, µs)
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)  # mode: (p50, p99)
    syncs_per_tx: float | None = None
    writes_per_tx: float | None = None
    pids: list[int] = field(default_factory=list)  # all of the path's processes, when several

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids or [self.pid])


def pgbench(
    port: int,
    mode: str,
    clients: int,
    seconds: int,
    log_dir: Path | None = None,
    workload: tuple[str, ...] = ("-S",),
) -> int:
    """Run pgbench (-S unless told another `workload`); return the transactions it processed."""
    extra = ["-l", "--log-prefix", str(log_dir / "tx")] if log_dir else []
    argv, env = client(
        "pgbench", port, *workload, "-n", "-M", mode, "-c", str(clients),
        "-j", str(min(2, clients)), "-T", str(seconds), *extra,
    )  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True, cwd=log_dir)
    m = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
    if m is None:
        raise RuntimeError(out.stdout + out.stderr)
    return int(m.group(1))


def measure(
    path: Path_, mode: str, clients: int, seconds: int, workload: tuple[str, ...] = ("-S",)
) -> tuple[float, float]:
    before, started = path.cpu(), time.monotonic()
    done = pgbench(path.port, mode, clients, seconds, workload=workload)
    took, cpu = time.monotonic() - started, path.cpu() - before
    return done / took, cpu / max(done, 1) * 1e6


def latency(path: Path_, mode: str, seconds: int, work: Path) -> tuple[float, float]:
    """p50 and p99 in ms of pgbench -c 1, from its per-transaction log (column 3, µs)."""
    logs = work / f"lat-{path.name.replace(' ', '_').replace(',', '')}-{mode}"
    logs.mkdir(parents=True, exist_ok=True)
    pgbench(path.port, mode, 1, seconds, logs)
    values = sorted(
        int(line.split()[2])
        for f in logs.glob("tx*")
        for line in f.read_text().splitlines()
        if line.strip()
    )
    q = statistics.quantiles(values, n=100)
    return q[49] / 1000, q[98] / 1000


def syncs(path: Path_) -> tuple[float, float]:
    """The ledger's write() and fdatasync() counts so far, from /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{path.metrics}/metrics").read().decode()
    found = dict(re.findall(r"^(scalple_ledger_(?:writes|syncs))_total (\S+)$", text, re.M))
    return float(found["scalple_ledger_writes"]), float(found["scalple_ledger_syncs"])


def fdatasync_ms(where: Path, n: int = 200) -> float:
    """Median time of one 4 KiB write + fdatasync on the filesystem at `where`."""
    fd = os.open(where / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            t = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
    return statistics.median(times) * 1000


def start_scalple(
    sb: Sandbox,
    work: Path,
    name: str,
    durability: str,
    env: dict[str, str],
    python_args=None,
    started: list[subprocess.Popen[bytes] | ProxyProc] | None = None,
) -> Path_:
    metrics = free_port()
    args = ("--durability", durability)
    proxy = ProxyProc(sb.bouncer_port, work / name.replace(" ", "_") / "ledger", args, env={
        **env, "SCALPLE_METRICS_LISTEN": f"127.0.0.1:{metrics}",
    })  # fmt: skip
    if python_args is not None:
        proxy.python_args = python_args
    proxy.start()
    if started is not None:
        started.append(proxy)  # stopped with the others, whatever happens
    assert proxy.proc is not None
    return Path_(name, proxy.port, proxy.proc.pid, metrics)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=20, help="per path and mode, over all rounds")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--modes", default="simple,extended")
    ap.add_argument("--latency-seconds", type=int, default=10)
    ap.add_argument("--paths", default="", help="comma-separated path names to run (default: all)")
    ap.add_argument("--before", type=Path, help="another checkout's scalple, as one more path")
    ap.add_argument("--copy-mb", type=int, default=0, help="also a COPY TO STDOUT of this size")
    ap.add_argument("--workers", default="", help="compare serve --workers N for these N, e.g. 1,2")
    ap.add_argument("--durability", default="os", help="with --workers: the ledger's durability")
    args = ap.parse_args()
    modes = args.modes.split(",")
    work = Path(tempfile.mkdtemp(prefix="scalple-bench-"))
    sb = Sandbox(pool_size=args.clients + 2)
    started: list[subprocess.Popen[bytes] | ProxyProc] = []
    try:
        sb.start_postgres()
        sb.start_pgbouncer()
        argv, env = client("pgbench", sb.pg_port, "-i", "-s", "10", "-q")
        subprocess.run(argv, check=True, capture_output=True, env=env)
        if args.workers:
            compare_workers(sb, work, args, started)
            return
        relay_port = free_port()
        relay = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("relay.py")), str(relay_port),
             str(sb.bouncer_port)]
        )  # fmt: skip
        started.append(relay)
        pure = {"SCALPLE_PURE": "1"}
        paths = [
            Path_("pgbouncer", sb.bouncer_port, sb._procs[-1].pid),
            Path_("bare relay", relay_port, relay.pid),
            start_scalple(sb, work, "scalple compiled os", "os", {}, started=started),
            start_scalple(sb, work, "scalple compiled fsync", "fsync", {}, started=started),
            start_scalple(sb, work, "scalple pure os", "os", pure, started=started),
            start_scalple(sb, work, "scalple pure fsync", "fsync", pure, started=started),
        ]
        if args.before:
            env = {"PYTHONPATH": str(args.before.resolve())}
            paths.append(start_scalple(sb, work, "scalple before os", "os", env, started=started))
        if args.paths:
            wanted = set(args.paths.split(","))
            paths = [p for p in paths if p.name in wanted or p.name == "pgbouncer"]
        time.sleep(1)
        for mode in modes:
            pgbench(sb.bouncer_port, mode, args.clients, 3)  # warm caches
        share = max(1, args.seconds // args.rounds)
        for round_ in range(args.rounds):
            for mode in modes:
                for p in paths:
                    if p.metrics:
                        w0, s0 = syncs(p)
                    tps, us = measure(p, mode, args.clients, share)
                    p.runs.setdefault(mode, []).append((tps, us))
                    if p.metrics:
                        w1, s1 = syncs(p)
                        done = max(tps * share, 1)
                        p.writes_per_tx, p.syncs_per_tx = (w1 - w0) / done, (s1 - s0) / done
                    print(f"round {round_ + 1} {mode:8} {p.name:26} {tps:9.0f} tps "
                          f"{us:7.1f} µs CPU/tx", flush=True)  # fmt: skip
        for mode in modes:
            for p in paths:
                p.latency[mode] = latency(p, mode, args.latency_seconds, work)
        report(paths, modes, args)
        print(f"\nfdatasync of 4 KiB on this disk: {fdatasync_ms(work):.2f} ms (median)")
        for p in paths:
            if p.syncs_per_tx is not None:
                print(f"{p.name}: per transaction {p.writes_per_tx:.3f} journal write() and "
                      f"{p.syncs_per_tx:.3f} fdatasync() (last round)")  # fmt: skip
        if args.copy_mb:
            copy_rss(sb, work, args.copy_mb)
    finally:
        for proc in started:
            if isinstance(proc, subprocess.Popen):
                proc.terminate()
                proc.wait()
            else:
                proc.stop()
        sb.cleanup()


def means(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.mean(t for t, _ in runs), statistics.mean(u for _, u in runs)


def compare_workers(
    sb: Sandbox,
    work: Path,
    args: argparse.Namespace,
    started: list[subprocess.Popen[bytes] | ProxyProc],
) -> None:
    """`serve --workers N` for each N, on pgbench -S and on SELECT 1, in alternating rounds."""
    script = work / "select1.sql"
    script.write_text("SELECT 1;\n")
    workloads = {"pgbench -S": ("-S",), "SELECT 1": ("-f", str(script))}
    modes = args.modes.split(",")
    paths = [Path_("pgbouncer", sb.bouncer_port, sb._procs[-1].pid)]
    for n in (int(x) for x in args.workers.split(",")):
        proxy = ProxyProc(
            sb.bouncer_port,
            work / f"workers-{n}" / "ledger",
            ("--durability", args.durability, "--workers", str(n)),
        ).start()
        started.append(proxy)
        assert proxy.proc is not None
        deadline = time.monotonic() + 60
        while n > 1 and len(proxy.worker_pids()) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [proxy.proc.pid, *proxy.worker_pids().values()]
        paths.append(Path_(f"scalple --workers {n}", proxy.port, proxy.proc.pid, pids=pids))
    time.sleep(1)
    for mode in modes:
        pgbench(sb.bouncer_port, mode, args.clients, 3)  # warm caches
    share = max(1, args.seconds // args.rounds)
    runs: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for round_ in range(args.rounds):
        for load, workload in workloads.items():
            for mode in modes:
                for p in paths:
                    tps, us = measure(p, mode, args.clients, share, workload)
                    runs.setdefault((load, mode, p.name), []).append((tps, us))
                    print(f"round {round_ + 1} {load:10} {mode:8} {p.name:22} {tps:9.0f} tps "
                          f"{us:7.1f} µs CPU/tx", flush=True)  # fmt: skip
    print(f"\n-c {args.clients} -j 2, {args.seconds} s per path, workload and mode in "
          f"{args.rounds} alternating rounds; durability {args.durability}; "
          f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, shared with PostgreSQL, "
          "PgBouncer and pgbench")  # fmt: skip
    one = paths[1].name
    for load in workloads:
        for mode in modes:
            print(f"\n{load}, -M {mode}")
            print(f"{'path':22} {'tps':>8} {'× 1 worker':>10} {'CPU µs/tx':>10} {'× 1 worker':>10} "
                  f"{'tx/s per core':>14}")  # fmt: skip
            base_tps, base_us = means(runs[(load, mode, one)])
            for p in paths:
                tps, us = means(runs[(load, mode, p.name)])
                print(f"{p.name:22} {tps:8.0f} {tps / base_tps:10.2f} {us:10.1f} "
                      f"{us / base_us:10.2f} {1e6 / us:14.0f}")  # fmt: skip


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def copy_rss(sb: Sandbox, work: Path, megabytes: int) -> None:
    proxy = ProxyProc(sb.bouncer_port, work / "copy" / "ledger", ("--durability", "os")).start()
    assert proxy.proc is not None
    sql = f"COPY (SELECT repeat('x', 1023) FROM generate_series(1, {megabytes * 1024})) TO STDOUT"
    argv, env = client("psql", proxy.port, "-c", sql)
    started = time.monotonic()
    with open(os.devnull, "wb") as sink:
        subprocess.run(argv, stdout=sink, check=True, env=env)
    took = time.monotonic() - started
    rss = peak_rss_mb(proxy.proc.pid)
    proxy.stop()
    print(f"\nCOPY TO STDOUT of {megabytes} MB through scalple: {took:.1f} s, "
          f"{megabytes / took:.0f} MB/s, proxy peak RSS {rss:.0f} MB")  # fmt: skip


def report(paths: list[Path_], modes: list[str], args: argparse.Namespace) -> None:
    print(f"\npgbench -S -c {args.clients} -j 2, {args.seconds} s per path and mode in "
          f"{args.rounds} alternating rounds; latency at -c 1 over {args.latency_seconds} s; "
          f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, shared")  # fmt: skip
    for mode in modes:
        tps = {p.name: statistics.mean(t for t, _ in p.runs[mode]) for p in paths}
        cpu = {p.name: statistics.mean(u for _, u in p.runs[mode]) for p in paths}
        base, relay = tps["pgbouncer"], cpu.get("bare relay")
        print(f"\n-M {mode}")
        print(f"{'path':26} {'tps':>8} {'× pgb':>6} {'CPU µs/tx':>10} {'× relay':>8} "
              f"{'p50 ms':>7} {'p99 ms':>7}")  # fmt: skip
        for p in paths:
            ratio = f"{cpu[p.name] / relay:8.2f}" if relay else f"{'':8}"
            p50, p99 = p.latency[mode]
            print(f"{p.name:26} {tps[p.name]:8.0f} {tps[p.name] / base:6.2f} "
                  f"{cpu[p.name]:10.1f} {ratio} {p50:7.3f} {p99:7.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
