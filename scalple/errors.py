"""Exceptions a person may see; each carries a message meant for them, never a traceback."""

from __future__ import annotations


class ScalpleError(Exception):
    """Base of every error Scalple reports to a person. `exit_code` is what the CLI exits with."""

    exit_code = 2


class ConfigError(ScalpleError):
    """A setting is missing, malformed or contradictory; the message names the source and line."""


class LedgerError(ScalpleError):
    """The ledger cannot be read or written."""


class LedgerUnavailable(LedgerError):
    """An audit record could not be made durable; the statement it describes must be refused."""


class TamperDetected(LedgerError):
    """Verification found the ledger changed; the message names the first bad entry."""

    exit_code = 1


class SandboxError(ScalpleError):
    """A throwaway PostgreSQL or PgBouncer could not be started."""
