"""Learning a statement shape (cache miss): parse once, run the passes, keep per-literal actions."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from typing import Final, Literal

import sqlglot
from pglast import parser as pg_parser
from sqlglot import exp

from scalple.analysis.bind import Binding, Names, bind
from scalple.analysis.classify import classify_one, strongest
from scalple.analysis.lexer import Scan
from scalple.analysis.policy import Policy
from scalple.analysis.sites import Site, sites
from scalple.analysis.utility import Utility, utility
from scalple.events import AuditClass

# sqlglot logs unsupported statements verbatim, literals and all: that would put PII in logs.
logging.getLogger("sqlglot").setLevel(logging.CRITICAL)


@dataclass(frozen=True, slots=True)
class Action:
    """What to do with one literal or parameter: mask it (as `column`), hash it as a subject."""

    column: str
    mask: bool
    kind: str | None


@dataclass(frozen=True)
class Shape:
    fingerprint: str
    audit_class: AuditClass
    command_tag: str
    tables: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    literals: dict[int, Action] = field(default_factory=dict)  # index into Scan.literals
    params: dict[int, Action] = field(default_factory=dict)  # 0-based parameter index
    mask_all: bool = False  # every literal and parameter (unparseable, opaque, or ROLE)
    analysis: Literal["ok", "failed"] = "ok"


def fingerprint(scan: Scan) -> str:
    """pg_query's fingerprint when PostgreSQL's grammar accepts the text, else a hash of the key."""
    try:
        return str(pg_parser.fingerprint(scan.sql))
    except Exception:
        return hashlib.sha256(scan.key.encode()).hexdigest()[:16]


def _statement_words(scan: Scan) -> list[tuple[str, ...]]:
    words = []
    for part in scan.key.split(";"):
        w = Scan(part, part, (), ()).leading_words()
        if w:
            words.append(w)
    return words


def failed(scan: Scan) -> Shape:
    words = _statement_words(scan)
    classes = [classify_one(w, None) for w in words]
    audit_class = strongest([c for c, _ in classes])
    tag = classes[-1][1] if classes else ""
    return Shape(fingerprint(scan), audit_class, tag, mask_all=True, analysis="failed")


def _action(site: Site, policy: Policy) -> Action | None:
    pii = [c for c in site.columns if policy.is_pii(c)]
    kinds = [k for c in site.columns if (k := policy.subject_kind(c))]
    if not pii and not kinds:
        return None
    mask = bool(pii) or policy.mask_subject_ids
    return Action((pii or site.columns)[0], mask, kinds[0] if kinds else None)


def _merge(into: dict[int, Action], index: int, action: Action) -> None:
    old = into.get(index)
    if old is not None:
        action = Action(old.column, old.mask or action.mask, old.kind or action.kind)
    into[index] = action


def _actions(
    scan: Scan, found: list[Site], policy: Policy
) -> tuple[dict[int, Action], dict[int, Action], bool]:
    literals: dict[int, Action] = {}
    params: dict[int, Action] = {}
    unaligned = False
    for site in found:
        action = _action(site, policy)
        if action is None:
            continue
        for n in site.params:
            _merge(params, n - 1, action)
        if site.has_literals and site.span is None:
            unaligned = True  # sqlglot kept no position: mask every literal rather than guess
        elif site.span is not None:
            start, end = site.span
            for i, tok in enumerate(scan.literals):
                if tok.start < end and tok.end > start:
                    _merge(literals, i, action)
    return literals, params, unaligned


_WRAPPER: Final = re.compile(
    r"""\s*(?:
        EXPLAIN\s*(?P<options>\((?:[^()]|\([^()]*\))*\))?(?P<legacy>(?:\s*\b(?:ANALYZE|ANALYSE|VERBOSE)\b)*)
      | PREPARE\s+\S+?\s*(?:\([^)]*\)\s*)?\bAS
      | DECLARE\s+\S+\s+(?:\w+\s+)*?CURSOR\s+(?:WITH(?:OUT)?\s+HOLD\s+)?FOR
    )\s""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
_ANALYZE: Final = re.compile(r"\bANALY[SZ]E\b(?!\s+(?:false|off|0)\b)", re.IGNORECASE)


def _unwrap(sql: str, words: tuple[str, ...]) -> tuple[str, str, bool] | None:
    """EXPLAIN, PREPARE and DECLARE CURSOR hold a statement: (the SQL with the wrapper blanked,
    so offsets still match the scan; the command tag; whether the inner statement runs)."""
    if not words or words[0] not in ("EXPLAIN", "PREPARE", "DECLARE"):
        return None
    m = _WRAPPER.match(sql)
    if m is None:
        return None
    runs = words[0] == "EXPLAIN" and bool(_ANALYZE.search(m["options"] or m["legacy"] or ""))
    tag = {"EXPLAIN": "EXPLAIN", "PREPARE": "PREPARE", "DECLARE": "DECLARE CURSOR"}[words[0]]
    return " " * m.end() + sql[m.end() :], tag, runs


def _utility_shape(scan: Scan, util: Utility, words: list[tuple[str, ...]]) -> Shape:
    """A utility statement sqlglot cannot parse but PostgreSQL's grammar can: its relations are
    known; its literals (passwords, payloads) are all masked."""
    classes = [classify_one(w, None) for w in words]
    return Shape(
        fingerprint(scan),
        strongest([c for c, _ in classes]),
        classes[-1][1] if classes else "",
        util.tables,
        util.columns,
        mask_all=True,
    )


def learn(scan: Scan, policy: Policy, names: Names) -> Shape:
    words = _statement_words(scan)
    wrapped = _unwrap(scan.sql, words[0]) if len(words) == 1 else None
    try:
        text = wrapped[0] if wrapped else scan.sql
        trees: list[exp.Expression] = [
            t for t in sqlglot.parse(text, read="postgres") if isinstance(t, exp.Expression)
        ]
    except Exception:  # sqlglot raises several error types; any of them means "cannot parse"
        trees = []
    if not trees:
        util = utility(scan.sql, names)
        if util is not None and not util.has_query:
            return _utility_shape(scan, util, words)
        return failed(scan)
    if wrapped:
        inner = Scan(wrapped[0], wrapped[0], (), ()).leading_words()
        cls, _ = classify_one(inner, trees[0])
        classes = [(cls if wrapped[2] else "MISC", wrapped[1])]
    else:
        if len(words) != len(trees):
            words = [words[0] if words else ()] * len(trees)
        classes = [classify_one(w, t) for w, t in zip(words, trees, strict=True)]
    audit_class = strongest([c for c, _ in classes])
    opaque = any(isinstance(t, exp.Command) for t in trees)
    merged = Binding()
    found: list[Site] = []
    for tree in trees:
        b = bind(tree, names, lambda c: policy.is_pii(c) or policy.subject_kind(c) is not None)
        merged.tables.update(b.tables)
        merged.columns.update(b.columns)
        found += sites(tree, b)
    tables = tuple(merged.tables)
    columns = tuple(merged.columns)
    if audit_class not in ("READ", "WRITE") and not wrapped:
        util = utility(scan.sql, names)
        if util is not None:  # PostgreSQL's grammar names the relations exactly
            tables = util.tables
            columns = tuple(dict.fromkeys((*util.columns, *columns)))
    literals, params, unaligned = _actions(scan, found, policy)
    return Shape(
        fingerprint(scan),
        audit_class,
        classes[-1][1],
        tables,
        columns,
        literals,
        params,
        mask_all=opaque or unaligned or audit_class == "ROLE",
    )
