"""Helpers every layer uses: atomic writes, one-line user errors, probability checks, small statistics.
numpy only."""
