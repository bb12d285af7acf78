"""Value patterns masked wherever they appear: e-mail addresses, IBANs and payment card numbers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "").upper()
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _card_ok(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


@dataclass(frozen=True)
class ValuePattern:
    name: str
    regex: re.Pattern[str]
    check: Callable[[str], bool] | None = None

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        for m in self.regex.finditer(text):
            if self.check is None or self.check(m.group()):
                yield m.span()


BUILTIN: Final = {
    "email": ValuePattern(
        "email",
        re.compile(
            r"[A-Za-z0-9!#$%&*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
        ),
    ),
    # Country code, check digits, then 11-30 alphanumerics, optionally grouped by spaces; the
    # mod-97 check keeps product codes and hashes from being masked.
    "iban": ValuePattern(
        "iban",
        re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])"),
        iban_ok,
    ),
    # 13-19 digits, optionally grouped by spaces or dashes; Luhn keeps ordinary ids unmasked.
    "card": ValuePattern("card", re.compile(r"(?<![\d.])\d(?:[ -]?\d){12,18}(?![\d.])"), _card_ok),
}
# E-mail needs an @; an IBAN (15+ long) and a card number (13+) need that length and digits,
# which holds for a literal's quoted text as for its value: `maybe` tests that. `find` then looks
# for the core every match must contain, in one pass in C.
_MIN_DIGITS_LEN: Final = 13
_DIGIT: Final = re.compile(r"\d")
_CORE: Final = re.compile(r"@|[A-Z]{2}\d{2}|\d(?:[ -]?\d){12}")


class PatternSet:
    """The patterns in force; `find` returns non-overlapping (start, end, name) spans."""

    def __init__(self, patterns: tuple[ValuePattern, ...]) -> None:
        self.patterns = patterns
        self._builtin_only = all(p is BUILTIN.get(p.name) for p in patterns)

    def maybe(self, text: str) -> bool:
        """False only when no pattern can match `text`, cheaply (most literals stop here). True
        for a quoted literal whenever it is for its value, so the raw text can be tested first."""
        if not self._builtin_only or "@" in text:
            return True
        return len(text) >= _MIN_DIGITS_LEN and _DIGIT.search(text) is not None

    def find(self, text: str) -> list[tuple[int, int, str]]:
        if self._builtin_only and _CORE.search(text) is None:
            return []
        spans: list[tuple[int, int, str]] = []
        for p in self.patterns:
            for start, end in p.find(text):
                if all(end <= s or start >= e for s, e, _ in spans):
                    spans.append((start, end, p.name))
        return sorted(spans)
