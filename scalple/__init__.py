"""Scalple: a PostgreSQL wire-protocol proxy that records who ran every statement."""

from scalple import _compiled

__version__ = "0.1.0"
_compiled.install()  # before any hot module is imported: compiled, unless stale or SCALPLE_PURE
