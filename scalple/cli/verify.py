"""`scalple verify`: prove a ledger unchanged, or name its first bad entry.

Exit status: 0 intact, 1 tampered, 2 unusable input.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console

from scalple import config as cfg
from scalple.cli.progress import progress_bar
from scalple.errors import LedgerError, ScalpleError, TamperDetected
from scalple.ledger.checkpoint import Checkpoint, read_checkpoint
from scalple.ledger.keys import PUBLIC_KEY, load_public_key, resolve_key_dir
from scalple.ledger.verify import Progress as Advance
from scalple.ledger.verify import Report, total_events, verify_ledger


def _trusted_key(public_key: Path | None, settings: cfg.Config) -> str:
    path = public_key or resolve_key_dir(settings["key_dir"]) / PUBLIC_KEY
    if public_key is None and not path.exists():
        raise LedgerError(
            f"no public key to check signatures with: pass --public-key FILE (none at {path})"
        )
    return load_public_key(path)


def _verify_export(
    export: Path, ledger: Path | None, public_key: Path | None, config: Path | None, json_out: bool
) -> None:
    from scalple.dsar.export import check_export

    settings = cfg.load(config, {"ledger": str(ledger) if ledger else None})
    result = check_export(export, _trusted_key(public_key, settings), ledger)
    if json_out:
        typer.echo(
            json.dumps(
                {"result": "intact" if result.ok else "tampered", **asdict(result)}, indent=2
            )
        )
        raise typer.Exit(0 if result.ok else TamperDetected.exit_code)
    if not result.ok:
        raise TamperDetected(result.summary())
    typer.echo(result.summary())


def _saved(checkpoint: Path | None) -> tuple[Checkpoint, str] | None:
    if checkpoint is None:
        return None
    saved, _ = read_checkpoint(checkpoint)
    return saved, checkpoint.name


@contextmanager
def _progress(show: bool, total: int) -> Iterator[Advance]:
    if not show:
        yield lambda n: None
        return
    with progress_bar() as bar:
        task = bar.add_task("verifying", total=total)
        yield lambda n: bar.advance(task, n)


def _summary(report: Report) -> str:
    if report.lanes:
        return _lanes_summary(report)
    where = f"{report.segments} sealed segments and {report.journal_events} journal events"
    text = (
        f"intact: {report.events:,} events ({where}); last seq {report.last_seq}, "
        f"last hash {report.last_hash[:16]}…"
    )
    if report.journal_events:
        vouched = report.journal_events - report.unvouched
        text += f"\njournal: {vouched} of {report.journal_events} events under a signed head"
        if report.last_head_at is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(report.last_head_at / 1e6))
            text += f" (the last signed {when})"
    if report.checkpoint_extended:
        text += f"\nextends checkpoint {report.checkpoint_extended}"
    return text


def _lanes_summary(report: Report) -> str:
    where = f"{report.segments} sealed segments and {report.journal_events} journal events"
    lines = [f"intact: {report.events:,} events in {len(report.lanes)} lanes ({where})"]
    for lane in report.lanes:
        lines.append(
            f"  lane {lane.lane}: {lane.events:,} events, last seq {lane.last_seq}, "
            f"last hash {lane.last_hash[:16]}…"
        )
    if report.journal_events:
        vouched = report.journal_events - report.unvouched
        lines.append(f"journal: {vouched} of {report.journal_events} events under a signed head")
    return "\n".join(lines)


def _to_json(report: Report) -> str:
    out = asdict(report)
    out["result"] = "intact" if report.intact else "tampered"
    return json.dumps(out, indent=2)


def verify(
    ledger: Path | None = typer.Argument(
        None, help="Ledger directory \\[default: the `ledger` setting]."
    ),
    public_key: Path | None = typer.Option(
        None, "--public-key", help="Trusted public key (PEM) \\[default: signing.pub in key_dir]."
    ),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="A checkpoint saved earlier: prove the ledger still extends it."
    ),
    deep: bool = typer.Option(
        False,
        "--deep",
        help="Also recompute every sealed event's hash from its columns (slower; each segment "
        "was checked this way before it was signed).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print only the result, as JSON."),
    export: Path | None = typer.Option(
        None,
        "--export",
        help="Check a report exported by `scalple dsar --format html` against the public key "
        "(and against LEDGER, when given) instead of a whole ledger.",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="TOML config file \\[env SCALPLE_CONFIG]."
    ),
) -> None:
    """Recompute every hash, link and signature of a ledger; name the first bad entry.

    Exit status: 0 intact, 1 tampered, 2 unusable input.
    """
    if export is not None:
        _verify_export(export, ledger, public_key, config, json_out)
        return
    try:
        settings = cfg.load(config, {"ledger": str(ledger) if ledger else None})
        root = settings.ledger_dir
        key, saved = _trusted_key(public_key, settings), _saved(checkpoint)
        with _progress(not json_out and sys.stderr.isatty(), total_events(root)) as advance:
            report = verify_ledger(root, key, saved=saved, progress=advance, deep=deep)
    except ScalpleError as exc:
        if json_out:
            typer.echo(json.dumps({"result": "unusable", "error": str(exc)}, indent=2))
            raise typer.Exit(exc.exit_code) from None
        raise
    if json_out:
        typer.echo(_to_json(report))
        raise typer.Exit(0 if report.intact else TamperDetected.exit_code)
    for warning in report.warnings:
        Console(stderr=True).print(f"[yellow]warning:[/] {warning}", highlight=False)
    if report.first_bad is not None:
        raise TamperDetected(f"ledger {root} was changed: {report.first_bad}")
    typer.echo(_summary(report))


def register(app: typer.Typer) -> None:
    app.command()(verify)
