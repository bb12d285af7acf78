"""`scalple keys`: create, rotate and export the ledger's checkpoint signing key."""

from __future__ import annotations

from pathlib import Path

import typer

from scalple import config as cfg
from scalple.ledger.keys import (
    PUBLIC_KEY,
    create_keys,
    load_public_key,
    public_pem,
    resolve_key_dir,
    rotate_keys,
    subject_secret,
)
from scalple.ledger.layout import os_errors

keys_app = typer.Typer(help="Manage the key that signs ledger checkpoints.", no_args_is_help=True)

KeyDir = typer.Option(None, "--key-dir", help="Key directory \\[default: the `key_dir` setting].")
Config = typer.Option(None, "--config", "-c", help="TOML config file \\[env SCALPLE_CONFIG].")


def _key_dir(key_dir: Path | None, config: Path | None) -> tuple[Path, cfg.Config]:
    settings = cfg.load(config, {"key_dir": str(key_dir) if key_dir else None})
    return resolve_key_dir(settings["key_dir"]), settings


@keys_app.command()
def init(key_dir: Path | None = KeyDir, config: Path | None = Config) -> None:
    """Create a signing key (private 0600), its public key, and the subject secret (0600).

    Back up the whole directory now: without the subject secret no `dsar --subject` can find
    anyone in what was recorded, and the public key is what `verify` trusts.
    """
    directory, _ = _key_dir(key_dir, config)
    with os_errors(f"using key directory {directory}"):
        key = create_keys(directory)
        subject_secret(directory)  # made now, not at the first serve, so one backup has it all
    typer.echo(
        f"created signing key {key.id} and subject secret in {directory}\n"
        f"public key: {directory / PUBLIC_KEY} (keep a copy elsewhere for verify)\n"
        f"back up {directory} somewhere safe: see README, 'Keys and backups'"
    )


@keys_app.command()
def rotate(
    key_dir: Path | None = KeyDir,
    ledger: Path | None = typer.Option(
        None, "--ledger", help="Ledger to record the rotation in \\[default: the `ledger` setting]."
    ),
    config: Path | None = Config,
) -> None:
    """Replace the signing key; the old key signs the rotation, recorded in the ledger.

    Restart `scalple serve` afterwards: a running proxy keeps signing with the key it loaded.
    """
    directory, settings = _key_dir(key_dir, config)
    target = ledger or settings.ledger_dir
    with os_errors(f"using key directory {directory}"):
        rotation = rotate_keys(directory, [target])
    typer.echo(
        f"rotated signing key to {rotation.new_key[:16]}… (public key "
        f"{directory / PUBLIC_KEY}); rotation recorded in {target / 'keys'}"
    )


@keys_app.command("export-public")
def export_public(
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here, not stdout."),
    key_dir: Path | None = KeyDir,
    config: Path | None = Config,
) -> None:
    """Print the public key (PEM) that `scalple verify --public-key` takes."""
    directory, _ = _key_dir(key_dir, config)
    with os_errors(f"using key directory {directory}"):
        pem = public_pem(load_public_key(directory / PUBLIC_KEY))
    if output is None:
        typer.echo(pem.decode(), nl=False)
    else:
        output.write_bytes(pem)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
