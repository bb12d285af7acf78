"""Watching the ledger for insiders: per actor and day, a profile compared with the actor's own
baseline and their peers'; findings offline (`scalple anomalies`) and alerts live (`serve`)."""
