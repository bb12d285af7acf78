"""Where live alerts go besides the ledger: JSON lines (file or stdout), syslog (RFC 5424 on a
local socket) and an HTTP webhook. None of them runs on the proxy's event loop; the webhook has
a thread and a bounded queue of its own, so a dead endpoint delays nothing else."""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Protocol

log = logging.getLogger("scalple.watch")

Alert = dict[str, Any]
SYSLOG_FACILITY: Final = 13  # log audit
SYSLOG_SEVERITY: Final = {"high": 2, "medium": 4, "low": 5}  # critical, warning, notice
SD_ID: Final = "scalple@32473"  # 32473: the private enterprise number RFC 5612 sets aside
BACKOFF_MAX: Final = 30.0


class Output(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


class JsonLines:
    """One JSON object per line, flushed per alert; `-` is stdout."""

    def __init__(self, target: str) -> None:
        self.name = "stdout" if target == "-" else f"file {target}"
        self._own = target != "-"
        self._f = sys.stdout if target == "-" else Path(target).expanduser().open("a")

    def send(self, alert: Alert) -> None:
        self._f.write(json.dumps(alert, separators=(",", ":")) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._own:
            self._f.close()


def _sd_value(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def rfc5424(alert: Alert, host: str, pid: int) -> bytes:
    """One syslog message: header, structured data naming the finding, the summary as MSG."""
    pri = SYSLOG_FACILITY * 8 + SYSLOG_SEVERITY.get(str(alert.get("severity")), 5)
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
    sd = "".join(
        f' {k}="{_sd_value(alert.get(k))}"'
        for k in ("alert_id", "actor", "rule", "severity", "score")
    )
    msg = f"{alert.get('actor')}: {alert.get('summary')}"
    return f"<{pri}>1 {ts} {host} scalple {pid} alert [{SD_ID}{sd}] \ufeff{msg}".encode()


class Syslog:
    """RFC 5424 datagrams to a local socket (e.g. /dev/log)."""

    def __init__(self, path: str) -> None:
        self.name = f"syslog {path}"
        self._path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._host = socket.gethostname() or "-"

    def send(self, alert: Alert) -> None:
        self._sock.sendto(rfc5424(alert, self._host, os.getpid()), self._path)

    def close(self) -> None:
        self._sock.close()


class Webhook:
    """POSTs each alert as JSON from a thread of its own, retrying with backoff until the
    endpoint takes it. The queue holds `bound` alerts; past it the oldest is dropped, counted and
    logged (it stays in the ledger). An endpoint that refuses an alert (4xx) drops that one."""

    def __init__(self, url: str, bound: int, timeout: float, backoff: float = 0.5) -> None:
        self.name = f"webhook {url}"
        self.url, self.bound, self.timeout, self.backoff = url, max(1, bound), timeout, backoff
        self.queue: collections.deque[Alert] = collections.deque()
        self.dropped = 0
        self.delivered = 0
        self.failures = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="scalple-webhook", daemon=True)
        self._thread.start()

    def send(self, alert: Alert) -> None:
        with self._cond:
            if len(self.queue) >= self.bound:
                lost = self.queue.popleft()
                self.dropped += 1
                log.warning(
                    "webhook %s is not taking alerts and %d are queued: dropped alert %s "
                    "(%d dropped so far; every alert is still in the ledger)",
                    self.url, self.bound, lost.get("alert_id"), self.dropped,
                )  # fmt: skip
            self.queue.append(alert)
            self._cond.notify()

    def _post(self, alert: Alert) -> int:
        req = urllib.request.Request(
            self.url,
            data=json.dumps(alert).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "scalple"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (OSError, ValueError):
            return 0  # unreachable, timed out, refused

    def _run(self) -> None:
        wait = self.backoff
        while True:
            with self._cond:
                while not self.queue and not self._stop:
                    self._cond.wait()
                if not self.queue:
                    return
                alert = self.queue[0]
            status = self._post(alert)
            if 200 <= status < 300 or (400 <= status < 500 and status not in (408, 429)):
                with self._cond:
                    if self.queue and self.queue[0] is alert:
                        self.queue.popleft()
                if status >= 400:
                    self.dropped += 1
                    log.warning("webhook %s refused alert %s (HTTP %d): dropped",
                                self.url, alert.get("alert_id"), status)  # fmt: skip
                else:
                    self.delivered += 1
                wait = self.backoff
                continue
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("webhook %s: %s; %d alerts queued, retrying",
                            self.url, f"HTTP {status}" if status else "unreachable",
                            len(self.queue))  # fmt: skip
            with self._cond:
                if self._stop:
                    return
                self._cond.wait(wait)
            wait = min(wait * 2, BACKOFF_MAX)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(self.timeout + 1)


class Delivery:
    """Every configured output; a failing one is logged and never stops the others."""

    def __init__(self, outputs: Sequence[Output]) -> None:
        self.outputs = list(outputs)
        self.failed = 0

    def send(self, alert: Alert) -> None:
        for out in self.outputs:
            try:
                out.send(alert)
            except OSError as exc:
                self.failed += 1
                log.warning("alert %s not sent to %s: %s", alert.get("alert_id"), out.name, exc)

    def close(self) -> None:
        for out in self.outputs:
            out.close()

    @property
    def webhook(self) -> Webhook | None:
        return next((o for o in self.outputs if isinstance(o, Webhook)), None)


def outputs_of(config: Any) -> Delivery:
    """The outputs the [watch] alerts_* settings ask for."""
    outs: list[Output] = []
    if config["alerts_file"]:
        outs.append(JsonLines(config["alerts_file"]))
    if config["alerts_syslog"]:
        outs.append(Syslog(config["alerts_syslog"]))
    if config["alerts_webhook"]:
        outs.append(
            Webhook(
                config["alerts_webhook"],
                int(config["webhook_queue"]),
                float(config["webhook_timeout"]),
            )
        )
    return Delivery(outs)
