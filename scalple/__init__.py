"""Scalple: a PostgreSQL wire-protocol proxy that records who ran every statement."""

__version__ = "0.1.0"
