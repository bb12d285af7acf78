"""Per-statement work on one scan, the whole of a cache hit: literals, parameters and comments
masked as the shape says, value patterns masked everywhere else, subject hashes collected."""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable
from time import sleep
from typing import Final

from scalple.analysis.comments import mask_comment
from scalple.analysis.lexer import YIELD_EVERY, literal_value
from scalple.analysis.masking import mask
from scalple.analysis.policy import Policy
from scalple.analysis.shape import Shape
from scalple.analysis.subjects import SubjectHasher, SubjectSet
from scalple.analysis.verdict import UNSURE_ACTION, Action

MASK_ALL: Final = Action("literal", True, None)
# Escapes whose value `literal_value` does not decode (octal, \x, \u, U&'' and UESCAPE): what
# the server reads cannot be told from the text, so patterns cannot be trusted on it.
_OPAQUE_ESCAPE: Final = re.compile(r"\\[0-7xuU]")


class Masker:
    def __init__(
        self,
        policy: Policy,
        key: bytes,
        hasher: SubjectHasher,
        shape: Shape,
        standard_strings: bool = True,
    ) -> None:
        self.policy = policy
        self.key = key
        self.hash = hasher
        self.shape = shape
        self.standard = standard_strings
        self.masked: list[str] = []
        self.more_masked = 0  # entries past the cap, counted only
        self.subjects = SubjectSet(policy.subject_cap)

    def note(self, entry: str) -> None:
        """One masked_fields entry, up to the subject cap (a 100,000-value IN list should not
        make the event a hundred thousand entries long)."""
        if len(self.masked) < self.policy.subject_cap:
            self.masked.append(entry)
        else:
            self.more_masked += 1

    def fields(self) -> tuple[str, ...]:
        more = (f"… {self.more_masked} more",) if self.more_masked else ()
        return (*self.masked, *more)

    def mask_value(self, value: str, action: Action | None) -> str | None:
        """The value to record instead of `value`, or None to keep it."""
        if action is None:
            return self.mask_patterns(value)
        if action.kind is not None:
            self.add_subjects(action.kind, value)
        if action.mask:
            masked = mask(value, self.policy.mask_style, self.key)
            self.note(f"{action.column} → {masked}")
            return masked
        return self.mask_patterns(value)

    def add_subjects(self, kind: str, value: str) -> None:
        if value[:1] == "{":
            for v in _elements(value):
                self.subjects.add_one(self.hash(kind, v))
        else:
            self.subjects.add_one(self.hash(kind, value))

    def mask_patterns(self, text: str) -> str | None:
        spans = self.policy.patterns.find(text)
        if not spans:
            return None
        out, pos = [], 0
        for start, end, name in spans:
            masked = mask(text[start:end], self.policy.mask_style, self.key)
            self.note(f"pattern:{name} → {masked}")
            out += [text[pos:start], masked]
            pos = end
        return "".join(out) + text[pos:]

    def statement(
        self, sql: str, literals: list[int], comments: list[int], actions: tuple[Action | None, ...]
    ) -> str:
        """`sql` with its literals (flat (start, end) offsets, one action each) and comments
        masked. Most literals stop at the cheap pattern pre-check on their raw text."""
        edits: list[tuple[int, int, str]] = []
        maybe = self.policy.patterns.maybe
        style, key, hasher, add = self.policy.mask_style, self.key, self.hash, self.subjects.add_one
        standard = self.standard
        subjects = self.subjects
        steps = 0
        # mask_value, inlined: this loop is most of a cache hit's cost.
        for start, end, action in zip(literals[::2], literals[1::2], actions, strict=True):
            steps += 1
            if not steps & YIELD_EVERY:
                sleep(0)  # a long IN list: let the event loop run (lexer.YIELD_EVERY)
            raw = sql[start:end]
            if action is None and ("\\" in raw or raw[0] in "uU"):
                action = self._escaped(raw)
            if action is None:
                if not maybe(raw):
                    continue
                new = self.mask_patterns(literal_value(raw, standard))
            else:
                value = literal_value(raw, standard)
                if action.kind is not None and not subjects.capped:  # full: no more to keep
                    if value[:1] == "{":
                        self.add_subjects(action.kind, value)
                    else:
                        add(hasher(action.kind, value))
                if action.mask:
                    new = mask(value, style, key)
                    self.note(f"{action.column} → {new}")
                else:
                    new = self.mask_patterns(value)
            if new is not None:
                quoted = "'" + new.replace("'", "''") + "'" if standard else self.quote(new)
                edits.append((start, end, quoted))
        if not comments:
            return _apply(sql, edits) if edits else sql
        return _apply(sql, heapq.merge(edits, self.comments(sql, comments)))

    def redacted(self, sql: str, literals: list[int], comments: list[int]) -> str:
        """`sql` with every literal replaced by '***' and its comments masked: the least work
        per literal, for statements too large to analyse (a million literals cost a second
        the usual way)."""
        n = len(literals) // 2
        shown = min(n, self.policy.subject_cap)
        self.masked += ["literal → ***"] * shown
        self.more_masked += n - shown
        redact = "'***'"
        edits = ((s, e, redact) for s, e in zip(literals[::2], literals[1::2], strict=True))
        return _apply(sql, heapq.merge(edits, self.comments(sql, comments)))

    def comments(self, sql: str, comments: list[int]) -> list[tuple[int, int, str]]:
        """Edits that mask the comments at these (flat) offsets."""
        style, key = self.policy.mask_style, self.key
        out = []
        for start, end in zip(comments[::2], comments[1::2], strict=True):
            new = mask_comment(sql[start:end], lambda v: mask(v, style, key))
            if new is not None:
                out.append((start, end, new))
        return out

    def _escaped(self, raw: str) -> Action | None:
        """UNSURE for a literal whose value the server decodes from escapes we do not."""
        first = raw[0]
        if first in "uU" and raw[1:2] == "&":
            return UNSURE_ACTION
        escapes = first in "eE" or (not self.standard and first in "'nN")
        return UNSURE_ACTION if escapes and _OPAQUE_ESCAPE.search(raw) else None

    def quote(self, value: str) -> str:
        """`value` as a string literal the server would read back as `value`."""
        if not self.standard and "\\" in value:
            value = value.replace("\\", "\\\\")
        return "'" + value.replace("'", "''") + "'"

    def param(self, index: int, raw: bytes | None, fmt: int) -> str | None:
        if raw is None:
            return None
        action = MASK_ALL if self.shape.mask_all else self.shape.params.get(index, UNSURE_ACTION)
        text = _param_text(raw, fmt)
        new = self.mask_value(text, action)
        return text if new is None else new


def _apply(sql: str, edits: Iterable[tuple[int, int, str]]) -> str:
    """`sql` with each (start, end) span, in order, replaced by its text."""
    out: list[str] = []
    pos = 0
    for start, end, text in edits:
        out += (sql[pos:start], text)
        pos = end
    return "".join(out) + sql[pos:]


def _param_text(raw: bytes, fmt: int) -> str:
    """Text-format parameters as text; binary ones as text when they are printable UTF-8 (so
    patterns still see e-mail addresses), as an integer for 2/4/8 bytes, else as \\x hex."""
    if fmt == 0:
        return raw.decode("utf-8", "replace")
    try:
        text = raw.decode("utf-8")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    if len(raw) in (2, 4, 8):
        return str(int.from_bytes(raw, "big", signed=True))
    return "\\x" + raw.hex()


def _elements(value: str) -> list[str]:
    """An array literal's elements (`{1,2}` from `= ANY($1)`), or the value itself."""
    if len(value) > 1 and value[0] == "{" and value[-1] == "}":
        return [v.strip().strip('"') for v in value[1:-1].split(",") if v.strip()]
    return [value]
