"""SQL analysis: what a statement touched, whose data it was, and its PII masked before disk."""
