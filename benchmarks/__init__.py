"""Benchmarks (not tests): each bench_*.py exposes main() -> dict of figures; `make bench` runs them all."""
