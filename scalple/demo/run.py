"""The demo itself: start the stack, drive the workload, show both trails, run verify and dsar,
clean up. The only module of the demo that does I/O."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from scalple import config as cfg
from scalple.demo.trails import Pair, pair, parse_pgaudit, scalple_statements
from scalple.errors import SandboxError
from scalple.sandbox import INSTALL_HINT, Sandbox, free_port, pgbouncer_binary, postgres_bindir
from scalple.tabular import UNBOUNDED, Column, Rows, hang

APP = "shop-web"
ANSWER_SECONDS = 30  # longest the demo waits for one statement through the proxy
NOTEBOOK = "notebook"
CUSTOMER = "42"
EMAIL = "dana.reyes@example.com"  # customer 42's address: personal data in a statement
ALICE, BOB, ANALYST = "alice@corp.example", "bob@corp.example", "analyst@corp.example"
CAROL = "carol@corp.example"
# Alice, Bob, Carol and five colleagues at the same desk: the history the watch act compares with.
DESK = [
    ALICE,
    BOB,
    CAROL,
    *(f"{n}@corp.example" for n in ("dan", "erin", "frank", "grace", "heidi")),
]
HISTORY_DAYS = 20
BROWSED = range(200, 230)  # customers nobody at the desk has a case for
ALERT_SECONDS = 60  # longest the demo waits for the live alert

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
                     total numeric(10, 2) NOT NULL);
CREATE TABLE customer_changes (customer_id int, changed_by text, changed_at timestamptz
                               DEFAULT now());
CREATE FUNCTION log_customer_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO customer_changes (customer_id, changed_by)
  VALUES (NEW.id, coalesce(nullif(current_setting('app.user_id', true), ''), '(nobody)'));
  RETURN NEW;
END $$;
CREATE TRIGGER customers_changed AFTER UPDATE ON customers
  FOR EACH ROW EXECUTE FUNCTION log_customer_change();
INSERT INTO customers VALUES (7, 'Ravi Patel', 'ravi@example.com'),
  (42, 'Dana Reyes', 'dana.reyes@example.com'), (99, 'Mei Chen', 'mei@example.com');
INSERT INTO orders (customer_id, total) VALUES (42, 120.00), (7, 35.50), (99, 12.00);
"""
# The settings the demo's proxy runs with, written only where this build knows them.
PROXY_SETTINGS: dict[str, dict[str, Any]] = {
    "analysis": {
        "pii_columns": ["customers.email", "customers.name"],
        "subject_columns": {
            "customers.id": "customer",
            "orders.customer_id": "customer",
            "customer_changes.customer_id": "customer",
        },
    },
}


@dataclass
class Stack:
    sandbox: Sandbox
    ledger: Path
    proxy_port: int = 0
    started_us: int = 0
    proxy: subprocess.Popen[bytes] | None = None
    bouncer: bool = False
    leaked: list[str] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.sandbox.base / "scalple.toml"

    @property
    def alerts(self) -> Path:
        return self.sandbox.base / "alerts.jsonl"

    @property
    def upstream_port(self) -> int:
        return self.sandbox.bouncer_port if self.bouncer else self.sandbox.pg_port

    def via_proxy(self, application_name: str, options: str = "") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.proxy_port,
            dbname="app",
            user="app_user",
            password="app_secret",
            autocommit=True,
            application_name=application_name,
            options=options,
        )


def _toml(settings: Mapping[str, Mapping[str, Any]]) -> str:
    lines = []
    for section, values in settings.items():
        known = {k: v for k, v in values.items() if k in cfg.BY_NAME}
        if not known:
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in known.items()]
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


