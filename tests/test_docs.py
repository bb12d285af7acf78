"""The man page and shell completions are generated from the CLI and must be current."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from scalple.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "scripts" / "gen_docs.py"
SKIPPED = {"install_completion", "show_completion"}


def gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GEN), *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command path in the live CLI with its command object, read straight from typer."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), typer.main.get_command(app))]
    while stack:
        path, cmd = stack.pop()
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            if not sub.hidden:
                stack.append(((*path, name), sub))


def option_names(cmd: Any) -> list[str]:
    return [
        n
        for p in cmd.params
        if p.param_type_name == "option" and not p.hidden and p.name not in SKIPPED
        for n in (*p.opts, *p.secondary_opts)
    ]


def test_generated_files_are_current() -> None:
    result = gen("--check")
    assert result.returncode == 0, (
        "man/ or completions/ are stale; regenerate with: python scripts/gen_docs.py\n"
        + result.stdout[-3000:]
    )


def test_check_notices_a_stale_file(tmp_path: Path) -> None:
    assert gen("--out", str(tmp_path)).returncode == 0
    assert gen("--out", str(tmp_path), "--check").returncode == 0
    fish = tmp_path / "completions" / "scalple.fish"
    fish.write_text(fish.read_text().replace("gap-check", "gapcheck"))
    stale = gen("--out", str(tmp_path), "--check")
    assert stale.returncode == 1
    assert "+++ b/completions/scalple.fish" in stale.stdout
    assert "python scripts/gen_docs.py" in stale.stderr


def test_man_page_names_every_command_option_and_setting() -> None:
    from scalple.config import REGISTRY

    man = (ROOT / "man" / "scalple.1").read_text()
    plain = man.replace("\\-", "-").replace("\\fB", "").replace("\\fR", "").replace("\\fI", "")
    for path, cmd in commands():
        if path:
            assert f'.SS "scalple {" ".join(path)}' in plain, path
        for name in option_names(cmd):
            assert name in plain, (path, name)
    for s in REGISTRY:
        assert s.env in plain, s.name


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_renders_without_warnings() -> None:
    result = subprocess.run(
        ["groff", "-man", "-ww", "-z", str(ROOT / "man" / "scalple.1")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def bash_complete(line: str) -> list[str]:
    words = line.split(" ")
    script = (
        f"source {ROOT / 'completions' / 'scalple.bash'}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_scalple\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_bash_completes_every_command_and_option() -> None:
    for path, cmd in commands():
        prefix = " ".join(("scalple", *path))
        subs = sorted(getattr(cmd, "commands", {}))
        if subs:
            assert sorted(bash_complete(prefix + " ")) == subs, path
        assert set(option_names(cmd)) <= set(
            bash_complete(prefix + " --") + bash_complete(prefix + " -")
        ), path
    assert bash_complete("scalple gap") == ["gap-check"]
    assert bash_complete("scalple serve --config pyproj") == ["pyproject.toml"]
    assert bash_complete("scalple serve --listen ") == []


@pytest.mark.parametrize(("shell", "file"), [("zsh", "_scalple"), ("fish", "scalple.fish")])
def test_completion_script_parses(shell: str, file: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed, so its completion script cannot be parsed here")
    result = subprocess.run(
        [shell, "-n", str(ROOT / "completions" / file)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_commands() -> None:
    script = f"source {ROOT / 'completions' / 'scalple.fish'}; complete -C 'scalple '"
    out = subprocess.run(["fish", "-c", script], capture_output=True, text=True, timeout=30)
    top = {line.split("\t")[0] for line in out.stdout.splitlines()}
    assert set(typer.main.get_command(app).commands) <= top  # type: ignore[attr-defined]
