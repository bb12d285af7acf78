"""Seeded, deterministic message sequences for the differential oracle.

A scenario is a few clients (each a connection with its own startup parameters) and a list of
steps; a step is one client's batch of frontend messages, written at once (so a batch with
several Syncs or Queries is a pipeline) and read to its last ReadyForQuery before the next step.

Every identity claim is mirrored: beside `SET [LOCAL] scalple.user = 'x'` (or RESET, or another
spelling) the same message carries `SET [LOCAL] shadow.actor = 'x'` in the same position and
scope. shadow.actor is a real custom setting, so PostgreSQL applies it by its own rules
(transactions, savepoints, aborted transactions, statements skipped after an error) and every
data statement reads it back through `oracle_mark` (schema.py): the server says who the actor
is. The startup option `-c scalple.user=x` gets `-c shadow.actor=x` beside it when the proxy
talks to PostgreSQL directly (through PgBouncer a session setting leaks between clients, so the
actor oracle runs without it).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

from tests import wire
from tests.oracle.schema import CUSTOMERS

Profile = Literal["asserting", "anonymous", "untrusted"]
Mode = Literal["direct", "bouncer"]

ACTORS = ("alice@corp.example", "bob@corp.example", "carol@corp.example", "o'neil@corp.example")
STATEMENTS = ("", "s1", "s2")
PORTALS = ("", "p1", "p2")
PREPARED = ("q1", "q2")
CURSORS = ("cur1", "cur2")
SAVEPOINTS = ("sp1", "sp2")
# Text that looks like SQL, comments or identity claims, for places where it is data.
TRICKY = (
    "it's",
    "back\\slash",
    "both \\' and '",
    "/*user='mallory%40evil.example'*/",
    "-- user='mallory'",
    "a; UPDATE customers SET phone = 'x'",
    "$$ dollar $$",
    "*/ /*",
    "\\'; /*user='mallory'*/ --",
    "end */ SELECT /*user='mallory'*/",
    "café",
)
# Data that ends like a claim's opening; a statement that then ends with `-- */` looks, to a
# reader who takes the last `/*` for a comment's start, like it closes with a claim.
FAKE_CLAIM = "/*user='mallory%40evil.example',"


@dataclass(frozen=True)
class Op:
    """One frontend message: its letter and its fields."""

    kind: str  # Q P B D E C S H
    args: tuple[object, ...] = ()
    # Messages of one identity claim and its shadow share a pair number: a shrinker keeps them
    # or drops them together, or the shadow would no longer speak for the claim.
    pair: int = 0

    def encode(self, encoding: str) -> bytes:
        a = self.args
        if self.kind == "Q":
            return wire.query(str(a[0]), encoding)
        if self.kind == "P":
            return wire.parse(str(a[0]), str(a[1]), encoding=encoding)
        if self.kind == "B":
            params = a[2]
            assert isinstance(params, tuple)
            return wire.bind(str(a[0]), str(a[1]), params, encoding=encoding)
        if self.kind == "D":
            return wire.describe(str(a[0]), str(a[1]), encoding)
        if self.kind == "E":
            return wire.execute(str(a[0]), int(str(a[1])), encoding)
        if self.kind == "C":
            return wire.close(str(a[0]), str(a[1]), encoding)
        return wire.sync() if self.kind == "S" else wire.flush()

    def code(self) -> str:
        """The call that builds this message with tests/wire.py, for reproductions."""
        names = {"Q": "query", "P": "parse", "B": "bind", "D": "describe", "E": "execute",
                 "C": "close", "S": "sync", "H": "flush"}  # fmt: skip
        return f"wire.{names[self.kind]}({', '.join(repr(x) for x in self.args)})"

    def sql(self) -> str | None:
        if self.kind == "Q":
            return str(self.args[0])
        if self.kind == "P":
            return str(self.args[1])
        return None


@dataclass(frozen=True)
class Client:
    profile: Profile
    startup_actor: str | None = None
    scs: bool | None = None  # standard_conforming_strings in the startup packet; None: not sent
    encoding: str | None = None  # client_encoding in the startup packet

    def role(self, mode: Mode) -> str:
        if self.profile != "untrusted":
            return "app_user"
        # PgBouncer signs in only roles with a password in its userlist.
        return "trust_user" if mode == "direct" else "md5_user"

    def startup(self, mode: Mode, application_name: str) -> dict[str, str]:
        params = {"application_name": application_name}
        if self.scs is not None:
            params["standard_conforming_strings"] = "on" if self.scs else "off"
        if self.encoding is not None:
            params["client_encoding"] = self.encoding
        if self.startup_actor is not None:
            settings = {"scalple.user": self.startup_actor}
            if mode == "direct":
                settings["shadow.actor"] = self.startup_actor
            params["options"] = wire.options(settings)
        return params


@dataclass(frozen=True)
class Step:
    client: int
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class Scenario:
    seed: int
    index: int
    clients: tuple[Client, ...]
    steps: tuple[Step, ...]
    pii: frozenset[str] = frozenset()  # e-mail addresses and phone numbers the steps carry

    def without(self, keep: Callable[[int, Step], bool]) -> Scenario:
        steps = tuple(s for i, s in enumerate(self.steps) if keep(i, s))
        return Scenario(self.seed, self.index, self.clients, steps, self.pii)


# --- generation -------------------------------------------------------------------------------


@dataclass
class _Conn:
    """What the generator believes about one client, to make mostly sensible moves."""

    client: Client
    scs: bool
    in_tx: bool = False
    savepoints: list[str] = field(default_factory=list)
    statements: set[str] = field(default_factory=set)
    prepared: set[str] = field(default_factory=set)


class Generator:
    def __init__(self, seed: int, index: int) -> None:
        self.rng = random.Random(f"scalple-oracle:{seed}:{index}")
        self.seed, self.index = seed, index
        self.markers = 0
        self.pairs = 0
        self.pii: set[str] = set()

    # --- values and literals ---

    def marker(self) -> str:
        self.markers += 1
        return f"k{self.markers}"

    def mark(self) -> str:
        return f"(SELECT oracle_mark('{self.marker()}'))"

    def email(self) -> str:
        if self.rng.random() < 0.5:
            value = f"c{self.rng.randint(1, CUSTOMERS)}@example.com"
        else:
            name = self.rng.choice(("ann", "bo", "cy", "dee"))
            value = f"{name}{self.rng.randint(1, 99)}@example.org"
        self.pii.add(value)
        return value

    def phone(self) -> str:
        value = f"+1 555 01{self.rng.randint(0, 99):02d}"
        self.pii.add(value)
        return value

    def lit(self, value: str, conn: _Conn, styles: tuple[str, ...] = ("std", "E", "dollar")) -> str:
        """`value` as a string literal the server reads back exactly, in a random style."""
        style = self.rng.choice(styles)
        quote_esc = self.rng.choice(("\\'", "''"))
        if style == "dollar" and "$q$" not in value and not value.endswith("$"):
            return f"$q${value}$q$"
        if style == "E" or not conn.scs:
            prefix = "E" if style == "E" else ""
            return f"{prefix}'" + value.replace("\\", "\\\\").replace("'", quote_esc) + "'"
        return "'" + value.replace("'", "''") + "'"

    @staticmethod
    def ident(value: str) -> str:
        return '"' + value.replace('"', '""') + '"'

    # --- statements ---

    def data(
        self,
        conn: _Conn,
        params: bool = False,
        error: bool = False,
        select: bool = False,
        comment: bool = True,
    ) -> tuple[str, tuple[str, ...]]:
        """A statement on customers/orders that calls oracle_mark; `$n` parameters if asked,
        a failing one if `error`, a query only if `select`, no identity comment unless
        `comment`."""
        args: list[str] = []
        rng = self.rng

        def v(value: object, cast: str = "") -> str:
            if params and rng.random() < 0.7:
                args.append(str(value))
                return f"${len(args)}{cast}"
            return self.lit(value, conn) if isinstance(value, str) else str(value)

        cid, mark = rng.randint(1, CUSTOMERS), self.mark()
        shapes: list[Callable[[], str]]
        if error:
            shapes = [
                lambda: f"SELECT 1 / (id - id) FROM customers WHERE id = {v(cid)} AND {mark}",
                lambda: (
                    f"INSERT INTO customers (id, email, phone) SELECT {v(cid, '::int')}, "
                    f"{v(self.email(), '::text')}, {v(self.phone(), '::text')} WHERE {mark}"
                ),
                lambda: f"SELECT email::int FROM customers WHERE id = {v(cid)} AND {mark}",
                lambda: f"SELEC email FROM customers WHERE id = {cid} AND {mark}",
                lambda: f"SELECT nosuch FROM customers WHERE id = {cid} AND {mark}",
            ]
        else:
            shapes = [
                lambda: f"SELECT email, phone FROM customers WHERE id = {v(cid)} AND {mark}",
                lambda: (
                    f"SELECT id, email FROM customers WHERE id <= {v(cid)} AND {mark} ORDER BY id"
                ),
                lambda: (
                    f"SELECT id, phone FROM customers WHERE email = {v(self.email())} AND {mark}"
                ),
                lambda: (
                    "SELECT c.email, o.amount FROM customers c JOIN orders o ON "
                    f"o.customer_id = c.id WHERE c.id = {v(cid)} AND {mark}"
                ),
                lambda: (
                    f"UPDATE customers SET phone = {v(self.phone())} WHERE id = {v(cid)} AND {mark}"
                ),
                lambda: (
                    f"UPDATE customers SET email = {v(self.email())} WHERE id = {v(cid)} AND {mark}"
                ),
                lambda: (
                    "INSERT INTO orders (id, customer_id, amount, note) SELECT "
                    f"coalesce(max(id), 0) + 1, {v(cid, '::int')}, "
                    f"{v(rng.randint(1, 999), '::int')}, {v(rng.choice(TRICKY), '::text')} "
                    f"FROM orders WHERE {mark}"
                ),
                lambda: f"DELETE FROM orders WHERE id = {v(rng.randint(1, 80))} AND {mark}",
                lambda: (
                    f"SELECT {self.lit(rng.choice(TRICKY), conn)} AS note, email "
                    f"FROM customers WHERE id = {v(cid)} AND {mark}"
                ),
                lambda: (
                    f"SELECT email AS {self.ident(rng.choice(TRICKY))} FROM customers "
                    f"WHERE id = {v(cid)} AND {mark}"
                ),
                lambda: (
                    f"SELECT {self.lit(FAKE_CLAIM, conn)} AS note, email FROM customers "
                    f"WHERE id = {v(cid)} AND {mark} -- */\n"
                ),
                lambda: (
                    f"SELECT email AS {self.ident(FAKE_CLAIM)} FROM customers "
                    f"WHERE id = {v(cid)} AND {mark} -- */\n"
                ),
                lambda: f"SELECT id FROM customers WHERE email ~ {v(self.email())} AND {mark}",
                lambda: (
                    f"SELECT id FROM customers WHERE (email, phone) = ({v(self.email())}, "
                    f"{v(self.phone())}) AND {mark}"
                ),
                lambda: (
                    f"UPDATE customers SET (email, phone) = ({v(self.email(), '::text')}, "
                    f"{v(self.phone(), '::text')}) WHERE id = {v(cid)} AND {mark}"
                ),
                lambda: (
                    f"WITH v(e) AS (VALUES ({v(self.email(), '::text')})) SELECT c.id FROM "
                    f"customers c, v WHERE c.email = v.e AND {mark}"
                ),
                lambda: (
                    f"SELECT id FROM customers WHERE email = (SELECT "
                    f"{v(self.email(), '::text')}) AND {mark}"
                ),
                lambda: (
                    "SELECT id FROM customers WHERE to_jsonb(email) = "
                    f"{self.lit(json.dumps(self.email()), conn, ('std',))}::jsonb AND {mark}"
                ),
            ]
        if select:  # the first four shapes are queries (a cursor needs one)
            shapes = shapes[:4]
        sql = rng.choice(shapes)()
        return (self.comment(sql, conn) if comment else sql), tuple(args)

    def comment(self, sql: str, conn: _Conn) -> str:
        """Now and then, a sqlcommenter identity comment before or after the statement (never
        from an `anonymous` client: it is the one that never says who it is)."""
        r = self.rng.random()
        if r < 0.12 and conn.client.profile != "anonymous":
            who = quote(self.rng.choice(ACTORS), safe="")
            claim = f"/*user='{who}'*/"
            return f"{claim} {sql}" if self.rng.random() < 0.5 else f"{sql} {claim}"
        if r < 0.16:
            return f"/* plain comment */ {sql}"
        return sql

    def claim(self, conn: _Conn, form: str = "") -> list[tuple[str, tuple[str, ...]]]:
        """An identity claim and its shadow, as two statements to run side by side."""
        actor = self.lit(self.rng.choice(ACTORS), conn, ("std",))
        forms = {
            "set": "SET {g} = {v}",
            "to": "SET {g} TO {v}",
            "session": "SET SESSION {g} = {v}",
            "local": "SET LOCAL {g} = {v}",
            "reset": "RESET {g}",
            "default": "SET {g} TO DEFAULT",
            "local_default": "SET LOCAL {g} TO DEFAULT",
        }
        form = form or self.rng.choice(list(forms))
        pair = [forms[form].format(g=g, v=actor) for g in ("scalple.user", "shadow.actor")]
        return [(s, ()) for s in pair]

    def spelling(self, conn: _Conn, extended: bool) -> list[tuple[str, tuple[str, ...]]]:
        """The identity set by a spelling an interception may miss (issue 10, class 5)."""
        name = self.rng.choice(ACTORS)
        actor = self.lit(name, conn, ("std",))
        forms = [
            ('SET scalple."user" = {v}', 'SET shadow."actor" = {v}'),
            ('SET "scalple"."user" = {v}', 'SET "shadow"."actor" = {v}'),
            ('SET "scalple.user" = {v}', 'SET "shadow.actor" = {v}'),
            ("SELECT set_config('scalple.' || 'user', {v}, false) WHERE {m}",
             "SELECT set_config('shadow.' || 'actor', {v}, false) WHERE {m}"),
            ("SELECT set_config('scalple.user', {v}, true) WHERE {m}",
             "SELECT set_config('shadow.actor', {v}, true) WHERE {m}"),
        ]  # fmt: skip
        if conn.scs:
            forms.append(('SET scalple.U&"\\0075ser" = {v}', 'SET shadow.U&"\\0061ctor" = {v}'))
        if extended and self.rng.random() < 0.4:
            sql = "SELECT set_config($1, $2, false) WHERE {m}"
            return [
                (sql.format(m=self.mark()), ("scalple.user", name)),
                (sql.format(m=self.mark()), ("shadow.actor", name)),
            ]
        pick = self.rng.choice(forms)
        return [(f.format(v=actor, m=self.mark()), ()) for f in pick]

    def tx(self, conn: _Conn) -> str:
        rng = self.rng
        if not conn.in_tx:
            conn.in_tx, conn.savepoints = True, []
            return rng.choice(("BEGIN", "BEGIN", "START TRANSACTION"))
        r = rng.random()
        if r < 0.3:
            sp = rng.choice(SAVEPOINTS)
            conn.savepoints.append(sp)
            return f"SAVEPOINT {sp}"
        if r < 0.55:
            sp = rng.choice(conn.savepoints or list(SAVEPOINTS))
            return rng.choice((f"ROLLBACK TO {sp}", f"ROLLBACK TO SAVEPOINT {sp}"))
        if r < 0.65:
            sp = rng.choice(conn.savepoints or list(SAVEPOINTS))
            if sp in conn.savepoints:
                conn.savepoints.remove(sp)
            return f"RELEASE SAVEPOINT {sp}"
        conn.in_tx, conn.savepoints = False, []
        return rng.choice(("COMMIT", "ROLLBACK", "END", "ABORT", "COMMIT"))

    def prepared(self, conn: _Conn) -> str:
        rng = self.rng
        name = rng.choice(PREPARED)
        r = rng.random()
        if name not in conn.prepared or r < 0.15:
            conn.prepared.add(name)
            return f"PREPARE {name} AS {self.data(conn, comment=False)[0]}"
        if r < 0.85:
            return self.comment(f"EXECUTE {name}", conn)
        conn.prepared.discard(name)
        return rng.choice((f"DEALLOCATE {name}", f"DEALLOCATE PREPARE {name}", "DEALLOCATE ALL"))

    def cursor(self, conn: _Conn) -> str:
        rng = self.rng
        name = rng.choice(CURSORS)
        r = rng.random()
        if r < 0.35:
            hold = rng.random() < 0.6
            query = self.data(conn, select=True, comment=False)[0]
            return (
                f"DECLARE {name} {rng.choice(('', 'SCROLL ', 'NO SCROLL '))}CURSOR "
                f"{'WITH HOLD ' if hold else ''}FOR {query}"
            )
        if r < 0.85:
            return self.comment(
                f"FETCH {rng.choice(('1', '2', 'NEXT', 'ALL', 'FORWARD 1'))} FROM {name}", conn
            )
        return rng.choice((f"CLOSE {name}", f"CLOSE {name}", "CLOSE ALL"))

    def statement(self, conn: _Conn) -> list[tuple[str, tuple[str, ...]]]:
        """One unit of a simple-query message: one statement, or a claim and its shadow."""
        r = self.rng.random()
        asserting = conn.client.profile == "asserting"
        if r < 0.42:
            return [(self.data(conn)[0], ())]
        if r < 0.50:
            return [(self.data(conn, error=True)[0], ())]
        if r < 0.64:
            return [(self.tx(conn), ())]
        untrusted = conn.client.profile == "untrusted"
        if (r < 0.66 and untrusted) or (r < 0.78 and asserting):  # the untrusted, to be refused
            return self.claim(conn)
        if r < 0.78:
            return [(self.data(conn)[0], ())]
        if r < 0.84:
            return [(self.prepared(conn), ())]
        if r < 0.91:
            return [(self.cursor(conn), ())]
        if r < 0.95 and asserting:
            return self.spelling(conn, extended=False)
        if r < 0.97 and not conn.in_tx:
            return [(self.rng.choice(("DISCARD ALL", "RESET ALL")), ())]
        return [(self.data(conn)[0], ())]

    # --- messages ---

    def simple(self, conn: _Conn, units: int) -> tuple[Op, ...]:
        stmts: list[str] = []
        for _ in range(units):
            stmts += [s for s, _ in self.statement(conn)]
        sep = self.rng.choice(("; ", ";\n", ";", " ; "))
        text = sep.join(stmts) + self.rng.choice(("", "", ";"))
        return (Op("Q", (text,)),)

    def unit(self, conn: _Conn) -> list[Op]:
        """Extended-protocol execution of one statement (or a claim pair), with name games."""
        rng = self.rng
        r = rng.random()
        if r < 0.15 and conn.client.profile == "asserting":
            pairs = self.claim(conn) if r < 0.11 else self.spelling(conn, extended=True)
            ops: list[Op] = []
            self.pairs += 1
            for sql, params in pairs:
                ops += [
                    Op("P", ("", sql), self.pairs),
                    Op("B", ("", "", params), self.pairs),
                    Op("E", ("", 0), self.pairs),
                ]
            return ops
        if r < 0.25:  # a name this connection may never have made (another client's, pooled)
            name = rng.choice(STATEMENTS[1:])
            ops = [Op("B", ("", name, ())), Op("E", ("", 0))]
            return ops if rng.random() < 0.7 else [Op("D", ("S", name)), *ops]
        if r < 0.33:
            return [Op("C", (rng.choice("SP"), rng.choice(STATEMENTS + PORTALS)))]
        if r < 0.45:
            sql, params = (self.tx(conn), ()) if r < 0.40 else (self.cursor(conn), ())
        else:
            sql, params = self.data(conn, params=True, error=rng.random() < 0.15)
        name = rng.choice(STATEMENTS)
        portal = rng.choice(PORTALS) if conn.in_tx else ""
        ops = []
        if name == "" or name not in conn.statements or rng.random() < 0.3:
            ops.append(Op("P", (name, sql)))  # re-Parse of an existing name: 42P05
            if name:
                conn.statements.add(name)
        ops.append(Op("B", (portal, name, params)))
        if rng.random() < 0.25:
            ops.append(Op("D", ("P", portal)))
        limit = 1 if rng.random() < 0.2 else 0
        ops.append(Op("E", (portal, limit)))
        if limit:
            ops.append(Op("E", (portal, 0)))
        if name and rng.random() < 0.2:
            conn.statements.discard(name)
            ops.append(Op("C", ("S", name)))
        return ops

    def pipeline(self, conn: _Conn) -> tuple[Op, ...]:
        ops: list[Op] = []
        for _ in range(self.rng.choice((1, 1, 2, 3))):
            for _ in range(self.rng.randint(1, 3)):
                ops += self.unit(conn)
                if self.rng.random() < 0.1:
                    ops.append(Op("H"))
            ops.append(Op("S"))
        return tuple(ops)

    def step(self, conn: _Conn) -> tuple[Op, ...]:
        r = self.rng.random()
        if conn.in_tx and r < 0.2:  # end it: after an error nothing else would run
            conn.in_tx, conn.savepoints = False, []
            return (Op("Q", (self.rng.choice(("ROLLBACK", "COMMIT")),)),)
        if r < 0.35:
            return self.simple(conn, 1)
        if r < 0.6:
            return self.simple(conn, self.rng.randint(2, 4))
        return self.pipeline(conn)

    # --- scenario ---

    def client(self, first: bool) -> Client:
        rng = self.rng
        profile: Profile = (
            "asserting"
            if first
            else rng.choice(("asserting", "asserting", "anonymous", "untrusted"))
        )
        actor = rng.choice(ACTORS) if profile == "asserting" and rng.random() < 0.4 else None
        scs = rng.choice((None, None, None, True, False, False))
        encoding = rng.choice((None,) * 8 + ("UTF8", "LATIN1"))
        return Client(profile, actor, scs, encoding)

    def scenario(self) -> Scenario:
        rng = self.rng
        clients = tuple(self.client(i == 0) for i in range(rng.choice((1, 2, 2, 3))))
        conns = [_Conn(c, c.scs is not False) for c in clients]
        steps: list[Step] = []
        for i, conn in enumerate(conns):
            if rng.random() < 0.1:  # switch standard_conforming_strings, alone in its batch
                conn.scs = not conn.scs
                value = "on" if conn.scs else "off"
                steps.append(Step(i, (Op("Q", (f"SET standard_conforming_strings = {value}",)),)))
            if (
                conn.client.profile == "asserting"
                and not conn.client.startup_actor
                and rng.random() < 0.8  # most say who they are before anything else
            ):
                pair = "; ".join(sql for sql, _ in self.claim(conn, form="set"))
                steps.append(Step(i, (Op("Q", (pair,)),)))
        current = 0
        for _ in range(rng.randint(6, 18)):
            if rng.random() < 0.35:
                current = rng.randrange(len(conns))
            steps.append(Step(current, self.step(conns[current])))
        return Scenario(self.seed, self.index, clients, tuple(steps), frozenset(self.pii))


def scenario(seed: int, index: int) -> Scenario:
    return Generator(seed, index).scenario()
