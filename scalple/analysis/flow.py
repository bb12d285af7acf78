"""Pass 3: where each literal and parameter can go, so that one is kept in clear only when
analysis proves it meets no PII column.

Values meet inside one scalar expression, an *atom*: the operands of a comparison, a function's
arguments, an assignment, a CASE's results. They travel through query outputs, *slots*: a
projection, a VALUES column, a derived table's, CTE's or RETURNING list's column, the branches of
a set operation, a subquery compared with a column, an INSERT's target column. Boolean
connectives, clauses and type modifiers separate atoms. Two union-find sets record it: `meet` (the
value can meet these columns through some expression) and `same` (the value is the column's
value: compared with it, assigned or inserted), which is what makes a subject hash sound.

One pass over the tree, an explicit stack (no recursion), and near-constant union-find steps:
the work is linear in the size of the tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from sqlglot import exp

from scalple.analysis.bind import Binding, Names, ident

UNSURE: Final = "?"  # a column (or destination) analysis could not name
LITERALS: Final = (
    exp.Literal, exp.RawString, exp.ByteString, exp.HexString, exp.BitString,
    exp.UnicodeString, exp.National,
)  # fmt: skip
_COMPARE: Final = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike,
    exp.NullSafeEQ, exp.NullSafeNEQ, exp.SimilarTo,
)  # fmt: skip
_QUERY: Final = (exp.Select, exp.SetOperation, exp.Values, exp.Subquery)
_DML: Final = (exp.Insert, exp.Update, exp.Delete, exp.Merge)
# Nodes that hold values without combining them: their children start new atoms.
_STRUCTURE: Final = (
    exp.Where, exp.Having, exp.Qualify, exp.Group, exp.Order, exp.Ordered, exp.Limit,
    exp.Offset, exp.Fetch, exp.From, exp.Join, exp.With, exp.CTE, exp.TableAlias, exp.Table,
    exp.Schema, exp.Returning, exp.OnConflict, exp.Whens, exp.When, exp.Connector, exp.Not,
    exp.Lateral, exp.Distinct, exp.Lock, exp.Into, exp.Command, exp.Copy,
)  # fmt: skip

# A column that may come from more derived sources than this is not followed into each
# (that would grow with sources x columns): values meeting it are masked as unsure.
_MAX_MATCHES: Final = 32
Key = object  # a union-find element: id(node) for atoms and values, tuples for slots


@dataclass(frozen=True, slots=True)
class Reach:
    """What one value can meet (qualified columns, `schema.table.*`, or UNSURE), and the
    columns it is the value of."""

    meets: tuple[str, ...]
    same: tuple[str, ...]


@dataclass
class Flow:
    literals: list[tuple[int, int, Reach]] = field(default_factory=list)  # (start, end, reach)
    params: list[tuple[int, Reach]] = field(default_factory=list)  # ($n, reach), per occurrence
    loose: list[Reach] = field(default_factory=list)  # values sqlglot kept no position for
    unvisited: list[int] = field(default_factory=list)  # starts of literals the walk missed


class _Sets:
    """Union-find with path halving; labels are attached to roots at the end."""

    def __init__(self) -> None:
        self.parent: dict[Key, Key] = {}

    def find(self, x: Key) -> Key:
        parent = self.parent
        while True:
            p = parent.get(x, x)
            if p == x:
                return x
            g = parent.get(p, p)
            parent[x] = g
            x = g

    def union(self, a: Key, b: Key) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


@dataclass(frozen=True, slots=True)
class _Source:
    table: str | None  # a base relation, or
    node: exp.Expression | None  # the query, VALUES or function whose outputs it is
    names: tuple[str, ...] | None  # its output names, None if unknown


@dataclass
class _Scope:
    sources: dict[str, _Source]
    parent: _Scope | None
    ctes: dict[str, exp.CTE] = field(default_factory=dict)
    outputs: dict[str, Key] = field(default_factory=dict)  # a select list's aliases
    by_name: dict[str, list[_Source]] | None = None  # derived sources by output name

    def cte(self, name: str) -> exp.CTE | None:
        s: _Scope | None = self
        while s is not None:
            if name in s.ctes:
                return s.ctes[name]
            s = s.parent
        return None

    def derived(self, name: str) -> list[_Source]:
        if self.by_name is None:
            self.by_name = {}
            for src in self.sources.values():
                if src.node is not None:
                    for n in src.names if src.names is not None else ("",):
                        self.by_name.setdefault(n, []).append(src)
        return self.by_name.get(name, []) + self.by_name.get("", [])


_Item = tuple[exp.Expression, "Key | None", "Key | None", _Scope]


def _unwrap(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Subquery | exp.Lateral) and isinstance(node.this, exp.Expression):
        node = node.this
    return node


def _core(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Alias | exp.Paren | exp.Cast) and isinstance(
        node.this, exp.Expression
    ):
        node = node.this
    return node


def _children(node: exp.Expression) -> Iterator[tuple[str, exp.Expression]]:
    for key, value in node.args.items():
        if isinstance(value, exp.Expression):
            yield key, value
        elif isinstance(value, list):
            for v in value:
                if isinstance(v, exp.Expression):
                    yield key, v


def _is_star(node: exp.Expression) -> bool:
    return isinstance(node, exp.Star) or (
        isinstance(node, exp.Column) and isinstance(node.this, exp.Star)
    )


class _Facts:
    """Per node, from one post-order pass: how many columns it holds outside nested queries
    (0, 1 or 2 for "more"), the one column when there is one, and whether it holds a query."""

    def __init__(self, tree: exp.Expression) -> None:
        self.cols: dict[int, int] = {}
        self.col: dict[int, exp.Column] = {}
        self.query: set[int] = set()
        self.literals: list[exp.Expression] = []  # every literal with a position
        nodes = list(tree.walk(bfs=False))
        for node in reversed(nodes):  # children before parents
            key = id(node)
            if isinstance(node, LITERALS) and "start" in node.meta:
                self.literals.append(node)
            if isinstance(node, exp.Column):
                self.cols[key] = self.cols.get(key, 0) + 1
                self.col[key] = node
            parent = node.parent
            if parent is None:
                continue
            pkey = id(parent)
            if isinstance(node, _QUERY):
                self.query.add(pkey)
                continue
            if key in self.query:
                self.query.add(pkey)
            n = self.cols.get(key, 0)
            if n:
                total = self.cols.get(pkey, 0) + n
                self.cols[pkey] = min(total, 2)
                if total == 1:
                    self.col[pkey] = self.col[key]

    def column(self, node: exp.Expression) -> exp.Column | None:
        """The one column `node` is about (`email`, `lower(email)`), if it holds no query."""
        key = id(node)
        if self.cols.get(key, 0) == 1 and key not in self.query:
            return self.col.get(key)
        return None

    def value(self, node: exp.Expression) -> bool:
        """`node` holds no column: it is a value (literals, parameters, a subquery's result)."""
        return self.cols.get(id(node), 0) == 0


class _Flow:
    def __init__(self, binding: Binding, names: Names) -> None:
        self.b = binding
        self.names = names
        self.meet = _Sets()
        self.same = _Sets()
        self.meet_labels: list[tuple[Key, str]] = []
        self.same_labels: list[tuple[Key, str]] = []
        self.values: list[tuple[exp.Expression, Key]] = []  # literal or parameter, its key
        self.loose: list[Key] = []
        self.inserts = {id(node): (table, cols) for node, table, cols in binding.inserts}
        self.lone_table = next(iter(binding.tables)) if len(binding.tables) == 1 else None
        self.user_functions = names.user_functions
        self.stack: list[_Item] = []
        self.col_keys: dict[int, Key] = {}
        self.all_keys: set[int] = set()
        self.arity_memo: dict[int, int | None] = {}
        self.facts: _Facts

    # --- union-find helpers ---------------------------------------------------------------

    def meets(self, a: Key, b: Key) -> None:
        self.meet.union(a, b)

    def is_same(self, a: Key, b: Key) -> None:
        self.meet.union(a, b)
        self.same.union(a, b)

    def label(self, key: Key, column: str, same: bool = False) -> None:
        self.meet_labels.append((key, column))
        if same:
            self.same_labels.append((key, column))

    # --- slots ----------------------------------------------------------------------------

    def arity(self, q: exp.Expression) -> int | None:
        """How many outputs `q` has, or None when not known (a `*`, a function)."""
        q = _unwrap(q)
        if id(q) in self.arity_memo:
            return self.arity_memo[id(q)]
        chain = []  # a set operation's arity is its leftmost branch's: walk there, no recursion
        while isinstance(q, exp.SetOperation) and isinstance(q.this, exp.Expression):
            chain.append(id(q))
            q = _unwrap(q.this)
        n = self.arity_memo[id(q)] if id(q) in self.arity_memo else _arity(q)
        for k in (*chain, id(q)):
            self.arity_memo[k] = n
        return n

    def slot(self, q: exp.Expression, i: int) -> Key:
        q = _unwrap(q)
        if self.arity(q) is None:
            return ("s*", id(q))
        return ("s", id(q), i)

    def all_slots(self, q: exp.Expression) -> Key:
        """One key that meets every output of `q` (joining them: used when positions are lost)."""
        q = _unwrap(q)
        key = ("a", id(q))
        if id(q) not in self.all_keys:
            self.all_keys.add(id(q))
            n = self.arity(q)
            for i in range(n) if n is not None else ():
                self.is_same(key, self.slot(q, i))
            if n is None:
                self.is_same(key, ("s*", id(q)))
        return key

    # --- the walk -------------------------------------------------------------------------

    def run(self, tree: exp.Expression, names: Names) -> None:
        self.facts = _Facts(tree)
        self.push(tree, None, None, _Scope({}, None))
        while self.stack:
            node, atom, eq, scope = self.stack.pop()
            self.visit(node, atom, eq, scope)

    def push(self, node: exp.Expression, atom: Key | None, eq: Key | None, scope: _Scope) -> None:
        self.stack.append((node, atom, eq, scope))

    def visit(self, node: exp.Expression, atom: Key | None, eq: Key | None, scope: _Scope) -> None:
        kind = _KINDS.get(type(node))
        if kind is None:
            kind = _KINDS[type(node)] = _kind(node)
        if kind == _NAME:
            return
        if kind == _QUERYLIKE:
            if atom is not None:  # a subquery inside an expression: its outputs meet it
                self.meets(atom, self.all_slots(node))
                if eq is not None and isinstance(_unwrap(node), exp.Query):
                    self.is_same(eq, self.slot(node, 0))
            self.query(node, scope)
            return
        if kind == _STRUCTURAL:
            for _, child in _children(node):
                self.push(child, None, None, scope)
            return
        atom = id(node) if atom is None else atom
        if kind == _COLUMN:
            self.column(node, atom, eq, scope)  # type: ignore[arg-type]
        elif kind == _LITERAL:
            if not isinstance(node.parent, exp.Parameter):
                self.value(node, atom, eq)
        elif kind == _PARAMETER:
            if node.this is not None and node.name.isdigit():
                self.value(node, atom, eq)
        elif kind == _COMPARISON:
            self.compare(node, atom, scope)
        elif kind == _NO_COLUMNS:
            # Type modifiers (varchar(20)) and settings (SET x = 5) hold no column's values.
            for lit in node.find_all(*LITERALS, exp.Parameter):
                if not isinstance(lit.parent, exp.Parameter):
                    self.value(lit, id(lit), None)
        elif kind == _JSON_PATH:  # `->'key'`: its keys were literals, now unplaced
            self.loose += [atom] * max(1, len(node.expressions) - 1)
        elif kind == _VAR:  # date_trunc('month', ...): the unit was a literal
            self.loose.append(atom)
        else:
            if kind == _CALL and node.name.lower() in self.user_functions:
                self.label(atom, UNSURE)  # its body may put its arguments anywhere
            for key, child in _children(node):
                if key == "this" and kind == _IF and _case_has_no_operand(node):  # type: ignore[arg-type]
                    self.push(child, None, None, scope)  # CASE WHEN <condition>: a boolean
                else:
                    self.push(child, atom, eq, scope)

    def value(self, node: exp.Expression, atom: Key, eq: Key | None) -> None:
        key = id(node)
        self.values.append((node, key))
        self.meets(key, atom)
        if eq is not None:
            self.is_same(key, eq)

    # --- comparisons ----------------------------------------------------------------------

    def compare(self, node: exp.Expression, atom: Key, scope: _Scope) -> None:
        this = node.this
        whole: set[int] = set()  # the operands as written (a tuple may go element by element)
        pushed: set[int] = set()
        if isinstance(node, exp.In):
            pairs = [(this, v) for v in node.expressions]
            query = node.args.get("query")
            if query is not None:
                whole.add(id(query))
                self.compare_query(this, query, scope)
                self.push(query, atom, None, scope)
        elif isinstance(node, exp.Between):
            pairs = [(this, node.args["low"]), (this, node.args["high"])]
        else:
            pairs = [(this, node.expression)]
        own = atom == id(node)  # the comparison is its own atom: a row compares by position
        for left, right in pairs:
            whole.update((id(left), id(right)))
            for j, a, b in _rows(left, right):
                where = ("row", id(node), j) if own and j is not None else atom
                for side, other in ((a, b), (b, a)):
                    if id(side) not in pushed:
                        pushed.add(id(side))
                        self.push(side, where, self.side_eq(side, other, scope), scope)
        for _, child in _children(node):  # ESCAPE and the like
            if id(child) not in whole and id(child) not in pushed:
                self.push(child, atom, None, scope)

    def side_eq(self, side: exp.Expression, other: exp.Expression, scope: _Scope) -> Key | None:
        """The key `side`'s values are the same as: the other side's column, when one side is
        about one column and this side holds none."""
        col = self.facts.column(other)
        if col is not None and self.facts.value(side):
            return self.col_key(col, scope)
        mine, theirs = _core(side), _core(other)
        if isinstance(mine, exp.Column) and isinstance(theirs, exp.Column):
            return self.col_key(theirs, scope)  # col = col: the same values
        return None

    def compare_query(self, this: exp.Expression, query: exp.Expression, scope: _Scope) -> None:
        targets = this.expressions if isinstance(this, exp.Tuple) else [this]
        for i, target in enumerate(targets):
            col = self.facts.column(target)
            if col is not None:
                self.is_same(self.col_key(col, scope), self.slot(query, i))

    # --- columns --------------------------------------------------------------------------

    def column(self, col: exp.Column, atom: Key, eq: Key | None, scope: _Scope) -> None:
        key = self.col_key(col, scope)
        self.meets(atom, key)
        if eq is not None:
            self.is_same(eq, key)

    def col_key(self, col: exp.Column, scope: _Scope) -> Key:
        key = self.col_keys.get(id(col))
        if key is None:
            key = self._col_key(col, scope)
            self.col_keys[id(col)] = key
        return key

    def _col_key(self, col: exp.Column, scope: _Scope) -> Key:
        key: Key = ("c", id(col))
        qualifier = ident(col.args.get("table")) if col.args.get("table") else ""
        if isinstance(col.this, exp.Star):
            for src in self.sources(scope, qualifier):
                self.star_source(key, src)
            return key
        bound = self.b.of(col)
        for q in bound:
            self.label(key, q, same=True)
        name = ident(col.this)
        if not qualifier:
            # A whole-row reference (`to_jsonb(u)`, `u::text`) unless the catalog says the
            # name is a real column.
            whole = [] if self.real(bound) else self.sources(scope, name, derived=False)
            for src in whole:
                self.star_source(key, src)
            if bound or whole:
                return key
        elif bound:
            return key
        found = self.derived_ref(scope, qualifier, name)
        if found is None:
            lone = self.lone_table if not qualifier and not _in_query(scope) else None
            # Outside any query (ALTER TABLE t ... CHECK (col > 0)): the statement's one table.
            self.label(key, f"{lone}.{name}" if lone else UNSURE, same=bool(lone))
            return key
        for k in found:
            self.is_same(key, k)
        return key

    def real(self, bound: tuple[str, ...]) -> bool:
        catalog = self.names.catalog
        if catalog is None or not bound:
            return False
        for q in bound:
            table, _, name = q.rpartition(".")
            cols = self.names.columns(table)
            if cols is None or name not in cols:
                return False
        return True

    def sources(self, scope: _Scope, alias: str, derived: bool = True) -> list[_Source]:
        """The sources in reach named `alias` ("" for every source of the innermost scope)."""
        s: _Scope | None = scope
        while s is not None:
            if not alias and s.sources:
                return list(s.sources.values())
            src = s.sources.get(alias) if alias else None
            if src is not None:
                return [src] if derived or src.table is not None else []
            s = s.parent
        return []

    def star_source(self, key: Key, src: _Source) -> None:
        if src.table is not None:
            self.label(key, f"{src.table}.*")
        elif src.node is not None:
            self.is_same(key, self.all_slots(src.node))

    def derived_ref(self, scope: _Scope, qualifier: str, name: str) -> list[Key] | None:
        s: _Scope | None = scope
        while s is not None:
            if qualifier:
                src = s.sources.get(qualifier)
                if src is not None:
                    return self.source_column(src, name) if src.node is not None else None
            else:
                matches = s.derived(name)
                if len(matches) > _MAX_MATCHES:
                    return None  # too many sources that may hold it: unsure
                found = [k for src in matches for k in self.source_column(src, name)]
                if name in s.outputs:
                    found.append(s.outputs[name])
                if found:
                    return found
            s = s.parent
        return None

    def source_column(self, src: _Source, name: str) -> list[Key]:
        assert src.node is not None
        if src.names is not None and name in src.names:
            return [self.slot(src.node, src.names.index(name))]
        return [self.all_slots(src.node)]

    # --- queries and statements -----------------------------------------------------------

    def query(self, node: exp.Expression, outer: _Scope) -> None:
        scope = _Scope({}, outer, self.ctes(node, outer))
        if isinstance(node, exp.Subquery | exp.Lateral):
            inner = node.this
            if isinstance(inner, exp.Expression):
                self.push(inner, None, None, outer)
            return
        if isinstance(node, exp.Values):
            self.values_rows(node, scope)
            return
        if isinstance(node, exp.SetOperation):
            self.set_operation(node, scope)
        rest = []
        for key, child in _children(node):  # sources first: the select list may say `*`
            if key in ("from_", "joins", "using") or (key == "this" and isinstance(node, _DML)):
                self.source(child, scope)
            elif key != "with_" and not (key == "expressions" and isinstance(node, exp.Select)):
                rest.append((key, child))
        if isinstance(node, exp.Select):
            self.outputs(node, scope)
        for key, child in rest:
            if key == "returning":
                self.outputs(node, scope, child.expressions)
            elif key == "whens" and isinstance(node, exp.Merge):
                self.merge_whens(node, child, scope)
            else:
                self.push(child, None, None, scope)
        if isinstance(node, exp.Insert):
            self.insert(node)

    def ctes(self, node: exp.Expression, outer: _Scope) -> dict[str, exp.CTE]:
        with_ = node.args.get("with_")
        if not isinstance(with_, exp.With):
            return {}
        ctes = {cte.alias_or_name.lower(): cte for cte in with_.expressions}
        inner = _Scope({}, outer, ctes)
        for cte in ctes.values():
            if isinstance(cte.this, exp.Expression):
                self.push(cte.this, None, None, inner)
        return ctes

    def source(self, node: exp.Expression, scope: _Scope) -> None:
        """A FROM/JOIN/USING item or a DML target: what it names, and the values inside it."""
        if isinstance(node, exp.From | exp.Join):
            for key, child in _children(node):
                if key == "this":
                    self.source(child, scope)
                else:
                    self.push(child, None, None, scope)
            return
        if isinstance(node, exp.Schema):  # INSERT INTO t (cols)
            if isinstance(node.this, exp.Expression):
                self.source(node.this, scope)
            return
        alias = node.args.get("alias")
        alias_name = ident(alias.this) if isinstance(alias, exp.TableAlias) and alias.this else ""
        listed = (
            tuple(ident(c) for c in alias.columns)
            if isinstance(alias, exp.TableAlias) and alias.columns
            else None
        )
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            name = ident(node.this)
            cte = None if node.args.get("db") else scope.cte(name)
            key = alias_name or name
            if cte is not None and isinstance(cte.this, exp.Expression):
                scope.sources[key] = _Source(None, cte.this, listed or self.cte_names(cte))
            else:
                scope.sources[key] = _Source(self.names.table(node), None, None)
            for arg, child in _children(node):  # TABLESAMPLE's arguments and the like
                if arg not in ("this", "db", "catalog", "alias"):
                    self.push(child, None, None, scope)
            return
        target = _unwrap(node.this) if isinstance(node, exp.Table | exp.Lateral) else node
        if not isinstance(target, exp.Expression):
            return
        if isinstance(target, _QUERY + _DML):
            names = listed or self.output_names(target)
            scope.sources[alias_name] = _Source(None, target, names)
            self.push(target, None, None, scope)
            return
        # A function in FROM (unnest, generate_series, jsonb_each...): its outputs meet its
        # arguments; a scalar one's column takes the alias's name.
        holder = node
        scope.sources[alias_name] = _Source(None, holder, listed or (alias_name,))
        self.meets(id(target), self.all_slots(holder))
        self.push(target, id(target), None, scope)

    def cte_names(self, cte: exp.CTE) -> tuple[str, ...] | None:
        alias = cte.args.get("alias")
        if isinstance(alias, exp.TableAlias) and alias.columns:
            return tuple(ident(c) for c in alias.columns)
        return self.output_names(cte.this) if isinstance(cte.this, exp.Expression) else None

    def output_names(self, q: exp.Expression) -> tuple[str, ...] | None:
        q = _unwrap(q)
        while isinstance(q, exp.SetOperation) and isinstance(q.this, exp.Expression):
            q = _unwrap(q.this)  # a set operation's names are its leftmost branch's
        if isinstance(q, exp.Values):
            n = self.arity(q)
            return tuple(f"column{i + 1}" for i in range(n)) if n is not None else None
        items: list[exp.Expression] = []
        if isinstance(q, exp.Select):
            items = q.expressions
        elif isinstance(q, _DML) and q.args.get("returning") is not None:
            items = q.args["returning"].expressions
        if any(_is_star(p) for p in items):
            return None
        return tuple(p.alias_or_name.lower() for p in items)

    def outputs(
        self, q: exp.Expression, scope: _Scope, items: list[exp.Expression] | None = None
    ) -> None:
        """A select or RETURNING list: each item is an atom feeding its slot."""
        for i, item in enumerate(q.expressions if items is None else items):
            if _is_star(item):
                qualifier = ident(item.args.get("table")) if isinstance(item, exp.Column) else ""
                for src in self.sources(scope, qualifier):
                    self.star_source(("s*", id(q)), src)
                continue
            slot = self.slot(q, i)
            if isinstance(item, exp.Alias) and items is None:
                scope.outputs[item.alias.lower()] = slot
            self.meets(id(item), slot)
            carries = self.facts.value(item) or isinstance(_core(item), exp.Column)
            self.push(item, id(item), slot if carries else None, scope)

    def set_operation(self, node: exp.SetOperation, scope: _Scope) -> None:
        left, right = node.this, node.expression
        if not isinstance(left, exp.Expression) or not isinstance(right, exp.Expression):
            return
        n = self.arity(node)
        if n is None:
            self.is_same(("s*", id(node)), self.all_slots(left))
            self.is_same(("s*", id(node)), self.all_slots(right))
            return
        for i in range(n):
            self.is_same(self.slot(node, i), self.slot(left, i))
            self.is_same(self.slot(node, i), self.slot(right, i))

    def values_rows(self, node: exp.Values, scope: _Scope) -> None:
        for row in node.expressions:
            cells = row.expressions if isinstance(row, exp.Tuple) else [row]
            for i, cell in enumerate(cells):
                self.cell(cell, self.slot(node, i), scope)

    def cell(self, cell: exp.Expression, slot: Key, scope: _Scope) -> None:
        self.meets(id(cell), slot)
        carries = self.facts.value(cell) or isinstance(_core(cell), exp.Column)
        self.push(cell, id(cell), slot if carries else None, scope)

    def insert(self, node: exp.Insert) -> None:
        target = self.inserts.get(id(node))
        source = node.expression
        if target is None or not isinstance(source, exp.Expression):
            return
        table, cols = target
        if cols is None:
            self.label(self.all_slots(source), f"{table}.*")
            return
        for i, name in enumerate(cols):
            self.label(self.slot(source, i), f"{table}.{name}", same=True)

    def merge_whens(self, merge: exp.Merge, whens: exp.Expression, scope: _Scope) -> None:
        for when in whens.expressions:
            then = when.args.get("then")
            for _, child in _children(when):
                if child is not then:
                    self.push(child, None, None, scope)
            if not isinstance(then, exp.Insert):
                if then is not None:
                    self.push(then, None, None, scope)
                continue
            cols = then.this.expressions if isinstance(then.this, exp.Tuple | exp.Schema) else []
            values = then.expression
            cells = values.expressions if isinstance(values, exp.Tuple) else []
            for i, cell in enumerate(cells):
                slot = ("m", id(cell))
                col = cols[i] if i < len(cols) else None
                labels = self.b.of(col) if isinstance(col, exp.Column) else ()
                for q in labels or (self.target_star(merge),):
                    self.label(slot, q, same=True)
                self.cell(cell, slot, scope)
            if not cells and isinstance(values, exp.Expression):
                self.push(values, None, None, scope)

    def target_star(self, merge: exp.Merge) -> str:
        target = merge.this
        return f"{self.names.table(target)}.*" if isinstance(target, exp.Table) else UNSURE

    # --- result ---------------------------------------------------------------------------

    def result(self) -> Flow:
        meets: dict[Key, dict[str, None]] = {}
        same: dict[Key, dict[str, None]] = {}
        for key, col in self.meet_labels:
            meets.setdefault(self.meet.find(key), {})[col] = None
        for key, col in self.same_labels:
            same.setdefault(self.same.find(key), {})[col] = None
        out = Flow()

        def reach(key: Key) -> Reach:
            return Reach(
                tuple(meets.get(self.meet.find(key), ())),
                tuple(same.get(self.same.find(key), ())),
            )

        for node, key in self.values:
            r = reach(key)
            if isinstance(node, exp.Parameter):
                out.params.append((int(node.name), r))
            elif "start" in node.meta:
                out.literals.append((node.meta["start"], node.meta["end"] + 1, r))
            else:
                out.loose.append(r)
        out.loose += [reach(key) for key in self.loose]
        seen = {key for _, key in self.values}
        out.unvisited = [n.meta["start"] for n in self.facts.literals if id(n) not in seen]
        return out


# What each node type is to the walk, decided once per type.
(
    _NAME, _QUERYLIKE, _STRUCTURAL, _COLUMN, _LITERAL, _PARAMETER, _COMPARISON, _NO_COLUMNS,
    _JSON_PATH, _VAR, _IF, _CALL, _SCALAR,
) = range(13)  # fmt: skip
_KINDS: dict[type, int] = {}


def _kind(node: exp.Expression) -> int:
    checks: list[tuple[type | tuple[type, ...], int]] = [
        ((exp.Identifier, exp.Star), _NAME),
        (_QUERY + _DML, _QUERYLIKE),
        (_STRUCTURE, _STRUCTURAL),
        (exp.Column, _COLUMN),
        (LITERALS, _LITERAL),
        (exp.Parameter, _PARAMETER),
        ((*_COMPARE, exp.In, exp.Between), _COMPARISON),
        ((exp.DataType, exp.SetItem), _NO_COLUMNS),
        (exp.JSONPath, _JSON_PATH),
        (exp.Var, _VAR),
        (exp.If, _IF),
        (exp.Anonymous, _CALL),
    ]
    for types, kind in checks:
        if isinstance(node, types):
            return kind
    return _SCALAR


def _in_query(scope: _Scope) -> bool:
    s: _Scope | None = scope
    while s is not None:
        if s.sources:
            return True
        s = s.parent
    return False


def _arity(q: exp.Expression) -> int | None:
    if isinstance(q, exp.Select):
        return None if any(_is_star(p) for p in q.expressions) else len(q.expressions)
    if isinstance(q, exp.Values):
        first = q.expressions[0] if q.expressions else None
        return len(first.expressions) if isinstance(first, exp.Tuple) else None
    if isinstance(q, _DML):
        returning = q.args.get("returning")
        items = returning.expressions if returning is not None else []
        return None if any(_is_star(p) for p in items) else len(items)
    return None


def _case_has_no_operand(node: exp.If) -> bool:
    parent = node.parent
    return not (isinstance(parent, exp.Case) and parent.args.get("this") is not None)


def _rows(
    left: exp.Expression, right: exp.Expression
) -> list[tuple[int | None, exp.Expression, exp.Expression]]:
    """`(a, b) = (x, y)`: compare position by position; anything else as a whole (None)."""
    if (
        isinstance(left, exp.Tuple)
        and isinstance(right, exp.Tuple)
        and len(left.expressions) == len(right.expressions)
    ):
        pairs = zip(left.expressions, right.expressions, strict=True)
        return [(j, a, b) for j, (a, b) in enumerate(pairs)]
    return [(None, left, right)]


def flow(tree: exp.Expression, binding: Binding, names: Names) -> Flow:
    """Where every literal and parameter in `tree` can go."""
    f = _Flow(binding, names)
    f.run(tree, names)
    return f.result()
