"""`scalple people`: the people who sign in to scalple themselves (identity source proxy_auth)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from scalple import config as cfg
from scalple.errors import ConfigError

people_app = typer.Typer(
    help="Manage the people who sign in to scalple with their own password (proxy_auth).",
    no_args_is_help=True,
)

PeopleFile = typer.Option(
    None, "--people-file", help="People file \\[default: the `people_file` setting]."
)
Config = typer.Option(None, "--config", "-c", help="TOML config file \\[env SCALPLE_CONFIG].")


def _file(people_file: Path | None, config: Path | None) -> Path:
    settings = cfg.load(config, {"people_file": str(people_file) if people_file else None})
    if not settings["people_file"]:
        raise ConfigError("no people file: give --people-file or set people_file in [identity]")
    return Path(settings["people_file"]).expanduser()


def _password() -> str:
    if sys.stdin.isatty():
        value = typer.prompt("password", hide_input=True, confirmation_prompt=True)
        return str(value)
    return sys.stdin.readline().rstrip("\n")


@people_app.command()
def add(
    name: str = typer.Argument(..., help="The person's sign-in name, e.g. alice@corp.example."),
    people_file: Path | None = PeopleFile,
    config: Path | None = Config,
) -> None:
    """Add a person, or set a new password (asked twice; read from standard input when piped).

    Only a SCRAM-SHA-256 verifier is stored, never the password. A running `scalple serve`
    takes the change on SIGHUP.
    """
    from scalple.proxy.people import make_verifier, save_person

    path = _file(people_file, config)
    password = _password()
    if not password:
        raise ConfigError("an empty password is not allowed")
    replaced = save_person(path, name, make_verifier(password))
    typer.echo(f"{'updated' if replaced else 'added'} {name} in {path}")


@people_app.command("list")
def list_people(people_file: Path | None = PeopleFile, config: Path | None = Config) -> None:
    """Print the names in the people file."""
    from scalple.proxy.people import load_people

    for name in sorted(load_people(_file(people_file, config))):
        typer.echo(name)


def register(app: typer.Typer) -> None:
    app.add_typer(people_app, name="people")
