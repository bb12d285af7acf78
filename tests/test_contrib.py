"""contrib/: the systemd unit and the config it runs with agree with systemd and with Scalple."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scalple import config as cfg

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
UNIT = CONTRIB / "scalple.service"
ROOT_VENV = "/opt/scalple/venv"  # where scripts/install.sh installs as root (scripts/venv.sh)


def unit() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min)?", value)
    assert m, value
    return float(m.group(1)) * (60 if m.group(2) == "min" else 1)


def test_the_unit_runs_serve_as_install_sh_installs_it() -> None:
    u = unit()
    command = shlex.split(u["ExecStart"][0])
    assert command[:2] == [f"{ROOT_VENV}/bin/scalple", "serve"]
    assert ROOT_VENV in (CONTRIB.parent / "scripts" / "venv.sh").read_text()
    usage = subprocess.run(
        [sys.executable, "-m", "scalple", "serve", "--help"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert usage.returncode == 0, usage.stderr
    flags = [arg for arg in command[2:] if arg.startswith("-")]
    assert flags and all(re.search(rf"(^|\s){re.escape(f)}\s", usage.stdout) for f in flags)
    config_file = command[command.index("--config") + 1]
    assert u["Environment"] == [f"SCALPLE_CONFIG={config_file}"]
    assert u["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # serve re-reads its config on SIGHUP
    assert u["KillSignal"] == ["SIGTERM"] and "SIGTERM" in usage.stdout  # serve drains on it
    assert u["User"] == ["scalple"] and u["StateDirectory"] == ["scalple"]


def test_the_example_config_loads_and_drains_within_the_stop_timeout() -> None:
    settings = cfg.load(CONTRIB / "scalple.toml", env={})
    assert str(settings.ledger_dir).startswith("/var/lib/scalple/")  # the unit's StateDirectory
    assert settings["key_dir"].startswith("/var/lib/scalple/")
    stop = _seconds(unit()["TimeoutStopSec"][0])
    drain = float(settings["drain_seconds"])
    assert drain + 30 <= stop  # drain, then room to seal the journal before SIGKILL


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """systemd-analyze also checks that ExecStart exists: point it at this run's scalple."""
    here = Path(sys.executable).parent / "scalple"
    if not here.exists():
        pytest.skip(f"no scalple command beside {sys.executable} to stand in for ExecStart")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(f"{ROOT_VENV}/bin/scalple", str(here)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stderr
