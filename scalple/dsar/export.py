"""A DSAR report to hand over: one self-contained HTML file, and the check a third party runs on it.

The file embeds, in `<script type="application/json" id="scalple-proof">`, every listed event's
ledger records (the full canonical fields, so their hashes can be recomputed) and the signed
checkpoints of the segments holding them, and the ledger's key rotations. `check_export`
recomputes each record hash, checks each checkpoint's Ed25519 signature by a key the given public
key reaches through those rotations (as `verify` trusts keys), and that each record's seq lies
in the segment its checkpoint signs; given the ledger too, it checks the segment files hold
those very hashes at those seqs and match the digests their checkpoints sign.
"""

from __future__ import annotations

import html
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb
import msgspec

from scalple.dsar.errors import BadExport
from scalple.dsar.query import Access, SubjectAnswer
from scalple.dsar.render import subject_json, when
from scalple.errors import LedgerError
from scalple.events import AuditEvent
from scalple.ledger.canonical import canonical_bytes, event_hash
from scalple.ledger.checkpoint import (
    Checkpoint,
    convert_checkpoint,
    file_sha256,
    read_checkpoint,
)
from scalple.ledger.keys import Rotation, read_rotation
from scalple.ledger.lanes import LANES, lane_dir
from scalple.ledger.layout import Layout
from scalple.ledger.query import quote
from scalple.ledger.trust import KeyChain, key_chain

PROOF_ID: Final = "scalple-proof"
_PROOF_RE: Final = re.compile(
    rb'<script type="application/json" id="scalple-proof">(.*?)</script>', re.S
)


def _record(r: dict[str, Any]) -> dict[str, Any]:
    fields = AuditEvent.__struct_fields__
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items() if k in fields}


def _segment_path(ledger: Path, seg: str) -> Path:
    """A segment named in an export: `NAME.parquet`, or `lanes/LANE/NAME.parquet` in a lane."""
    lane, _, name = seg.rpartition("/")
    if not lane:
        return Layout(ledger).segment_dir / seg
    top, _, lane_name = lane.partition("/")
    if top != LANES:
        raise LedgerError(f"the export names segment {seg!r}, in no lane")
    return lane_dir(ledger, lane_name) / "segments" / name


