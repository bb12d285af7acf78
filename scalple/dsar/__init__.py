"""Data-subject access and insider reports: who touched one person's data, what one actor did.

Answers come from the whole ledger (sealed segments through a derived subject index, plus the
live journal scanned directly) and carry the ledger range they cover and its verification.
"""

from __future__ import annotations
