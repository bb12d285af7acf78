"""`scalple serve`: run the audit proxy."""

from __future__ import annotations

from pathlib import Path

import typer

from scalple import config as cfg


def serve(
    listen: str | None = typer.Option(None, help="HOST:PORT to listen on \\[env SCALPLE_LISTEN]."),
    workers: int | None = typer.Option(
        None,
        help="Proxy processes sharing the listen address, each with its own ledger lane; "
        "1 runs one process (default: the number of cores) \\[env SCALPLE_WORKERS].",
    ),
    upstream: str | None = typer.Option(
        None, help="postgresql://HOST:PORT of PgBouncer or PostgreSQL \\[env SCALPLE_UPSTREAM]."
    ),
    ledger: str | None = typer.Option(None, help="Ledger directory \\[env SCALPLE_LEDGER]."),
    durability: str | None = typer.Option(
        None, help="fsync (default) or os \\[env SCALPLE_DURABILITY]."
    ),
    require_identity: bool | None = typer.Option(
        None,
        "--require-identity/--allow-anonymous",
        help="Refuse statements without an identity \\[env SCALPLE_REQUIRE_IDENTITY].",
    ),
    metrics_listen: str | None = typer.Option(
        None, help="HOST:PORT for Prometheus metrics \\[env SCALPLE_METRICS_LISTEN]."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="TOML config file \\[env SCALPLE_CONFIG]."
    ),
) -> None:
    """Run the audit proxy: relay PostgreSQL traffic, recording every statement first.

    SIGHUP re-reads the configuration (new connections use it); SIGTERM stops accepting, lets
    in-flight statements finish within drain_seconds, and seals the ledger. With several
    workers, a supervisor starts them, restarts one that dies, and passes both signals on.
    """
    flags = {
        "listen": listen,
        "workers": workers,
        "upstream": upstream,
        "ledger": ledger,
        "durability": durability,
        "require_identity": require_identity,
        "metrics_listen": metrics_listen,
    }
    settings = cfg.load(config, flags)
    if settings["workers"] > 1:
        from scalple.proxy.supervisor import supervise

        supervise(settings, config, flags)
        return
    from scalple.proxy.server import run

    run(settings, load=lambda: cfg.load(config, flags))


def register(app: typer.Typer) -> None:
    app.command()(serve)
