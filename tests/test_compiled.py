"""The hot path's two builds: compiled (Cython) when it could be, the source when told to
(SCALPLE_PURE=1) or when the source changed since the build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from scalple import _compiled


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "SCALPLE_PURE"} | env
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=60
    )


SHOW = (
    "import scalple.proxy.session, scalple.analysis.lexer\n"
    "from scalple import _compiled\n"
    "print(sorted(set(_compiled.running().values())))\n"
)


def test_the_build_compiled_the_hot_path_where_it_can() -> None:
    if not _compiled.built():
        if shutil.which("cc") is None:
            pytest.skip("no C compiler (cc) on this machine: Scalple installed uncompiled")
        pytest.fail("a C compiler is here, yet the hot path was not compiled (see setup.py)")
    out = _run(SHOW)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[True]" and "changed since compiled" not in out.stderr


def test_scalple_pure_runs_the_source() -> None:
    out = _run(SHOW, SCALPLE_PURE="1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("[False]", "[]")


def test_a_build_older_than_its_source_is_not_used_and_says_so() -> None:
    if not _compiled.built():
        pytest.skip("no compiled build here (no C compiler when Scalple was installed)")
    code = (
        "import scalple._compiled as c\n"
        "c.built = lambda: {'scalple.proxy.attribution': '0' * 64}  # as if the source changed\n"
        "print(c.install())\n"
        "import scalple.proxy.attribution as a\n"
        "print(a.__file__.endswith('.py'))\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['scalple.proxy.attribution']", "True"]
    assert "scalple.proxy.attribution changed since compiled" in out.stderr
