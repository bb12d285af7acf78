"""Learning a statement shape (cache miss): parse once, run the passes, keep per-literal actions."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import sqlglot
from pglast import parser as pg_parser
from sqlglot import exp

from scalple.analysis.bind import Binding, Names, bind
from scalple.analysis.classify import classify_one, strongest
from scalple.analysis.flow import Flow, flow
from scalple.analysis.lexer import Scan
from scalple.analysis.policy import Policy
from scalple.analysis.utility import Utility, utility
from scalple.analysis.verdict import UNSURE_ACTION, Action, Verdicts, merge, merge_all
from scalple.events import AuditClass

# sqlglot logs unsupported statements verbatim, literals and all: that would put PII in logs.
logging.getLogger("sqlglot").setLevel(logging.CRITICAL)


Analysis = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True)
class Shape:
    fingerprint: str
    audit_class: AuditClass
    command_tag: str
    tables: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    # One action per literal of the scan (None: kept, unless a value pattern matches it)...
    literals: tuple[Action | None, ...] = ()
    # ...and per 0-based parameter index; a parameter not listed is masked.
    params: Mapping[int, Action | None] = field(default_factory=dict)
    mask_all: bool = False  # every literal and parameter (unparseable, opaque, or ROLE)
    analysis: Analysis = "ok"


def fingerprint(scan: Scan) -> str:
    """pg_query's fingerprint when PostgreSQL's grammar accepts the text, else a hash of the key."""
    try:
        return str(pg_parser.fingerprint(scan.sql))
    except Exception:
        return key_fingerprint(scan.key)


def key_fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _statement_words(key: str) -> list[tuple[str, ...]]:
    words = []
    for part in key.split(";"):
        w = Scan(part, part, (), ()).leading_words()
        if w:
            words.append(w)
    return words


def _classified(words: list[tuple[str, ...]]) -> tuple[AuditClass, str]:
    classes = [classify_one(w, None) for w in words]
    return strongest([c for c, _ in classes]), classes[-1][1] if classes else ""


def failed(scan: Scan) -> Shape:
    audit_class, tag = _classified(_statement_words(scan.key))
    return Shape(fingerprint(scan), audit_class, tag, mask_all=True, analysis="failed")


def unparsed(key: str, analysis: Analysis) -> Shape:
    """A statement that is not parsed: classified by its leading words, everything masked."""
    audit_class, tag = _classified(_statement_words(key))
    return Shape(key_fingerprint(key), audit_class, tag, mask_all=True, analysis=analysis)


def standard_text(scan: Scan) -> Scan:
    """`scan` with every string that reads differently under standard_conforming_strings
    (a plain or N'' string holding a backslash, as read with it off) replaced by a neutral
    string of the same length: parsers that know only the standard reading then see the
    statement's structure at the same offsets."""
    pieces: list[str] = []
    pos = 0
    for tok in scan.literals:
        if "\\" in tok.text and tok.text[0] in "'nN":
            head = 2 if tok.text[0] != "'" else 1
            pieces += (scan.sql[pos : tok.start + head], "x" * (len(tok.text) - head - 1), "'")
            pos = tok.end
    if not pieces:
        return scan
    return Scan("".join(pieces) + scan.sql[pos:], scan.key, scan.literals, scan.comments)


def _actions(
    scan: Scan, flows: list[Flow], verdicts: Verdicts
) -> tuple[tuple[Action | None, ...], dict[int, Action | None]]:
    """Each literal's action from the tree's literal at the same offsets. A literal the tree
    kept no position for gets the strictest verdict of every such value in the tree (sqlglot
    rewrites `interval '1 day'` and `->'key'`); more such literals than values, or a literal
    the tree reads with other bounds, means the trees do not match the text: masked."""
    n = len(scan.literals)
    starts = {tok.start: i for i, tok in enumerate(scan.literals)}
    actions: list[Action | None] = [None] * n
    placed = [False] * n
    loose: list[Action | None] = []
    params: dict[int, Action | None] = {}
    for f in flows:
        for start, end, reach in f.literals:
            i = starts.get(start)
            if i is None:
                continue  # not a literal to the server's lexer
            new = verdicts.action(reach) if scan.literals[i].end == end else UNSURE_ACTION
            actions[i] = merge(actions[i], new)
            placed[i] = True
        for number, reach in f.params:
            params[number - 1] = merge(params.get(number - 1), verdicts.action(reach))
        loose += [verdicts.action(r) for r in f.loose]
    missed = {i for f in flows for start in f.unvisited if (i := starts.get(start)) is not None}
    unplaced = [i for i in range(n) if not placed[i]]
    if unplaced:
        fallback = merge_all(loose) if len(unplaced) <= len(loose) else UNSURE_ACTION
        for i in unplaced:  # a literal in a part of the tree the walk does not follow: unsure
            action = UNSURE_ACTION if i in missed else fallback
            actions[i] = Action(action.column, action.mask, None) if action else None
    return tuple(actions), params


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
    audit_class, tag = _classified(words)
    return Shape(fingerprint(scan), audit_class, tag, util.tables, util.columns, mask_all=True)


def learn(scan: Scan, policy: Policy, names: Names, verdicts: Verdicts) -> Shape:
    words = _statement_words(scan.key)
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
    flows: list[Flow] = []
    for tree in trees:
        b = bind(tree, names, lambda c: policy.is_pii(c) or policy.subject_kind(c) is not None)
        merged.tables.update(b.tables)
        merged.columns.update(b.columns)
        flows.append(flow(tree, b, names))
    tables = tuple(merged.tables)
    columns = tuple(merged.columns)
    if audit_class not in ("READ", "WRITE") and not wrapped:
        util = utility(scan.sql, names)
        if util is not None:  # PostgreSQL's grammar names the relations exactly
            tables = util.tables
            columns = tuple(dict.fromkeys((*util.columns, *columns)))
    literals, params = _actions(scan, flows, verdicts)
    return Shape(
        fingerprint(scan),
        audit_class,
        classes[-1][1],
        tables,
        columns,
        literals,
        params,
        mask_all=opaque or audit_class == "ROLE",
    )
