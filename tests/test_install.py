"""scripts/install.sh on the distribution's own Python (PEP 668: pip refuses to install into it):
Scalple gets a venv of its own and a `scalple` command, in a temporary HOME."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "scripts" / "install.sh"
SYSTEM_PYTHON = Path("/usr/bin/python3")
BASE_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not SYSTEM_PYTHON.exists(), reason="no distribution Python at /usr/bin/python3"
    ),
]


def _pip_cache() -> str:
    """This test run's pip cache, so the install reuses the wheels the suite's own install made."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True, timeout=60
    )
    return out.stdout.strip() if out.returncode == 0 else ""


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory other users can read (the non-root case runs as another user)."""
    path = Path(tempfile.mkdtemp(prefix="scalple-install-"))
    path.chmod(0o755)
    (path / "home").mkdir(mode=0o777)
    (path / "home").chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def install(place: Path, path: str = BASE_PATH, **env: str) -> subprocess.CompletedProcess[str]:
    # What is tested is where Scalple goes, not compiling it (the suite's own install compiled
    # it): SCALPLE_PURE=1 makes setup.py build no extensions, minutes less on a 2-core machine.
    base = {"PATH": path, "HOME": str(place / "home"), "LANG": "C.UTF-8", "SCALPLE_PURE": "1"}
    if cache := _pip_cache():
        base["PIP_CACHE_DIR"] = cache
    return subprocess.run(
        ["bash", str(INSTALL)],
        env={**base, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )


def where_scalple_is(venv: Path) -> Path:
    code = "import scalple; print(scalple.__file__)"
    out = subprocess.run([venv / "bin" / "python", "-c", code], capture_output=True, text=True,
                         cwd="/", timeout=60, check=True)  # fmt: skip
    return Path(out.stdout.strip()).resolve()


def test_installs_into_its_own_venv_with_the_distribution_python(place: Path) -> None:
    venv, bindir = place / "venv", place / "bin"
    proc = install(place, SCALPLE_VENV=str(venv), SCALPLE_BIN_DIR=str(bindir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "home = /usr/bin" in (venv / "pyvenv.cfg").read_text()  # built from /usr/bin/python3
    command = bindir / "scalple"
    assert command.is_symlink() and command.resolve() == (venv / "bin" / "scalple").resolve()
    assert f'export PATH="{bindir}:$PATH"' in proc.stderr  # bindir is not on PATH: it says so
    assert f"its python: {venv}/bin/python" in proc.stderr
    version = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("scalple "), version.stderr
    usage = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "dsar" in usage.stdout and "serve" in usage.stdout
    assert venv in where_scalple_is(venv).parents  # a copy: a service user need not read REPO

    # With that venv active, install.sh installs into it: no venv made elsewhere, no link.
    again = install(place, f"{venv}/bin:{BASE_PATH}", SCALPLE_BIN_DIR=str(place / "bin2"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"is in {venv} " in again.stderr and "creating" not in again.stderr
    assert not (place / "bin2").exists() and not (place / "home" / ".local").exists()
    assert REPO in where_scalple_is(venv).parents  # a developer's venv: the checkout runs


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None,
                    reason="needs root and runuser to run install.sh as another user")  # fmt: skip
def test_a_user_without_venv_support_is_told_what_to_install(place: Path) -> None:
    """Debian ships ensurepip in python3.X-venv; shadowing it stands in for that package
    missing. A user who cannot apt-get is told the package and nothing is installed."""
    shadow = place / "no-ensurepip" / "ensurepip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named ensurepip')\n")
    for d in (shadow.parent, shadow):
        d.chmod(0o755)
    (shadow / "__init__.py").chmod(0o644)
    env = {"PATH": BASE_PATH, "HOME": str(place / "home"), "PYTHONPATH": str(shadow.parent)}
    proc = subprocess.run(
        ["runuser", "-u", "postgres", "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
         "bash", str(INSTALL)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"sudo apt-get install -y python{version}-venv" in proc.stderr, proc.stderr
    assert not (place / "home" / ".local").exists()
