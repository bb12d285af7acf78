"""What the writer keeps current as it seals: the verification cache and the subject index.

Both are derived (deleting them loses nothing; `scalple index rebuild` remakes the index) and are
kept off the event loop: the cache note runs on the sealer thread right after a seal (the sealer
checked every row of the segment against the journal before it signed it), the index update on
a thread of its own, so a slow index never delays the next seal nor any append.
"""

from __future__ import annotations

import logging
from pathlib import Path

from scalple.ledger.layout import Layout
from scalple.ledger.seal import Sealed
from scalple.ledger.threads import Follower
from scalple.ledger.verified import VerifiedCache, cache_key

log = logging.getLogger("scalple.ledger")


class Derived:
    def __init__(self, root: Path, secret: bytes) -> None:
        self.root = Path(root)
        self._key = cache_key(secret)
        self._indexer = Follower("scalple-indexer", self._index)

    def start(self) -> None:
        self._indexer.start()
        self._indexer.poke()  # segments sealed by an earlier run or another tool

    def stop(self) -> None:
        self._indexer.stop()

    def sealed(self, sealed: Sealed) -> None:
        """After-seal hook (sealer thread): remember the segment as verified, have it indexed."""
        cp = sealed.checkpoint
        cache = VerifiedCache(self.root, self._key)
        cache.note(Layout(self.root).segment(cp.first_seq, cp.last_seq).parquet, sealed.digest)
        cache.save()
        self._indexer.poke()

    def _index(self) -> None:
        from scalple.dsar.index import follow_seals  # DuckDB: loaded with the first seal anyway

        if follow_seals(self.root) is None:
            log.info("subject index busy (scalple index running?); indexing later")
