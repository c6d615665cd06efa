"""Benchmarks against the anchors (python -m bench.<name>)."""
