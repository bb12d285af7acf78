"""Errors `scalple dsar` and `scalple index` report to a person."""

from __future__ import annotations

from scalple.errors import ScalpleError, TamperDetected


class UnknownSubjectColumn(ScalpleError):
    """`--subject COLUMN=VALUE` names a column that is not a configured subject column."""


class BadQuery(ScalpleError):
    """A dsar argument is malformed (a date, a `--subject` without `=`, no subject or actor)."""


class LedgerNotVerified(TamperDetected):
    """The ledger range an answer would come from fails verification; no answer is given."""


class BadExport(ScalpleError):
    """An exported report cannot be read, or does not check out against the public key."""

    exit_code = 1
