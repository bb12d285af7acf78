"""`scalple index`: the derived subject index that makes `dsar --subject` fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from scalple import config as cfg
from scalple.cli.progress import progress_bar
from scalple.dsar.index import UpdateResult, describe, open_index, sealed_segments, update_index
from scalple.ledger.layout import Layout

index_app = typer.Typer(
    help="The derived subject index (rebuildable from the sealed segments at any time).",
    no_args_is_help=True,
)

LedgerOpt = typer.Option(None, "--ledger", help="Ledger directory \\[default: `ledger` setting].")
ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file \\[env SCALPLE_CONFIG].")
JsonOpt = typer.Option(False, "--json", help="Print the result as JSON.")


def _ledger(ledger: Path | None, config: Path | None) -> Path:
    return cfg.load(config, {"ledger": str(ledger) if ledger else None}).ledger_dir


def _run(ledger: Path, rebuild: bool, json_out: bool) -> UpdateResult:
    if json_out or not sys.stderr.isatty():
        return update_index(ledger, rebuild=rebuild)
    todo = sealed_segments(Layout(ledger))
    total = sum(s.last_seq - s.first_seq + 1 for s in todo)
    with progress_bar() as bar:
        task = bar.add_task("indexing events", total=total)
        if not rebuild:
            bar.advance(task, open_index(ledger).upto)
        return update_index(ledger, rebuild=rebuild, progress=lambda n: bar.advance(task, n))


def _report(result: UpdateResult, json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(result.__dict__))
    else:
        typer.echo(
            f"indexed {result.segments} segments ({result.events:,} events); the index covers "
            f"seq 1..{result.upto} in {result.runs} file(s)"
        )


@index_app.command()
def rebuild(
    ledger: Path | None = LedgerOpt, config: Path | None = ConfigOpt, json_out: bool = JsonOpt
) -> None:
    """Drop the index and build it again from every sealed segment."""
    _report(_run(_ledger(ledger, config), True, json_out), json_out)


@index_app.command()
def update(
    ledger: Path | None = LedgerOpt, config: Path | None = ConfigOpt, json_out: bool = JsonOpt
) -> None:
    """Index the segments sealed since the last update (merging small index files)."""
    _report(_run(_ledger(ledger, config), False, json_out), json_out)


@index_app.command()
def status(
    ledger: Path | None = LedgerOpt, config: Path | None = ConfigOpt, json_out: bool = JsonOpt
) -> None:
    """What the index covers, and whether it is stale."""
    root = _ledger(ledger, config)
    info = describe(open_index(root))
    sealed = sealed_segments(Layout(root))
    info["sealed_upto"] = sealed[-1].last_seq if sealed else 0
    if json_out:
        typer.echo(json.dumps(info))
        return
    stale = f"stale: {info['stale']}" if info["stale"] else "current"
    typer.echo(
        f"index {stale}; covers seq 1..{info['indexed_upto']} of sealed 1..{info['sealed_upto']} "
        f"({info['segments']} segments, {len(info['runs'])} file(s))"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
