"""Mask styles: what a PII value becomes in the ledger (shape-keeping, keyed hash, or redacted)."""

from __future__ import annotations

import hashlib
import hmac
import re
import string
from typing import Final, Literal

MaskStyle = Literal["shape", "hash", "redact"]
MASK_STYLES: Final = ("shape", "hash", "redact")
_ALNUM: Final = re.compile(r"[^\W_]")  # what str.isalnum() accepts
_ASCII_STARS: Final = str.maketrans(dict.fromkeys(string.ascii_letters + string.digits, "*"))
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+")
_TLD: Final = re.compile(r"[A-Za-z]{2,24}")


def _shape_email(value: str) -> str:
    local, _, domain = value.rpartition("@")
    tld = domain.rsplit(".", 1)[-1] if "." in domain else ""
    return f"{local[:1]}***@***" + (f".{tld}" if _TLD.fullmatch(tld) else "")


def _shape(value: str) -> str:
    # Only a whole address gets the e-mail shape: in `paid by ann@x.org 555 0100` the "TLD"
    # would be `org 555 0100`, kept in clear.
    if "@" in value and _EMAIL.fullmatch(value):
        return _shape_email(value)
    # Keep separators and length so "+1 555-0100" still reads as a phone number, and the first
    # character only when there are enough others that it gives little away.
    keep = 1 if len(value) > 4 else 0
    rest = value[keep:]
    return value[:keep] + (
        rest.translate(_ASCII_STARS) if rest.isascii() else _ALNUM.sub("*", rest)
    )


def mask(value: str, style: MaskStyle, key: bytes) -> str:
    """The masked form of one value. Never returns the value itself (unless it is empty)."""
    if not value:
        return value
    if style == "redact":
        return "***"
    if style == "hash":
        digest = hmac.new(key, b"mask\x1f" + value.encode(), hashlib.sha256).hexdigest()
        return "hmac:" + digest[:16]
    return _shape(value)
