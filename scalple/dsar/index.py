"""The derived subject index: subject key → the seqs of the records that name the subject.

Under LEDGER/index/: `run-<first>-<last>.parquet` files of rows (sk, seq, partner), each sorted by
sk so a lookup reads one row group per key (min/max statistics prune the rest), and
`manifest.json` naming the segments indexed (with their checkpoint digests) and the statements
still waiting for an outcome. `sk` is the first 60 bits of a subject hash (a lookup rechecks the
full hash on the records it fetches); `partner` is the seq of the other record of the same
statement (outcome for a statement, statement for an outcome), so one lookup finds both.
Everything here is rebuilt from the sealed segments; deleting the directory loses nothing.

Who writes it: `scalple serve` after each seal (on a thread of its own), `scalple index`, and
compaction. One at a time: they hold LEDGER/index.lock while they update. Readers take the
manifest (replaced whole, atomically) and the files it names; a file merged away under a reader
makes it fall back to reading the segments directly.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import duckdb
import msgspec

from scalple.errors import LedgerError
from scalple.ledger.checkpoint import digest
from scalple.ledger.layout import Layout, SegmentFiles
from scalple.ledger.query import quote

if TYPE_CHECKING:
    from scalple.ledger.compact import Merge

INDEX_DIR: Final = "index"
MANIFEST: Final = "manifest.json"
ROW_GROUP_ROWS: Final = 65_536
LOCK: Final = "index.lock"
MAX_RUN_SEQS: Final = 16_000_000  # runs stop growing here: no update re-sorts the whole index
_ATTEMPTS: Final = 3


class _Vanished(Exception):
    """A segment being indexed was removed (compacted into another) while it was read."""


SK_HEX: Final = 15  # 60 bits: a positive BIGINT
ACCESS_DIR: Final = "access"
ACCESS_ROW_GROUP_ROWS: Final = 2048
ACTOR_DIR: Final = "actors"
ACTOR_ROW_GROUP_ROWS: Final = 16_384

Progress = Callable[[int], None]


def sk_of(subject_hash: str) -> int:
    """The index key of a subject hash."""
    return int(subject_hash[:SK_HEX], 16)


def _sk_sql(x: str) -> str:
    return f"CAST(('0x' || substr({x}, 1, {SK_HEX})) AS BIGINT)"


class Pending(msgspec.Struct, frozen=True):
    """A statement indexed without its outcome yet: where it is and the subjects it named."""

    event_id: str
    seq: int
    sks: list[int]


class Manifest(msgspec.Struct, kw_only=True):
    v: int = 1
    segments: list[tuple[str, str]] = []  # (segment file name, checkpoint digest), in order
    upto: int = 0  # last seq indexed; everything after is read directly
    runs: list[str] = []
    pending: list[Pending] = []


@dataclass
class IndexState:
    """The index as usable now: which runs cover which seqs, or why it is not used."""

    root: Path
    manifest: Manifest
    stale: str | None = None
    runs: list[Path] = field(default_factory=list)

    @property
    def upto(self) -> int:
        return 0 if self.stale else self.manifest.upto


def index_dir(ledger: Path) -> Path:
    return Path(ledger) / INDEX_DIR


def sealed_segments(layout: Layout) -> list[SegmentFiles]:
    """Segments with their checkpoint: the ones `events_view` reads."""
    return layout.sealed()


def checkpoint_digest(seg: SegmentFiles) -> str:
    return digest(seg.checkpoint.read_bytes())


def read_manifest(ledger: Path) -> Manifest:
    path = index_dir(ledger) / MANIFEST
    try:
        return msgspec.json.decode(path.read_bytes(), type=Manifest)
    except FileNotFoundError:
        return Manifest()
    except (OSError, msgspec.DecodeError):
        return Manifest()  # derived data: unreadable means rebuild, never an error


def _write_manifest(ledger: Path, manifest: Manifest) -> None:
    path = index_dir(ledger) / MANIFEST
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgspec.json.encode(manifest))
    os.replace(tmp, path)


def open_index(ledger: Path) -> IndexState:
    """The index of `ledger` if its segments are still the ones it indexed (else `stale`)."""
    root = index_dir(ledger)
    manifest = read_manifest(ledger)
    state = IndexState(root, manifest)
    segments = sealed_segments(Layout(ledger))
    if len(manifest.segments) > len(segments):
        state.stale = "the ledger has fewer segments than the index (compacted or replaced?)"
        return state
    for (name, cp_digest), seg in zip(manifest.segments, segments, strict=False):
        if seg.parquet.name != name or checkpoint_digest(seg) != cp_digest:
            state.stale = f"segment {seg.parquet.name} differs from the one indexed"
            return state
    state.runs = [root / r for r in manifest.runs]
    if missing := [r for r in state.runs if not r.exists()]:
        state.stale = f"index file {missing[0].name} is missing"
    return state


def _connect(root: Path, threads: int = 2, memory_limit: str = "1GB") -> duckdb.DuckDBPyConnection:
    spill = root / "tmp"
    spill.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(
        config={
            "threads": threads,
            "memory_limit": memory_limit,
            "temp_directory": str(spill),
            "preserve_insertion_order": False,
        }
    )
    con.execute("SET enable_progress_bar = false")
    return con


_CHUNK_SQL: Final = f"""
CREATE OR REPLACE TEMP TABLE rec AS
  SELECT seq, event_id, kind, status, subjects FROM read_parquet({{path}})
  WHERE kind IN ('statement', 'outcome');
