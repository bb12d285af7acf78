"""`scalple config show` and what a bad config file says: the file, the line and the setting."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from scalple import config as cfg
from scalple.cli.main import app
from scalple.errors import ConfigError

CLEAN_ENV = {s.env: None for s in cfg.REGISTRY} | {"SCALPLE_CONFIG": None, "COLUMNS": "200"}


def show(*args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["config", "show", *args], env={**CLEAN_ENV, **env})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def show_json(*args: str, **env: str) -> dict[str, Any]:
    code, out = show("--json", *args, **env)
    assert code == 0, out
    data: dict[str, Any] = json.loads(out)
    return data


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in data["settings"]}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scalple.toml"
    path.write_text(text)
    return path


def test_every_setting_is_shown_with_its_origin(tmp_path: Path) -> None:
    path = write(
        tmp_path, '# comment\n[proxy]\nlisten = "0.0.0.0:7000"\n\n[ledger]\ndurability = "os"\n'
    )
    data = show_json("--config", str(path), SCALPLE_REQUIRE_IDENTITY="yes")
    settings = by_name(data)
    assert list(settings) == [s.name for s in cfg.REGISTRY]
    assert data["file"] == str(path)
    assert settings["listen"] == {
        **settings["listen"],
        "value": "0.0.0.0:7000",
        "origin": f"file:{path}:3",
    }
    assert settings["durability"]["origin"] == f"file:{path}:6"
    assert settings["require_identity"]["value"] is True
    assert settings["require_identity"]["origin"] == "env:SCALPLE_REQUIRE_IDENTITY"
    assert settings["upstream"]["origin"] == "default"
    assert settings["trusted_networks"]["value"] == ["127.0.0.0/8", "::1/128"]


def test_80_columns_shows_one_block_per_setting() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # a path that fits beside its label
        path = write(Path(short), '[proxy]\nupstream = "postgresql://app:hunter2@db:6432"\n')
        code, out = show("--config", str(path), COLUMNS="80")
    assert code == 0
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    at = lines.index("[proxy] upstream")
    block = lines[at + 1 : lines.index("", at)]
    assert block[0] == "  value:   postgresql://app:***@db:6432"
    assert block[1] == f"  from:    file {path}:2"
    assert block[-1] == "  env var: SCALPLE_UPSTREAM"
    assert "  env var: SCALPLE_ANALYSIS_CACHE_SIZE" in lines  # never split into letters


def test_env_var_names_the_file_and_beats_it(tmp_path: Path) -> None:
    path = write(tmp_path, '[proxy]\nlisten = "0.0.0.0:7000"\n')
    settings = by_name(show_json(SCALPLE_CONFIG=str(path), SCALPLE_LISTEN="127.0.0.1:7001"))
    assert settings["listen"]["value"] == "127.0.0.1:7001"
    assert settings["listen"]["origin"] == "env:SCALPLE_LISTEN"


def test_human_output_has_sections_values_and_origins(tmp_path: Path) -> None:
    path = write(tmp_path, '[proxy]\nupstream = "postgresql://app:hunter2@db:6432"\n')
    code, out = show("--config", str(path))
    assert code == 0
    assert f"Config file: {path}" in out
    row = next(line for line in out.splitlines() if "[proxy] upstream" in line)
    assert "postgresql://app:***@db:6432" in row and f"file {path}:2" in row
    assert "hunter2" not in out
    assert "SCALPLE_UPSTREAM" in row


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[proxy]\nlisten = "127.0.0.1:6433"\nconnect_timeout = "soon"\n',
            ":3: [proxy] connect_timeout: ",
        ),
        (
            '[proxy]\n\nlisten = "nowhere"\n',
            ":3: [proxy] listen: expected HOST:PORT, got 'nowhere'",
        ),
        ("[identity]\nrequire_identity = 3\n", ":2: [identity] require_identity: expected true"),
        (
            '[proxy]\nlisen = "127.0.0.1:1"\n',
            ":2: unknown setting [proxy] lisen; did you mean [proxy] listen?",
        ),
        (
            '[ledger]\nlisten = "127.0.0.1:1"\n',
            ":2: unknown setting [ledger] listen; did you mean [proxy] listen?",
        ),
        ('listen = "127.0.0.1:1"\n', ":1: 'listen' must be inside [proxy]"),
        (
            '[identity]\ntrusted_networks = ["10.0.0.0/8", "not-a-net"]\n',
            ":2: [identity] trusted_networks: ",
        ),
        ("[proxy]\nlisten = \n", "line 2"),
    ],
)
def test_a_bad_file_names_the_line_and_the_setting(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        show("--config", str(path))
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_a_bad_file_reaches_the_user_as_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, '[ledger]\ndurability = "sometimes"\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from scalple.cli.main import main; main()",
            "config",
            "show",
            "--config",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}:2: [ledger] durability: expected one of fsync, os" in proc.stderr


def test_a_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        show("--config", str(tmp_path / "nope.toml"))


def test_bad_env_var_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="environment variable SCALPLE_DURABILITY"):
        show(SCALPLE_DURABILITY="maybe")


def test_a_mistyped_env_var_is_pointed_out() -> None:
    code, out = show(SCALPLE_LISTN="0.0.0.0:1", SCALPLE_WHATEVER="x")
    assert code == 0
    assert "warning: SCALPLE_LISTN is not a setting; did you mean SCALPLE_LISTEN?" in out
    assert "warning: SCALPLE_WHATEVER is not a setting" in out
    data = show_json(SCALPLE_LISTN="0.0.0.0:1")
    assert "SCALPLE_LISTN is not a setting; did you mean SCALPLE_LISTEN?" in data["unknown_env"]


def test_the_people_password_is_never_shown() -> None:
    code, out = show(SCALPLE_PEOPLE_PASSWORD="s3cret-upstream")
    assert code == 0 and "s3cret-upstream" not in out
    row = next(line for line in out.splitlines() if "people_password" in line)
    assert "***" in row and "SCALPLE_PEOPLE_PASSWORD" in row
    data = show_json(SCALPLE_PEOPLE_PASSWORD="s3cret-upstream")
    assert by_name(data)["people_password"]["value"] == "***"
