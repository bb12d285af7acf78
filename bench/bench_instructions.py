"""Instructions per transaction of each path's own process, counted by valgrind's callgrind:
the same count whatever else the machine is doing, where CPU time on a shared 2-core machine
moves by tens of percent from run to run. Side by side in one run: a bare relay (no protocol
work) and Scalple (hot path compiled and uncompiled), each in front of PgBouncer. `--before
CHECKOUT` with `--paths relay,before,compiled` adds another checkout's Scalple (say, `git worktree
add /tmp/before <commit>`), run from its sources.

    python bench/bench_instructions.py [--transactions 2000] [--clients 4] [--mode simple]
                                       [--paths ...] [--durability os] [--before CHECKOUT]

Each path runs under callgrind (about 50 times slower); counters are zeroed after a warm-up and
dumped after the measured pgbench run, so start-up and imports are not counted. All threads of
the process are counted (the ledger's writer and syncer threads included).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scalple.sandbox import Sandbox, client, free_port

PYTHON = os.path.realpath(sys.executable)
# Parts taken away, to say what each costs: the analyzer, the ledger (a sink that says every
# write-ahead is durable at once and keeps nothing), or both.
ABLATE = """
import sys, os, scalple.proxy.server as s
parts = set(os.environ["SCALPLE_BENCH_WITHOUT"].split(","))
if "analysis" in parts:
    async def none(config): return None
    s.build_analyzer = none
if "ledger" in parts:
    class Null:
        def submit(self, events, done=None):
            if done is not None: done(None)
        def record(self, event): pass
        async def write_ahead(self, events): pass
        async def aclose(self): pass
    s.open_sink = lambda *a, **k: Null()
    s.attach_watch = lambda config, sink: None
from scalple.cli.main import main
sys.argv[0] = "scalple"
main()
"""
WITHOUT = {"no-analysis": "analysis", "no-ledger": "ledger", "no-audit": "analysis,ledger"}


def wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"nothing listened on {port}")


def pgbench(port: int, mode: str, clients: int, transactions: int) -> None:
    argv, env = client(
        "pgbench", port, "-S", "-n", "-M", mode, "-c", str(clients), "-j", "1",
        "-t", str(transactions),
    )  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, env=env)


def callgrind(out: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
         "--separate-threads=no", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip


def counted(proc: subprocess.Popen[bytes], out: Path, run: object) -> int:
    """Instructions the process executed while `run()` ran."""
    subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True,
                   capture_output=True)  # fmt: skip
    run()  # type: ignore[operator]
    before = set(out.parent.glob(out.name + "*"))
    subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True,
                   capture_output=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for dump in set(out.parent.glob(out.name + "*")) - before:
            text = dump.read_text(errors="replace")
            m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            if m:
                return int(m.group(1))
        time.sleep(0.5)
    raise RuntimeError("callgrind wrote no dump")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--transactions", type=int, default=2000, help="per client")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--mode", default="simple", choices=["simple", "extended", "prepared"])
    ap.add_argument("--durability", default="os", choices=["os", "fsync"])
    ap.add_argument("--paths", default="relay,compiled,pure")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the proxies")
    ap.add_argument("--before", type=Path, help="another checkout's scalple, as the path 'before'")
    args = ap.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("needs valgrind (Debian package valgrind)")
    work = Path(tempfile.mkdtemp(prefix="scalple-instr-"))
    sb = Sandbox(pool_size=args.clients + 2)
    results: dict[str, float] = {}
    try:
        sb.start_postgres()
        sb.start_pgbouncer()
        argv, env = client("pgbench", sb.pg_port, "-i", "-s", "10", "-q")
        subprocess.run(argv, check=True, capture_output=True, env=env)
        for name in args.paths.split(","):
            port = free_port()
            out = work / f"{name}.cg"
            if name == "relay":
                relay = str(Path(__file__).with_name("relay.py"))
                proc = callgrind(out, PYTHON, relay, str(port), str(sb.bouncer_port))
            else:
                env = {k: v for k, v in os.environ.items() if k != "SCALPLE_PURE"}
                env |= {"SCALPLE_CONFIG": os.devnull,
                        "SCALPLE_KEY_DIR": str(work / f"{name}-keys"),
                        "SCALPLE_STALL_TIMEOUT": "600", "SCALPLE_LOGIN_TIMEOUT": "600",
                        "SCALPLE_CONNECT_TIMEOUT": "120"}  # fmt: skip
                if name == "pure":
                    env["SCALPLE_PURE"] = "1"
                if name == "before":
                    if args.before is None:
                        sys.exit("the path 'before' needs --before CHECKOUT")
                    env["PYTHONPATH"] = str(args.before.resolve())
                env |= dict(e.split("=", 1) for e in args.env)
                start = ["-m", "scalple"]
                if name in WITHOUT:
                    env["SCALPLE_BENCH_WITHOUT"] = WITHOUT[name]
                    start = ["-c", ABLATE]
                proc = callgrind(
                    out, PYTHON, *start, "serve", "--listen", f"127.0.0.1:{port}",
                    "--upstream", f"postgresql://127.0.0.1:{sb.bouncer_port}",
                    "--ledger", str(work / f"{name}-ledger"), "--durability", args.durability,
                    "--workers", "1",
                    env=env,
                )  # fmt: skip
            try:
                wait_port(port, proc)
                pgbench(port, args.mode, args.clients, 50)  # warm: caches, connections
                total = counted(
                    proc, out, lambda p=port: pgbench(p, args.mode, args.clients, args.transactions)
                )
                results[name] = total / (args.transactions * args.clients)
                print(f"{name:10} {results[name]:12,.0f} instructions per transaction", flush=True)
            finally:
                proc.terminate()  # under callgrind the drain and seal can take minutes
                try:
                    proc.wait(600)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        base = results.get("relay")
        print(f"\npgbench -S -M {args.mode} -c {args.clients} -t {args.transactions} through "
              f"PgBouncer; durability {args.durability}; callgrind")  # fmt: skip
        for name, value in results.items():
            ratio = f"{value / base:6.2f}× relay" if base else ""
            print(f"{name:10} {value:12,.0f} instructions/tx  {ratio}")
    finally:
        sb.cleanup()


if __name__ == "__main__":
    main()
