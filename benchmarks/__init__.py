"""Benchmarks: `make bench` runs every ``benchmarks/bench_*.py`` and writes
``bench-results/latest.json`` with the figures and the machine they were measured on.

A benchmark module exposes ``run(context: BenchContext) -> dict``; the dict it returns
is stored under the module's name.
"""