CREATE OR REPLACE TEMP TABLE paired AS
  SELECT a.seq, a.event_id, a.kind, a.status, a.subjects, coalesce(b.seq, c.seq) AS partner
  FROM rec a
  LEFT JOIN rec b ON b.event_id = a.event_id AND b.kind <> a.kind
  LEFT JOIN pending c ON a.kind = 'outcome' AND c.event_id = a.event_id;
COPY (
  SELECT {_sk_sql("unnest(subjects)")} AS sk, seq, partner, kind = 'outcome' AS res
  FROM paired WHERE len(subjects) > 0
  UNION ALL
  SELECT unnest(c.sks) AS sk, c.seq, p.seq AS partner, false AS res
  FROM pending c JOIN paired p ON p.kind = 'outcome' AND p.event_id = c.event_id
) TO {{out}} (FORMAT parquet, COMPRESSION zstd);
COPY (
  SELECT s.seq, p.partner AS oseq, s.event_id, s.ts_start, s.actor, s.actor_email,
         s.identity_source, s.client_addr, s.client_port, s.application_name, s.db_role,
         s.database, s.audit_class, s.tables, s.columns, o.rows, coalesce(o.status, s.status)
         AS status, o.sqlstate, s.statement,
         list_transform(list_distinct(list_concat(s.subjects, coalesce(o.subjects, []))),
                        lambda x: {_sk_sql("x")}) AS sks
  FROM read_parquet({{path}}) s JOIN paired p ON p.seq = s.seq
  LEFT JOIN read_parquet({{path}}) o ON o.kind = 'outcome' AND o.event_id = s.event_id
  WHERE s.kind = 'statement' ORDER BY s.seq
) TO {{access}} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ACCESS_ROW_GROUP_ROWS});
COPY (
  SELECT who, * EXCLUDE (who, oseq, actor, actor_email, client_port, db_role, database, columns)
  FROM (SELECT unnest(list_distinct(list_filter([actor, actor_email], lambda a: a IS NOT NULL)))
               AS who, * FROM read_parquet({{access}}))
  ORDER BY who, seq
) TO {{by_actor}} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ACTOR_ROW_GROUP_ROWS});
CREATE OR REPLACE TEMP TABLE pending AS
  SELECT * FROM pending c
  WHERE NOT EXISTS (SELECT 1 FROM paired p WHERE p.kind = 'outcome' AND p.event_id = c.event_id)
  UNION ALL
  SELECT event_id, seq, list_transform(subjects, lambda s: {_sk_sql("s")}) AS sks FROM paired
  WHERE kind = 'statement' AND status = 'pending' AND partner IS NULL;
