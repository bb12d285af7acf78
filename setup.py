"""Compiles the per-statement hot path with Cython when it can (pyproject.toml has the rest).

The modules stay plain Python: compiled, they run the same code faster; without Cython or a C
compiler (or with SCALPLE_PURE=1 at build time) Scalple installs and runs uncompiled. Each
build records the SHA-256 of the sources it compiled in scalple/_build.py, so that at import a
compiled module older than its source is not used (scalple/_compiled.py says so and loads the
source instead).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# The hot path: what every statement passes through, in the proxy and in the analyzer's cache hit.
HOT = (
    "scalple/analysis/lexer.py",
    "scalple/analysis/analyzer.py",
    "scalple/analysis/masker.py",
    "scalple/proxy/codec.py",
    "scalple/proxy/session.py",
    "scalple/proxy/mirror.py",
    "scalple/proxy/records.py",
    "scalple/proxy/commands.py",
    "scalple/proxy/attribution.py",
    "scalple/proxy/identity.py",
    "scalple/proxy/connection.py",
    "scalple/proxy/server.py",
    "scalple/ledger/canonical.py",
    "scalple/ledger/writer.py",
)


def _digest(path: str) -> str:
    return hashlib.sha256((ROOT / path).read_bytes()).hexdigest()


class RecordingBuild(build_ext):
    """build_ext that writes scalple/_build.py: which modules it compiled, from which source."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:  # one C compiler per core: the 14 modules take minutes one by one
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        super().run()
        built = {}
        for ext in self.extensions:
            if Path(self.get_ext_fullpath(ext.name)).exists():
                built[ext.name] = _digest(ext.sources[0].replace(".c", ".py"))
        text = (
            '"""Written by setup.py at build time: compiled modules and their sources\' '
            'SHA-256."""\n\nCOMPILED: dict[str, str] = ' + repr(built) + "\n"
        )
        for target in {
            ROOT / "scalple" / "_build.py",
            Path(self.build_lib) / "scalple" / "_build.py",
        }:
            if target.parent.exists():
                target.write_text(text)


def _extensions() -> list[object]:
    if os.environ.get("SCALPLE_PURE") == "1":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("scalple: Cython is not available: installing uncompiled", file=sys.stderr)
        return []
    extensions = cythonize(
        list(HOT),
        compiler_directives={"language_level": 3, "binding": True},
        quiet=True,
    )
    for ext in extensions:
        ext.optional = True  # no C compiler: uncompiled, not a failed install
    return list(extensions)


setup(ext_modules=_extensions(), cmdclass={"build_ext": RecordingBuild})
