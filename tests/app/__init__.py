"""A functions package used by the runtime tests."""