"""


def _run_name(first: int, last: int) -> str:
    return f"run-{first:020d}-{last:020d}.parquet"


def _sorted_copy(con: duckdb.DuckDBPyConnection, sources: Sequence[Path], out: Path) -> None:
    files = ", ".join(quote(p) for p in sources)
    tmp = out.with_name(out.name + ".tmp")
    con.execute(
        f"COPY (SELECT sk, seq, partner, res FROM read_parquet([{files}]) ORDER BY sk, seq) "
        f"TO {quote(tmp)} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
    )
    os.replace(tmp, out)


def _load_pending(con: duckdb.DuckDBPyConnection, pending: list[Pending]) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE pending (event_id VARCHAR, seq BIGINT, sks BIGINT[])")
    if pending:
        con.executemany(
            "INSERT INTO pending VALUES (?, ?, ?)", [(p.event_id, p.seq, p.sks) for p in pending]
        )


def _dump_pending(con: duckdb.DuckDBPyConnection) -> list[Pending]:
    rows = con.execute("SELECT event_id, seq, sks FROM pending ORDER BY seq").fetchall()
    return [Pending(e, s, list(k)) for e, s, k in rows]


@dataclass(frozen=True)
class UpdateResult:
    segments: int
    events: int
    upto: int
    runs: int


@contextmanager
def _index_lock(ledger: Path, wait: bool) -> Iterator[bool]:
    """Held while the index is updated; yields False when another holds it and `wait` is off."""
    fd = os.open(Path(ledger) / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def update_index(
    ledger: Path, *, progress: Progress | None = None, rebuild: bool = False
) -> UpdateResult:
    """Index the sealed segments not yet indexed (all of them when `rebuild` or stale); waits
    for an update running elsewhere to finish first."""
    layout = _layout(ledger)
    with _index_lock(ledger, wait=True):
        for _ in range(_ATTEMPTS - 1):
            try:
                return _update(Path(ledger), layout, progress, rebuild, 2, "1GB")
            except _Vanished:
                continue  # compacted away while being read: list the segments again
        return _update(Path(ledger), layout, progress, rebuild, 2, "1GB")


def follow_seals(ledger: Path) -> UpdateResult | None:
    """Index what was sealed since, as the proxy does after a seal: one thread, a small memory
    budget, and None at once (nothing done) while another update holds the index."""
    layout = _layout(ledger)
    with _index_lock(ledger, wait=False) as held:
        if not held:
            return None
        try:
            return _update(Path(ledger), layout, None, False, 1, "256MB")
        except _Vanished:
            return None  # compacted meanwhile: the next seal indexes again


def _layout(ledger: Path) -> Layout:
    layout = Layout(Path(ledger))
    if not layout.segment_dir.is_dir() and not layout.journal_dir.is_dir():
        raise LedgerError(f"{ledger} is not a ledger (no journal/ or segments/ in it)")
    return layout


def _update(
    ledger: Path,
    layout: Layout,
    progress: Progress | None,
    rebuild: bool,
    threads: int,
    memory_limit: str,
) -> UpdateResult:
    state = open_index(ledger)
    if rebuild or state.stale:
        shutil.rmtree(state.root, ignore_errors=True)
        state = open_index(ledger)
    state.root.mkdir(parents=True, exist_ok=True)
    manifest = state.manifest
    todo = sealed_segments(layout)[len(manifest.segments) :]
    advance = progress or (lambda n: None)
    con = _connect(state.root, threads, memory_limit)
    chunks: list[Path] = []
    try:
        _load_pending(con, manifest.pending)
        for seg in todo:
            out = state.root / "tmp" / f"chunk-{seg.first_seq:020d}.parquet"
            access = state.root / ACCESS_DIR / seg.parquet.name
            by_actor = state.root / ACTOR_DIR / seg.parquet.name
            access.parent.mkdir(exist_ok=True)
            by_actor.parent.mkdir(exist_ok=True)
            try:
                con.execute(
                    _CHUNK_SQL.format(
                        path=quote(seg.parquet),
                        out=quote(out),
                        access=quote(access),
                        by_actor=quote(by_actor),
                    )
                )
            except duckdb.IOException as exc:
                if seg.parquet.exists():
                    raise
                raise _Vanished(seg.parquet.name) from exc
            chunks.append(out)
            manifest.segments.append((seg.parquet.name, checkpoint_digest(seg)))
            advance(seg.last_seq - seg.first_seq + 1)
        if todo:
            name = _run_name(todo[0].first_seq, todo[-1].last_seq)
            _sorted_copy(con, chunks, state.root / name)
            manifest.runs.append(name)
            manifest.upto = todo[-1].last_seq
            manifest.pending = _dump_pending(con)
        manifest.runs = _tiers(con, state.root, manifest.runs, everything=rebuild)
    finally:
        con.close()
        for chunk in chunks:
            chunk.unlink(missing_ok=True)
    _write_manifest(ledger, manifest)
    events = sum(s.last_seq - s.first_seq + 1 for s in todo)
    return UpdateResult(len(todo), events, manifest.upto, len(manifest.runs))


def _span(run: str) -> int:
    first, last = run.removesuffix(".parquet").split("-")[1:3]
    return int(last) - int(first) + 1


def _tiers(
    con: duckdb.DuckDBPyConnection, root: Path, runs: list[str], *, everything: bool
) -> list[str]:
    """Merge the newest run into the one before while that one covers no more seqs: runs then
    double in size from newest to oldest (a binary counter), so there are about log2(segments)
    of them and each seq is sorted again about as often, however many seals come one by one.
    Runs past MAX_RUN_SEQS are left as they are (`index rebuild` merges everything)."""
    runs = list(runs)
    if everything and len(runs) > 1:
        return [_merge_runs(con, root, runs)]
    while (
        len(runs) > 1
        and _span(runs[-2]) <= _span(runs[-1])
        and _span(runs[-2]) + _span(runs[-1]) <= MAX_RUN_SEQS
    ):
        runs[-2:] = [_merge_runs(con, root, runs[-2:])]
    return runs


def _merge_runs(con: duckdb.DuckDBPyConnection, root: Path, runs: list[str]) -> str:
    first = runs[0].split("-")[1]
    last = runs[-1].split("-")[2].split(".")[0]
    name = _run_name(int(first), int(last))
    out = root / name
    _sorted_copy(con, [root / r for r in runs], out.with_name("merged-" + name))
    for r in runs:
        (root / r).unlink(missing_ok=True)
    os.replace(out.with_name("merged-" + name), out)
    return name


@dataclass(frozen=True)
class Hit:
    """An indexed record naming a subject: its seq, its partner's, and whether it is an outcome."""

    sk: int
    seq: int
    partner: int | None
    result: bool

    @property
    def statement_seq(self) -> int | None:
        return self.partner if self.result else self.seq


