"""Which public keys may sign checkpoints: a trusted key and the keys its rotations reach.

A rotation counts only if both the old and the new key signed it. Keys get a rank along the
chain (the trusted key is 0), and checkpoints may only move forward along it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scalple.ledger.keys import Rotation, key_id


@dataclass
class KeyChain:
    ranks: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def rank(self, public: str) -> int | None:
        return self.ranks.get(public)


def key_chain(anchor: str, rotations: list[tuple[str, Rotation]]) -> KeyChain:
    """Rank every key linked to `anchor` by valid `rotations` (name, rotation) both ways."""
    chain = KeyChain(ranks={anchor: 0})
    forward: dict[str, str] = {}
    backward: dict[str, str] = {}
    for name, r in rotations:
        if not r.valid():
            chain.problems.append(f"key rotation {name} is not signed by both keys")
            continue
        if forward.setdefault(r.old_key, r.new_key) != r.new_key:
            chain.problems.append(f"key {key_id(r.old_key)} was rotated to two different keys")
        if backward.setdefault(r.new_key, r.old_key) != r.old_key:
            chain.problems.append(f"key {key_id(r.new_key)} claims two different predecessors")
    for step, links in ((1, forward), (-1, backward)):
        key, rank = anchor, 0
        while (key := links.get(key, "")) and key not in chain.ranks:
            rank += step
            chain.ranks[key] = rank
    return chain