class Demo:
    def __init__(self, console: Console, *, keep: bool = False) -> None:
        self.out = console
        self.keep = keep
        self.stack: Stack | None = None

    def _stop_proxy(self) -> None:
        """Ask the proxy to stop, which also frees a client call stuck waiting on it."""
        proxy = self.stack.proxy if self.stack else None
        if proxy is not None and proxy.poll() is None:
            proxy.send_signal(signal.SIGTERM)

    def say(self, text: str) -> None:
        self.out.print(text, highlight=False)

    def run(self) -> int:
        self.say(
            "[bold]Scalple demo[/]: a throwaway PostgreSQL with pgAudit, PgBouncer and "
            "Scalple on 127.0.0.1, a small workload by named people, and what each audit "
            "trail recorded.\n"
        )
        self._preflight()
        with _cleanup_on_hangup(self._stop_proxy), self._stack() as stack:
            self._workload(stack)
            self._leak(stack)
            pairs = self._trails(stack)
            self._blame(stack)
            self._ledger_commands(stack)
            self._watch(stack)
            if self.keep:
                self._hold(stack)
        return 0 if pairs else 1

    # -- setup and teardown -------------------------------------------------------------------

    def _preflight(self) -> None:
        try:
            bindir = postgres_bindir()
        except SandboxError as exc:
            raise SandboxError(
                "scalple demo needs PostgreSQL server binaries (initdb, postgres) and pgAudit; "
                + INSTALL_HINT
            ) from exc
        self.say(f"  PostgreSQL binaries: {escape(str(bindir))}")

    @contextlib.contextmanager
    def _stack(self) -> Iterator[Stack]:
        sandbox = Sandbox()
        stack = self.stack = Stack(sandbox, sandbox.base / "ledger")
        try:
            sandbox.start_postgres()
            self.say(f"  [green]✓[/] PostgreSQL with pgAudit on 127.0.0.1:{sandbox.pg_port}")
            if pgbouncer_binary() is not None:
                sandbox.start_pgbouncer()
                stack.bouncer = True
                self.say(
                    f"  [green]✓[/] PgBouncer (pool_mode = transaction) on "
                    f"127.0.0.1:{sandbox.bouncer_port}"
                )
            else:
                self.say(
                    "  [yellow]![/] PgBouncer is not installed, so Scalple talks to "
                    "PostgreSQL directly and the pooled-SET leak is skipped "
                    "(apt-get install -y pgbouncer)"
                )
            with psycopg.connect(
                sandbox.dsn("app_user"), autocommit=True, application_name="demo-setup"
            ) as con:
                con.execute(SCHEMA.encode())
            self._start_proxy(stack)
            yield stack
        finally:
            self._cleanup(stack)

    def _start_proxy(self, stack: Stack) -> None:
        stack.proxy_port = free_port()
        conf = stack.config
        settings = {
            **PROXY_SETTINGS,
            "ledger": {"key_dir": str(stack.sandbox.base / "keys")},
            "watch": {"alerts_file": str(stack.alerts)},
        }
        conf.write_text(_toml(settings))
        self._signing_key(stack)
        self._history(stack)
        stack.started_us = time.time_ns() // 1000
        log = stack.sandbox.base / "scalple.log"
        args = [
            sys.executable,
            "-m",
            "scalple",
            "serve",
            "--listen",
            f"127.0.0.1:{stack.proxy_port}",
            "--upstream",
            f"postgresql://127.0.0.1:{stack.upstream_port}",
            "--ledger",
            str(stack.ledger),
            "--config",
            str(conf),
            "--workers",  # one watcher sees every statement, as the act's live alerts need
            "1",
        ]
        with open(log, "ab") as logf:
            stack.proxy = subprocess.Popen(args, stdout=logf, stderr=logf, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if stack.proxy.poll() is not None:
                raise SandboxError(f"scalple serve exited: {log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", stack.proxy_port), 0.2),
            ):
                self.say(
                    f"  [green]✓[/] scalple serve on 127.0.0.1:{stack.proxy_port} → "
                    f"{'PgBouncer' if stack.bouncer else 'PostgreSQL'}, ledger "
                    f"{escape(str(stack.ledger))}\n"
                )
                return
            time.sleep(0.05)
        raise SandboxError(f"scalple serve did not listen: {log.read_text()[-2000:]}")

    def _signing_key(self, stack: Stack) -> None:
        """A checkpoint signing key of the demo's own, when this build signs its ledger."""
        from scalple.cli.main import app

        keys = getattr(typer.main.get_command(app), "commands", {}).get("keys")
        if keys is None or "init" not in getattr(keys, "commands", {}):
            return
        key_dir = stack.sandbox.base / "keys"
        proc = subprocess.run(
            [sys.executable, "-m", "scalple", "keys", "init", "--key-dir", str(key_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "SCALPLE_CONFIG": str(stack.config)},
        )
        if proc.returncode != 0:
            raise SandboxError(f"scalple keys init failed: {proc.stderr.strip()}")

    def _cleanup(self, stack: Stack) -> None:
        self.say("\nCleaning up…")
        if stack.proxy is not None and stack.proxy.poll() is None:
            stack.proxy.send_signal(signal.SIGTERM)
            try:
                stack.proxy.wait(15)
            except subprocess.TimeoutExpired:
                stack.proxy.kill()
                stack.proxy.wait()
        stack.sandbox.cleanup()
        self.say(
            f"Stopped Scalple, PgBouncer and PostgreSQL; removed {escape(str(stack.sandbox.base))}."
        )

    def _hold(self, stack: Stack) -> None:
        sb = stack.sandbox
        self.say("\n[bold]Still running[/] (--keep). Connect with:")
        rows = [
            (
                "through Scalple as Alice",
                f"postgresql://app_user:app_secret@127.0.0.1:{stack.proxy_port}/app"
                "?options=-c%20scalple.user%3Dalice%40corp.example",
            ),
            (
                "through Scalple",
                f"postgresql://app_user:app_secret@127.0.0.1:{stack.proxy_port}/app",
            ),
        ]
        if stack.bouncer:
            rows.append(("PgBouncer (around Scalple)", sb.dsn("app_user", port=sb.bouncer_port)))
        rows += [
            ("PostgreSQL (superuser)", f"postgresql://postgres@127.0.0.1:{sb.pg_port}/app"),
            ("ledger", str(stack.ledger)),
            ("pgAudit log", str(sb.pg_log)),
        ]
        for label, value in rows:  # never wrapped: they are for copying
            self.out.print(f"  {label:<28} {escape(value)}", soft_wrap=True, highlight=False)
        self.say("Press Ctrl-C to stop and clean up.")
        with contextlib.suppress(KeyboardInterrupt):
            while stack.proxy is not None and stack.proxy.poll() is None:
                time.sleep(0.5)
            self.say("[red]scalple serve stopped on its own[/]")

    # -- workload -----------------------------------------------------------------------------

    def _workload(self, stack: Stack) -> None:
        self.say("[bold]Workload[/] through Scalple, all as the one database role app_user:")
        alice = stack.via_proxy(application_name=APP, options=f"-c scalple.user={ALICE}")
        bob = stack.via_proxy(application_name=APP)
        analyst = stack.via_proxy(application_name=NOTEBOOK)
        bob_tag = f"/*user='{BOB.replace('@', '%40')}'*/ "
        steps: list[tuple[psycopg.Connection[Any], str, str]] = [
            (alice, ALICE, f"SELECT id, name, email FROM customers WHERE id = {CUSTOMER}"),
            (bob, BOB, bob_tag + f"SELECT id, name FROM customers WHERE email = '{EMAIL}'"),
            (alice, ALICE, f"INSERT INTO orders (customer_id, total) VALUES ({CUSTOMER}, 19.90)"),
            (bob, BOB, bob_tag + f"SELECT count(*) FROM orders WHERE customer_id = {CUSTOMER}"),
            (analyst, ANALYST, f"SET scalple.user = '{ANALYST}'"),
            (
                analyst,
                ANALYST,
                "SELECT c.name, sum(o.total) FROM customers c "
                "JOIN orders o ON o.customer_id = c.id GROUP BY c.name",
            ),
        ]
        channel = {id(alice): "startup option", id(bob): "comment", id(analyst): "SET"}
        try:
            for con, who, sql in steps:
                with _answer_within(ANSWER_SECONDS, stack, sql):
                    con.execute(sql.encode())
                self._step(who, channel[id(con)], sql)
        finally:
            for con in (alice, bob, analyst):
                con.close()

    def _step(self, who: str, channel: str, sql: str) -> None:
        """One statement of the workload; a long one wraps under itself, not under the name."""
        lead = Text.assemble(f"  {who:<22} ", (f"{channel:<15}", "dim"), " ")
        self.out.print(hang(self.out, lead, sql))

    def _leak(self, stack: Stack) -> None:
        if not stack.bouncer:
            return
        self.say(
            "\n[bold]Around Scalple[/]: the same app sets app.user_id itself, straight to "
            "PgBouncer, and forgets to for Bob's next request:"
        )
        dsn = stack.sandbox.dsn("app_user", port=stack.sandbox.bouncer_port)
        alice_req = [f"SET app.user_id = '{ALICE}'", "SELECT name FROM customers WHERE id = 7"]
        bob_req = [f"UPDATE customers SET email = 'dana@new.example' WHERE id = {CUSTOMER}"]
        for who, stmts in ((ALICE, alice_req), (BOB, bob_req)):
            with psycopg.connect(dsn, autocommit=True, application_name=APP) as con:
                for sql in stmts:
                    con.execute(sql.encode())
                    stack.leaked.append(sql)
                    self._step(who, "(direct)", sql)

    # -- the two trails -----------------------------------------------------------------------

    def _events(self, stack: Stack) -> list[dict[str, Any]]:
        standin = stack.ledger / "events.jsonl"
        if standin.exists():
            lines = standin.read_text().splitlines()
            return [json.loads(line) for line in lines if line.strip()]
        import duckdb

        from scalple.ledger.query import events_view

        con = duckdb.connect()
        events_view(con, stack.ledger)
        cur = con.execute("SELECT * FROM events ORDER BY seq")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def _settled_events(self, stack: Stack) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while True:
            # this run's records only, not the history written before the proxy started
            events = [e for e in self._events(stack) if e["ts_start"] >= stack.started_us]
            done = {e["event_id"] for e in events if e["kind"] == "outcome"}
            if all(e["event_id"] in done for e in scalple_statements(events)):
                return events
            if time.monotonic() > deadline:
                return events
            time.sleep(0.1)

    def _trails(self, stack: Stack) -> list[Pair]:
        events = self._settled_events(stack)
        statements = [
            e
            for e in scalple_statements(events)
            if not str(e.get("statement") or "").upper().startswith("SET ")
        ]
        audit = parse_pgaudit(stack.sandbox.postgres_log(), {APP, NOTEBOOK})
        pairs = pair(statements, audit, [s for s in stack.leaked if not s.startswith("SET ")])
        rows: list[list[str | Text]] = []
        for p in pairs:
            scalple = (
                f"[green]{escape(p.actor)}[/] [dim]({p.identity_source})[/]"
                if p.actor
                else "[red]not seen: went around Scalple[/]"
                if p.identity_source is None
                else "[yellow]unattributed[/]"
            )
            rows.append([p.statement, p.pgaudit_user or "(no line)", Text.from_markup(scalple)])
        table = Rows(
            [Column("statement", long=True), "pgAudit says", "Scalple says"],
            rows,
            title="Who ran what: pgAudit's log vs Scalple's ledger",
        )
        self.out.print(table)
        seen = [p for p in pairs if p.identity_source is not None]
        named = [p for p in seen if p.actor]
        roles = sorted({p.pgaudit_user for p in pairs if p.pgaudit_user})
        self.say(
            f"pgAudit named the role [bold]{escape(', '.join(roles) or 'nobody')}[/] for "
            f"every statement; Scalple named the person for {len(named)} of the "
            f"{len(seen)} statements it carried."
        )
        in_log = any(EMAIL in a.statement for a in audit)
        in_ledger = any(EMAIL in str(e.get("statement") or "") for e in statements)
        self.say(
            f"Customer {CUSTOMER}'s email address in Bob's lookup: pgAudit's log has it "
            + ("[bold red]in clear[/]" if in_log else "masked")
            + "; Scalple's ledger "
            + (
                "has it in clear too (no PII masking in this build)"
                if in_ledger
                else "[green]has it masked[/]"
            )
            + "."
        )
        return pairs

    def _blame(self, stack: Stack) -> None:
        if not stack.leaked:
            return
        with psycopg.connect(
            stack.sandbox.dsn("app_user"), autocommit=True, application_name="demo-report"
        ) as con:
            rows = con.execute(
                "SELECT changed_by FROM customer_changes WHERE customer_id = " + CUSTOMER
            ).fetchall()
        blamed = rows[-1][0] if rows else "(nothing)"
        verdict = (
            "[bold red]the classic blame error[/]. PgBouncer handed Bob's request the "
            "server connection Alice's SET was still on"
            if blamed == ALICE
            else "this time PgBouncer gave Bob a fresh connection; under load it will not"
        )
        self.say(
            f"\nThe app's own change log says customer {CUSTOMER}'s email was changed by "
            f"[bold]{escape(str(blamed))}[/], but it was Bob's request: {verdict}."
        )

    # -- verify and dsar, when this build has them --------------------------------------------

    def _ledger_commands(self, stack: Stack) -> None:
        from scalple.cli.main import app

        commands = getattr(typer.main.get_command(app), "commands", {})
        values = {
            "ledger": str(stack.ledger),
            "ledger_dir": str(stack.ledger),
            "subject": f"customers.id={CUSTOMER}",
            "customer": CUSTOMER,
            "value": CUSTOMER,
            "identifier": CUSTOMER,
            "id": CUSTOMER,
            "kind": "customer",
        }
        for name, what in (
            ("verify", "verify the ledger"),
            ("dsar", f"everything done to customer {CUSTOMER}"),
        ):
            self.say(f"\n[bold]scalple {name}[/]: {what}")
            cmd = commands.get(name)
            if cmd is None:
                self.say(f"  skipped: this build has no `scalple {name}` command yet")
                continue
            args = _arguments_for(cmd, values)
            if args is None:
                self.say(f"  skipped: do not know how to call `scalple {name}` here")
                continue
            self._run_cli([name, *args], stack.config)

    def _run_cli(self, args: list[str], config: Path) -> None:
        # A command line is for copying: the terminal may wrap it, rich does not.
        self.out.print(f"  $ scalple {' '.join(args)}", markup=False, soft_wrap=True)
        env = {**os.environ, "SCALPLE_CONFIG": str(config)}
        if self.out.width < UNBOUNDED:  # laid out for the width left after the indent below
            env["COLUMNS"] = str(max(40, self.out.width - 4))
        proc = subprocess.run(
            [sys.executable, "-m", "scalple", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        output = (proc.stdout + proc.stderr).rstrip()
        self.out.print(hang(self.out, "    ", output))
        self.say(f"  [dim](exit status {proc.returncode})[/]")

    # -- watching: the insider act ------------------------------------------------------------

    def _history(self, stack: Stack) -> None:
        """Weeks of ordinary desk work, written to the ledger before the proxy opens it (by a
        child process: the ledger writer's threads and DuckDB stay out of the demo's own)."""
        if "live_alerts" not in cfg.BY_NAME:
            return
        proc = subprocess.run(
            [sys.executable, "-m", "scalple.watch.synthetic", str(stack.ledger),
             str(stack.sandbox.base / "keys"), str(HISTORY_DAYS), APP, *DESK],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SandboxError(f"writing the demo's history failed: {proc.stderr.strip()}")
        self.say(
            f"  [green]✓[/] {HISTORY_DAYS} working days of ordinary work by {len(DESK)} colleagues "
            "at the shop-web desk, written to the ledger (the history the watch rules compare with)"
        )

    def _watch(self, stack: Stack) -> None:
        if "live_alerts" not in cfg.BY_NAME:
            return
        self.say(
            f"\n[bold]Watching[/]: {CAROL} browses {len(BROWSED)} customers she has no case for, "
            "one lookup at a time, through the same app:"
        )
        with stack.via_proxy(APP, options=f"-c scalple.user={CAROL}") as carol:
            for i in BROWSED:
                sql = f"SELECT id, name FROM customers WHERE id = {i}"
                with _answer_within(ANSWER_SECONDS, stack, sql):
                    carol.execute(sql.encode())
        self.say(f"  {CAROL:<22} [dim]{'startup option':<15}[/] SELECT id, name FROM customers "
                 f"WHERE id = … ({len(BROWSED)} times)")  # fmt: skip
        alerts = self._alerts(stack)
        for a in alerts:
            self.say(
                f"  [bold red]ALERT[/] [bold]{escape(a['rule'])}[/] ({escape(a['severity'])}, "
                f"score {a['score']:.1f}) {escape(a['actor'])}: {escape(a['summary'])}"
            )
        if not alerts:
            self.say(f"  [yellow]no live alert within {ALERT_SECONDS} s[/]")
        else:
            self.say(
                "  Raised live by scalple serve, written to the ledger as an alert record "
                "(scalple dsar --actor shows it) and to the alerts file as JSON lines."
            )
        self.say("\n[bold]scalple anomalies[/]: the same rules over the ledger, offline")
        self._run_cli(["anomalies", "--since", "1d", "--ledger", str(stack.ledger)], stack.config)

    def _alerts(self, stack: Stack) -> list[dict[str, Any]]:
        """Carol's alerts once they settle (a rule raised again as its count grows keeps its
        highest), waiting up to ALERT_SECONDS for the first and 3 s without a new one."""
        deadline, seen, quiet = time.monotonic() + ALERT_SECONDS, 0, 0.0
        while time.monotonic() < deadline:
            lines = stack.alerts.read_text().splitlines() if stack.alerts.exists() else []
            if len(lines) != seen:
                seen, quiet = len(lines), time.monotonic() + 3
            elif seen and time.monotonic() > quiet:
                break
            time.sleep(0.2)
        latest: dict[str, dict[str, Any]] = {}
        for line in stack.alerts.read_text().splitlines() if seen else []:
            a = json.loads(line)
            if a["actor"] == CAROL:
                latest[a["rule"]] = a  # raised again only when its severity rose
        return sorted(latest.values(), key=lambda a: -a["score"])


@contextlib.contextmanager
def _answer_within(seconds: int, stack: Stack, sql: str) -> Iterator[None]:
    """Turn a statement the proxy never answers into an error naming it, not a hung demo."""

    def stalled(signum: int, frame: object) -> None:
        log = stack.sandbox.base / "scalple.log"
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise SandboxError(
            f"scalple serve did not answer {sql!r} within {seconds} s; its log ends:\n{tail}"
        )

    previous = signal.signal(signal.SIGALRM, stalled)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _cleanup_on_hangup(first: Callable[[], None]) -> Iterator[None]:
    """SIGTERM or SIGHUP (a closed terminal) unwind like Ctrl-C, so the servers are stopped and
    the temp dir removed rather than left running. `first` runs before unwinding."""

    def unwind(signum: int, frame: object) -> None:
        first()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, unwind) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _arguments_for(cmd: Any, values: Mapping[str, str]) -> list[str] | None:
    """Command-line arguments for `cmd` from `values` by parameter name; None when a required
    parameter has no value here."""
    args: list[str] = []
    for p in cmd.params:
        value = values.get(str(p.name))
        if p.param_type_name == "argument":
            if value is None:
                if p.required:
                    return None
                continue
            args.append(value)
        elif value is not None and not getattr(p, "is_flag", False):
            args += [p.opts[0], value]
        elif p.required:
            return None
    return args