def lookup(con: duckdb.DuckDBPyConnection, state: IndexState, sks: Sequence[int]) -> list[Hit]:
    """Every indexed record naming one of `sks`."""
    if state.stale or not state.runs or not sks:
        return []
    files = ", ".join(quote(p) for p in state.runs)
    keys = ", ".join(str(int(k)) for k in sks)
    rows = con.execute(
        f"SELECT sk, seq, partner, res FROM read_parquet([{files}]) WHERE sk IN ({keys})"
    ).fetchall()
    return [Hit(int(k), int(s), None if p is None else int(p), bool(r)) for k, s, p, r in rows]


def actor_files(state: IndexState) -> list[Path]:
    """Access rows of every indexed segment sorted by actor, so one actor's rows are a few row
    groups ([] when the index is stale or absent)."""
    if state.stale:
        return []
    return [state.root / ACTOR_DIR / name for name, _ in state.manifest.segments]


def access_file(state: IndexState, segment: str) -> Path:
    """Statement rows (with their outcome's rows and status) of one segment, by seq."""
    return state.root / ACCESS_DIR / segment


def pending_seq(state: IndexState) -> dict[str, int]:
    """Statements indexed without an outcome, by event id."""
    return {} if state.stale else {p.event_id: p.seq for p in state.manifest.pending}


def describe(state: IndexState) -> dict[str, Any]:
    return {
        "indexed_upto": state.upto,
        "segments": 0 if state.stale else len(state.manifest.segments),
        "runs": [p.name for p in state.runs],
        "stale": state.stale,
    }


def follow_compaction(ledger: Path, merge: Merge) -> bool:
    """Keep the index current across one compaction step: the merged segment's access and actor
    rows are its originals' rows together. False (index left for a rebuild) when the index did
    not hold exactly those originals. The seq-keyed runs need no change: the seqs are the same."""
    with _index_lock(ledger, wait=True):
        return _follow_compaction(Path(ledger), merge)


def _follow_compaction(ledger: Path, merge: Merge) -> bool:
    manifest = read_manifest(ledger)
    names = [name for name, _ in manifest.segments]
    if merge.replaced[0] not in names:
        return False
    i = names.index(merge.replaced[0])
    j = i + len(merge.replaced)
    if manifest.segments[i:j] != list(zip(merge.replaced, merge.replaced_digests, strict=True)):
        return False
    root = index_dir(ledger)
    con = _connect(root)
    try:
        for sub, order, rows in (
            (ACCESS_DIR, "", ACCESS_ROW_GROUP_ROWS),
            (ACTOR_DIR, " ORDER BY who, seq", ACTOR_ROW_GROUP_ROWS),
        ):
            sources = ", ".join(quote(root / sub / name) for name in merge.replaced)
            out = root / sub / merge.merged
            tmp = out.with_name(out.name + ".tmp")
            con.execute("SET preserve_insertion_order = true")
            con.execute(
                f"COPY (SELECT * FROM read_parquet([{sources}]){order}) TO {quote(tmp)} "
                f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {rows})"
            )
            os.replace(tmp, out)
    except duckdb.IOException:
        return False  # an original's rows are missing: the next update rebuilds
    finally:
        con.close()
    manifest.segments[i:j] = [(merge.merged, merge.checkpoint_digest)]
    _write_manifest(ledger, manifest)
    for name in merge.replaced:
        (root / ACCESS_DIR / name).unlink(missing_ok=True)
        (root / ACTOR_DIR / name).unlink(missing_ok=True)
    return True