def proof_bundle(ans: SubjectAnswer, ledger: Path) -> dict[str, Any]:
    """Records and checkpoints a third party needs for every listed event."""
    layout = Layout(ledger)
    checkpoints: dict[str, dict[str, Any]] = {}
    records = []
    for a in ans.accesses:
        for r in a.records:
            seg = r.get("segment")
            if seg and seg not in checkpoints:
                cp_path = _segment_path(ledger, seg).with_suffix(".checkpoint")
                cp, _ = read_checkpoint(cp_path)
                checkpoints[seg] = msgspec.to_builtins(cp)
            records.append({"event_id": a.event_id, "segment": seg, "record": _record(r)})
    rotations = [msgspec.to_builtins(read_rotation(p)) for p in layout.rotations()]
    return {"v": 1, "records": records, "checkpoints": checkpoints, "rotations": rotations}


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1b1f24}
h1{font-size:1.4em}table{border-collapse:collapse;width:100%;margin-top:1em}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f5f7;cursor:pointer}code{font-size:12px;word-break:break-all}
.ok{color:#116329}.bad{color:#b0161e;font-weight:bold}.meta td{border:0;padding:2px 8px}
svg{border:1px solid #ddd;background:#fbfbfc}input{padding:4px;width:24em}
"""

_JS = """
document.getElementById('filter').addEventListener('input', function (e) {
  var q = e.target.value.toLowerCase();
  document.querySelectorAll('#accesses tbody tr').forEach(function (tr) {
    tr.style.display = tr.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
  });
});
"""

_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
_COLORS: Final = {"READ": "#1f6feb", "WRITE": "#d1242f", "DDL": "#8250df", "MISC": "#57606a"}


def timeline_svg(accesses: list[Access], start: int | None, end: int | None) -> str:
    """Each access as a mark on a line from the first to the last event of the ledger."""
    width, height, pad = 900, 90, 30
    lo = start if start is not None else min((a.ts for a in accesses), default=0)
    hi = end if end is not None else max((a.ts for a in accesses), default=lo + 1)
    span = max(hi - lo, 1)

    def x(ts: int) -> float:
        return pad + (width - 2 * pad) * (ts - lo) / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="timeline of accesses">',
        f'<line x1="{pad}" y1="50" x2="{width - pad}" y2="50" stroke="#999"/>',
    ]
    for i in range(5):
        ts = lo + span * i // 4
        parts.append(
            f'<text x="{x(ts):.1f}" y="80" font-size="11" text-anchor="middle">'
            f"{html.escape(when(ts)[:10])}</text>"
        )
    for a in accesses:
        color = _COLORS.get(a.audit_class or "", "#57606a")
        title = html.escape(f"{when(a.ts)} {a.actor or '?'} {a.audit_class or ''} {a.event_id}")
        parts.append(
            f'<circle cx="{x(a.ts):.1f}" cy="{50 - 12 if "result" in a.seen_in else 50}" r="4" '
            f'fill="{color}" fill-opacity="0.7"><title>{title}</title></circle>'
        )
    parts.append('<text x="4" y="42" font-size="10">result</text>')
    parts.append('<text x="4" y="62" font-size="10">query</text></svg>')
    return "".join(parts)


def _row(a: Access) -> str:
    cells = [
        when(a.ts),
        f"{a.actor or '(unknown)'} [{a.identity_source}]",
        f"{a.client_addr or '-'} {a.application_name or ''}",
        a.audit_class or "-",
        ", ".join(a.tables) + "<br>" + ", ".join(a.columns),
        "-" if a.rows is None else str(a.rows),
        a.status + (f" {a.sqlstate}" if a.sqlstate else ""),
        ", ".join(a.seen_in),
        a.statement or "",
    ]
    proof = "<br>".join(
        f"{r['kind']} seq {r['seq']}<br><code>{r['hash']}</code><br>"
        f"{html.escape(r.get('segment') or 'journal (not yet sealed)')}"
        for r in a.records
    )
    tds = "".join(f"<td>{c if i == 4 else html.escape(c)}</td>" for i, c in enumerate(cells))
    return f"<tr>{tds}<td><code>{html.escape(a.event_id)}</code></td><td>{proof}</td></tr>"


def render_html(ans: SubjectAnswer, ledger: Path) -> str:
    """The report as one HTML file: no external resource, nothing fetched when opened."""
    summary = subject_json(ans)
    bundle = json.dumps(proof_bundle(ans, ledger), separators=(",", ":"), default=str)
    bundle = bundle.replace("</", "<\\/")
    v = ans.verification
    asked = ", ".join(html.escape(k.label) for k in ans.subjects)
    led = summary["ledger"]
    rows = "".join(_row(a) for a in ans.accesses) or (
        '<tr><td colspan="11">No statement in this range touched this person\'s data.</td></tr>'
    )
    cls = "ok" if v.intact else "bad"
    period = (
        f"{summary['query']['since'] or 'start of ledger'} to {summary['query']['until'] or 'now'}"
    )
    span = f"seq {led['first_seq']}..{led['last_seq']}, {led['first_ts']} to {led['last_ts']}"
    generated = when(time.time_ns() // 1000)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>Data access report</title><style>{_CSS}</style></head><body>
<h1>Data access report: {asked}</h1>
<table class="meta">
<tr><td>Accesses</td><td>{len(ans.accesses)}</td></tr>
<tr><td>Ledger range</td><td>{span}
 ({led["segments"]} sealed segments, {led["journal_events"]} journal events)</td></tr>
<tr><td>Period asked</td><td>{period}</td></tr>
<tr><td>Verification</td><td class="{cls}">{html.escape(v.summary())}</td></tr>
<tr><td>Generated</td><td>{generated} by scalple dsar</td></tr>
</table>
<h2>Timeline</h2>
{timeline_svg(ans.accesses, ans.coverage.first_ts, ans.coverage.last_ts)}
<h2>Accesses</h2>
<input id="filter" placeholder="filter rows">
<table id="accesses"><thead><tr><th>when (UTC)</th><th>who [identity]</th><th>from</th>
<th>class</th><th>tables / columns</th><th>rows</th><th>status</th><th>seen in</th>
<th>statement (masked)</th><th>event id</th><th>ledger proof</th></tr></thead>
<tbody>{rows}</tbody></table>
<h2>Checking this report</h2>
<p>Each listed event's ledger records and the signed checkpoints of the segments holding them are
embedded below. <code>scalple verify --export THIS_FILE --public-key KEY.pem</code> recomputes
every record hash and checks every checkpoint signature; with the ledger at hand it also checks the
sealed segments hold these hashes at these positions.</p>
<script type="application/json" id="{PROOF_ID}">{bundle}</script>
<script>{_JS}</script>
</body></html>
"""


# -- checking an export --------------------------------------------------------------------------


@dataclass
class ExportCheck:
    """What `check_export` found: `ok` when every record and checkpoint checks out."""

    records: int = 0
    checkpoints: int = 0
    unsealed: int = 0
    against_ledger: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if not self.ok:
            return f"export does not check out: {self.problems[0]}"
        text = (
            f"export checks out: {self.records} record hashes recomputed, "
            f"{self.checkpoints} checkpoint signatures valid"
        )
        if self.against_ledger:
            text += "; the ledger's segments hold these records"
        if self.unsealed:
            text += f"; {self.unsealed} records were still in the journal (no checkpoint yet)"
        return text


def read_bundle(path: Path) -> dict[str, Any]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BadExport(f"cannot read {path}: {exc.strerror}") from exc
    m = _PROOF_RE.search(data)
    if m is None:
        raise BadExport(f"{path} is not a scalple dsar export (no embedded proof)")
    try:
        bundle = json.loads(m.group(1).replace(b"<\\/", b"</"))
    except ValueError as exc:
        raise BadExport(f"{path}: the embedded proof is not valid JSON ({exc})") from exc
    if not isinstance(bundle, dict) or bundle.get("v") != 1:
        raise BadExport(f"{path}: unknown proof format")
    return bundle


def _keys(bundle: dict[str, Any], public_key: str, out: ExportCheck) -> KeyChain:
    """The keys the export's checkpoints may be signed by: `public_key` and the keys the
    rotations it carries reach from it, as `verify` trusts them."""
    rotations = []
    for i, raw in enumerate(bundle.get("rotations", [])):
        try:
            rotations.append((f"rotation {i + 1}", msgspec.convert(raw, Rotation)))
        except msgspec.ValidationError as exc:
            out.problems.append(f"rotation {i + 1} is malformed: {exc}")
    chain = key_chain(public_key, rotations)
    out.problems.extend(chain.problems)
    return chain


def _checkpoints(
    bundle: dict[str, Any], public_key: str, out: ExportCheck
) -> dict[str, Checkpoint]:
    keys = _keys(bundle, public_key, out)
    found = {}
    for name, raw in bundle.get("checkpoints", {}).items():
        try:
            cp = convert_checkpoint(raw)  # a merged segment's checkpoint has more fields
        except msgspec.ValidationError as exc:
            out.problems.append(f"checkpoint of {name} is malformed: {exc}")
            continue
        if keys.rank(cp.public_key) is None:
            out.problems.append(f"checkpoint of {name} is signed by another key")
        elif not cp.signature_valid():
            out.problems.append(f"checkpoint of {name} has an invalid signature")
        elif cp.segment != name.rpartition("/")[2]:
            out.problems.append(f"checkpoint of {name} names segment {cp.segment}")
        found[name] = cp
        out.checkpoints += 1
    return found


def _record_hash(raw: dict[str, Any]) -> tuple[AuditEvent | None, str]:
    try:
        event = msgspec.convert(raw, AuditEvent)
    except msgspec.ValidationError:
        return None, ""
    return event, event_hash(canonical_bytes(event))


def check_export(path: Path, public_key: str, ledger: Path | None = None) -> ExportCheck:
    """Check an exported report against `public_key` (raw hex), and against `ledger` if given."""
    bundle = read_bundle(path)
    out = ExportCheck()
    cps = _checkpoints(bundle, public_key, out)
    located: dict[str, list[tuple[int, str]]] = {}
    for item in bundle.get("records", []):
        event, h = _record_hash(item.get("record", {}))
        out.records += 1
        if event is None or h != event.hash:
            out.problems.append(f"record of event {item.get('event_id')} does not hash to its hash")
            continue
        seg = item.get("segment")
        if seg is None:
            out.unsealed += 1
            continue
        cp = cps.get(seg)
        if cp is None:
            out.problems.append(f"seq {event.seq}: no checkpoint for {seg} in the export")
        elif not cp.first_seq <= event.seq <= cp.last_seq:
            out.problems.append(f"seq {event.seq} is outside the segment its checkpoint signs")
        else:
            located.setdefault(seg, []).append((event.seq, event.hash))
    if ledger is not None and not out.problems:
        _against_ledger(Path(ledger), cps, located, out)
    return out


def _against_ledger(
    ledger: Path, cps: dict[str, Checkpoint], located: dict[str, list[tuple[int, str]]],
    out: ExportCheck,
) -> None:  # fmt: skip
    con = duckdb.connect()
    try:
        for seg, items in located.items():
            parquet = _segment_path(ledger, seg)
            if not parquet.exists():
                out.problems.append(f"the ledger has no segment {seg}")
                continue
            ledger_cp, _ = read_checkpoint(parquet.with_suffix(".checkpoint"))
            if ledger_cp != cps[seg]:
                out.problems.append(f"the ledger's checkpoint of {seg} differs from the export's")
            if file_sha256(parquet) != cps[seg].segment_sha256:
                out.problems.append(f"segment {seg} differs from the digest its checkpoint signs")
            seqs = ", ".join(str(s) for s, _ in items)
            held = dict(
                con.execute(
                    f"SELECT seq, hash FROM read_parquet({quote(parquet)}) WHERE seq IN ({seqs})"
                ).fetchall()
            )
            for seq, h in items:
                if held.get(seq) != h:
                    out.problems.append(f"the ledger holds another record at seq {seq}")
    finally:
        con.close()
    out.against_ledger = True
