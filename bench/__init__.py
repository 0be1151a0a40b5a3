"""Thresher benchmarks: `make bench` or `python -m bench [--quick]` (see __main__.py)."""
