"""Pass 3: value sites, the literals and parameters compared with, assigned to or inserted into
a column. Masking and subject extraction both start from these."""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from scalple.analysis.bind import Binding

_COMPARE = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike,
    exp.NullSafeEQ, exp.NullSafeNEQ, exp.SimilarTo,
)  # fmt: skip
LITERALS = (
    exp.Literal, exp.RawString, exp.ByteString, exp.HexString, exp.BitString,
    exp.UnicodeString, exp.National,
)  # fmt: skip


@dataclass(frozen=True)
class Site:
    """A value expression meeting `columns` (more than one when the column was ambiguous).

    `span` is the (start, end) character range of its literals in the SQL, or None if sqlglot
    kept no positions for them; `params` are the $n numbers inside it.
    """

    columns: tuple[str, ...]
    span: tuple[int, int] | None
    has_literals: bool
    params: tuple[int, ...]


def _column_side(node: exp.Expression) -> exp.Column | None:
    """The column a side of a comparison is about: `email`, `lower(email)`, `data->>'k'`."""
    if isinstance(node, exp.Column):
        return node
    cols = [c for c in node.find_all(exp.Column) if not isinstance(c.this, exp.Star)]
    if len(cols) == 1 and not node.find(exp.Select):
        return cols[0]
    return None


def _site(columns: tuple[str, ...], value: exp.Expression) -> Site | None:
    if not columns or isinstance(value, exp.Column | exp.Select | exp.Subquery):
        return None
    starts: list[int] = []
    ends: list[int] = []
    has_literals = False
    params: list[int] = []
    for node in value.walk():
        if isinstance(node, LITERALS) and not isinstance(node.parent, exp.Parameter):
            has_literals = True
            meta = node.meta
            if "start" in meta:
                starts.append(meta["start"])
                ends.append(meta["end"] + 1)
        elif isinstance(node, exp.Parameter) and node.this is not None and node.name.isdigit():
            params.append(int(node.name))
    if not has_literals and not params:
        return None
    span = (min(starts), max(ends)) if starts else None
    return Site(columns, span, has_literals, tuple(params))


def _comparisons(tree: exp.Expression, b: Binding) -> list[Site | None]:
    out: list[Site | None] = []
    for node in tree.find_all(*_COMPARE, exp.In, exp.Between):
        if isinstance(node, exp.In | exp.Between):
            col = _column_side(node.this)
            values = (
                node.expressions
                if isinstance(node, exp.In)
                else [node.args["low"], node.args["high"]]
            )
            out += [_site(b.of(col), v) for v in values if v is not None] if col else []
            continue
        for side, other in ((node.this, node.expression), (node.expression, node.this)):
            col = _column_side(side)
            if col is not None and _column_side(other) is None:
                out.append(_site(b.of(col), other))
    return out


def _inserted(b: Binding) -> list[Site | None]:
    out: list[Site | None] = []
    for node, table, cols in b.inserts:
        source = node.expression
        rows: list[list[exp.Expression]] = []
        if isinstance(source, exp.Values):
            rows = [list(t.expressions) for t in source.expressions if isinstance(t, exp.Tuple)]
        elif isinstance(source, exp.Select):
            rows = [[p.this if isinstance(p, exp.Alias) else p for p in source.expressions]]
        for row in rows:
            for i, value in enumerate(row):
                name = cols[i] if cols is not None and i < len(cols) else "*"
                out.append(_site((f"{table}.{name}",), value))
    return out


def sites(tree: exp.Expression, binding: Binding) -> list[Site]:
    """Every value site in `tree`, comparisons and assignments first, then inserted values."""
    return [s for s in _comparisons(tree, binding) + _inserted(binding) if s is not None]
