"""Parity against reference implementations on the same weights (the `parity` extra)."""
