"""``worker``: the Django side of the split architecture (worker pool, routing, consumers, default HTTP consumer)."""
