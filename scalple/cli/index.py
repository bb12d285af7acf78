"""`scalple index`: the derived subject index that makes `dsar --subject` fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from scalple import config as cfg
from scalple.cli.progress import progress_bar
from scalple.dsar.index import (
    UpdateResult,
    describe,
    follow_compaction,
    open_index,
    sealed_segments,
    update_index,
)
from scalple.dsar.proof import note_compacted
from scalple.ledger.compact import TARGET_EVENTS, CompactResult, Merge, events_to_compact
from scalple.ledger.compact import compact as compact_ledger
from scalple.ledger.keys import SUBJECT_SECRET, load_signing_key, resolve_key_dir, subject_secret
from scalple.ledger.lanes import ROOT, Lane, ledger_lanes
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


def _lanes(root: Path) -> list[Lane]:
    """Each lane has an index of its own (LEDGER/lanes/NAME/index); a ledger without lanes has
    one, in LEDGER/index."""
    return ledger_lanes(root)


def _echo(lanes: list[Lane], done: list[tuple[Lane, dict[str, Any]]], json_out: bool) -> None:
    """One line (or JSON object) per lane; as before lanes for a ledger without them."""
    if json_out:
        if len(lanes) == 1 and lanes[0].name == ROOT:
            typer.echo(json.dumps(done[0][1]))
        else:
            typer.echo(json.dumps([{"lane": lane.name, **info} for lane, info in done]))


def _line(lanes: list[Lane], lane: Lane, text: str) -> str:
    return text if len(lanes) == 1 and lane.name == ROOT else f"lane {lane.name}: {text}"


def _update(root: Path, rebuild: bool, json_out: bool) -> None:
    lanes = _lanes(root)
    done = []
    for lane in lanes:
        result = _run(lane.root, rebuild, json_out)
        done.append((lane, dict(result.__dict__)))
        if not json_out:
            typer.echo(
                _line(
                    lanes,
                    lane,
                    f"indexed {result.segments} segments ({result.events:,} events); the index "
                    f"covers seq 1..{result.upto} in {result.runs} file(s)",
                )
            )
    _echo(lanes, done, json_out)


@index_app.command()
def rebuild(
    ledger: Path | None = LedgerOpt, config: Path | None = ConfigOpt, json_out: bool = JsonOpt
) -> None:
    """Drop the index and build it again from every sealed segment (of every lane)."""
    _update(_ledger(ledger, config), True, json_out)


@index_app.command()
def update(
    ledger: Path | None = LedgerOpt, config: Path | None = ConfigOpt, json_out: bool = JsonOpt
) -> None:
    """Index the segments sealed since the last update (merging small index files)."""
    _update(_ledger(ledger, config), False, json_out)


@index_app.command()
def status(
    ledger: Path | None = LedgerOpt, config: Path | None = ConfigOpt, json_out: bool = JsonOpt
) -> None:
    """What the index covers, and whether it is stale (each lane's, in a ledger with lanes)."""
    lanes = _lanes(_ledger(ledger, config))
    done = []
    for lane in lanes:
        info = describe(open_index(lane.root))
        sealed = sealed_segments(Layout(lane.root))
        info["sealed_upto"] = sealed[-1].last_seq if sealed else 0
        done.append((lane, info))
        if not json_out:
            stale = f"stale: {info['stale']}" if info["stale"] else "current"
            text = (
                f"index {stale}; covers seq 1..{info['indexed_upto']} of sealed "
                f"1..{info['sealed_upto']} ({info['segments']} segments, "
                f"{len(info['runs'])} file(s))"
            )
            typer.echo(_line(lanes, lane, text))
    _echo(lanes, done, json_out)


def _compact(root: Path, key_dir: Path, target: int, json_out: bool) -> CompactResult:
    key = load_signing_key(key_dir)  # never a new key: the merged checkpoints must chain on
    _run(root, False, json_out)  # the index follows each merge only if it holds the originals

    secret = subject_secret(key_dir) if (key_dir / SUBJECT_SECRET).exists() else None

    def follow(merge: Merge) -> None:
        follow_compaction(root, merge)
        note_compacted(root, merge, secret)

    if json_out or not sys.stderr.isatty():
        return compact_ledger(root, key, target=target, on_merge=follow)
    with progress_bar() as bar:
        task = bar.add_task("compacting events", total=events_to_compact(root, key, target))
        return compact_ledger(
            root, key, target=target, on_merge=follow, progress=lambda n: bar.advance(task, n)
        )


@index_app.command()
def compact(
    ledger: Path | None = LedgerOpt,
    config: Path | None = ConfigOpt,
    target: int = typer.Option(
        TARGET_EVENTS, "--target-events", help="Events per merged segment, at most.", min=2
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Merge runs of small sealed segments into fewer large ones, re-signed with the current key.

    The merged checkpoint covers the same seqs and hashes and lists the checkpoints it replaces
    (kept with their signatures beside it), so `scalple verify` still proves every event. Safe to
    stop at any point: a later run finishes the job. The index follows each merge.
    """
    settings = cfg.load(config, {"ledger": str(ledger) if ledger else None})
    lanes = _lanes(settings.ledger_dir)
    done = []
    for lane in lanes:  # each lane its own chain: merged within it, never across lanes
        result = _compact(lane.root, resolve_key_dir(settings["key_dir"]), target, json_out)
        merges = result.merges or []
        info = {k: v for k, v in result.__dict__.items() if k != "merges"}
        done.append((lane, {**info, "merged": [m.merged for m in merges]}))
        if json_out:
            continue
        whole = "ledger" if _line(lanes, lane, "") == "" else "lane"
        text = (
            f"merged {sum(len(m.replaced) for m in merges)} segments into {len(merges)} "
            f"({result.events:,} events); the {whole} has {result.segments_after} segments "
            f"(was {result.segments_before})"
            + (f"; removed {result.cleaned} left by an earlier stop" if result.cleaned else "")
        )
        typer.echo(_line(lanes, lane, text))
    _echo(lanes, done, json_out)


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
