"""COPY's data lines: which fields of `COPY table [(cols)] FROM STDIN / TO STDOUT` (text or CSV)
and of `COPY (query) TO STDOUT` are subject columns."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from scalple.analysis.bind import Names, ident
from scalple.analysis.policy import Policy
from scalple.analysis.results import CopyPlan


def copy_plan(sql: str, names: Names, policy: Policy, subject_key: bytes) -> CopyPlan | None:
    """For `COPY table [(cols)] FROM STDIN / TO STDOUT` in text or CSV format with subject
    columns: which fields of each data line are subjects. None otherwise."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except Exception:
        return None
    if not isinstance(tree, exp.Copy):
        return None
    qualified: tuple[str, ...] | None
    if isinstance(tree.this, exp.Subquery):  # COPY (query) TO STDOUT: a bulk read too
        qualified = _output_columns(tree.this.this, names)
    elif isinstance(tree.this, exp.Schema | exp.Table):
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        if not isinstance(target, exp.Table):
            return None
        table = names.table(target)
        listed = tree.this.expressions if isinstance(tree.this, exp.Schema) else None
        cols = tuple(ident(i) for i in listed) if listed else names.columns(table)
        qualified = tuple(f"{table}.{c}" for c in cols) if cols is not None else None
    else:
        return None
    options = {p.name.upper(): p.args.get("expression") for p in tree.args.get("params") or ()}
    fmt = options.get("FORMAT")
    csv = fmt is not None and fmt.name.lower() == "csv"
    if qualified is None or (fmt is not None and not csv):
        return None
    wanted = tuple((i, kind) for i, c in enumerate(qualified) if (kind := policy.subject_kind(c)))
    if not wanted:
        return None
    delim = options.get("DELIMITER")
    delimiter = delim.name if delim is not None else ("," if csv else "\t")
    return CopyPlan(qualified, wanted, subject_key, delimiter, "" if csv else "\\N")


def _output_columns(query: exp.Expression, names: Names) -> tuple[str, ...] | None:
    """The source column of each output field of a plain SELECT ("" for a computed one),
    or None when the number of fields cannot be known (a set operation, an unknown `*`)."""
    if not isinstance(query, exp.Select):
        return None
    sources: dict[str, str] = {}
    order: list[str] = []
    joins = query.args.get("joins") or []
    for node in [query.args.get("from_"), *joins]:
        table = node.this if node is not None else None
        if not isinstance(table, exp.Table):
            continue  # a subquery or function in FROM: its columns stay unknown
        name = names.table(table)
        sources[table.alias_or_name] = name
        order.append(name)
    out: list[str] = []
    for item in query.expressions:
        inner = item.this if isinstance(item, exp.Alias) else item
        if isinstance(inner, exp.Star) or (
            isinstance(inner, exp.Column) and isinstance(inner.this, exp.Star)
        ):
            qualifier = inner.table if isinstance(inner, exp.Column) else ""
            if qualifier and qualifier not in sources:
                return None
            for table in [sources[qualifier]] if qualifier else order:
                cols = names.columns(table)
                if cols is None:
                    return None
                out += (f"{table}.{c}" for c in cols)
            continue
        source = ""
        if isinstance(inner, exp.Column):
            qualifier = inner.table
            only = order[0] if len(order) == 1 else None
            table = sources.get(qualifier) if qualifier else only
            if table is not None:
                source = f"{table}.{inner.name}"
        out.append(source)
    return tuple(out)
