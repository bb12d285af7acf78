"""Which build of a hot module to import: compiled (Cython, see setup.py) or its source.

Python prefers an extension module to the .py beside it. This finder turns that around when
SCALPLE_PURE=1, and whenever a compiled module was built from a source that has changed since
(an edited checkout not rebuilt): the source runs then, and a warning says so once, so a stale
build never shadows edited code silently.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

_PACKAGE = Path(__file__).resolve().parent


def built() -> dict[str, str]:
    """Compiled module name -> SHA-256 of the source it was built from (empty: none built)."""
    try:
        from scalple._build import COMPILED  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return {}
    return dict(COMPILED)


class _SourceFirst:
    """A meta path finder that loads the .py of the modules it is given."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        source = self.sources.get(fullname)
        if source is None:
            return None
        loader = importlib.machinery.SourceFileLoader(fullname, str(source))
        return importlib.util.spec_from_file_location(fullname, source, loader=loader)


def _source(name: str) -> Path:
    return _PACKAGE.parent.joinpath(*name.split(".")).with_suffix(".py")


def install() -> list[str]:
    """Route to their sources the modules that must not run compiled; returns their names."""
    compiled = built()
    if not compiled:
        return []
    pure = os.environ.get("SCALPLE_PURE") == "1"
    sources: dict[str, Path] = {}
    for name, digest in compiled.items():
        path = _source(name)
        try:
            current = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            continue  # an installed wheel may carry only the compiled module
        if pure or current != digest:
            sources[name] = path
    stale = [n for n in sources if not pure]
    if stale:
        print(
            f"scalple: {', '.join(sorted(stale))} changed since compiled; running the source "
            "(rebuild: pip install -e .)",
            file=sys.stderr,
        )
    if sources:
        sys.meta_path.insert(0, _SourceFirst(sources))
    return sorted(sources)


def running() -> dict[str, bool]:
    """For each hot module imported so far: does it run compiled?"""
    return {
        name: not str(getattr(sys.modules.get(name), "__file__", "")).endswith(".py")
        for name in built()
        if name in sys.modules
    }
