"""Run the `scalple` command in this process, as a person would type it."""

from __future__ import annotations

import sys

import pytest

from scalple.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `scalple ARGS...`."""
    argv = sys.argv
    sys.argv = ["scalple", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err
