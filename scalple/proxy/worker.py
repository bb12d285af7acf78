"""One worker of `scalple serve --workers N`, as its supervisor starts it:
`python -m scalple.proxy.worker ROLE`, ROLE being a WorkerRole as JSON."""

from __future__ import annotations

import signal
import sys

from scalple import config as cfg
from scalple.errors import ScalpleError
from scalple.proxy.workers import WorkerRole


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the proxy's loop takes it: a reload
    role = WorkerRole.from_json(argv[1])

    def load() -> cfg.Config:
        return cfg.load(role.config, role.flags)

    try:
        from scalple.proxy.server import run

        run(load(), load, worker=role)
    except ScalpleError as exc:
        print(f"scalple [{role.name}]: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main(sys.argv)
