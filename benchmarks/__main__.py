"""``python -m benchmarks [name ...]``: run benchmarks against a fresh local broker.

A name is a module (``bench_ledger``) or its short form (``ledger``); without names every
benchmark runs, except the opt-in ones (:data:`OPT_IN`: ``soak``, ``scaling``), which run
only when named (``make soak``, ``python -m benchmarks scaling``). With names, the other
benchmarks' results already in ``bench-results/latest.json`` are kept. A benchmark whose
result says ``void`` (its figures mean nothing) or ``failed`` (a property it checks did not
hold) fails the run."""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.context import BenchContext, machine
from services.localdev.kafka_broker import LocalKafka, free_port

RESULTS = Path(__file__).resolve().parent.parent / "bench-results"


OPT_IN = ("soak", "bench_scaling")
"""Modules that run only when named: they take long (the soak: 30 minutes by default; the
scaling benchmark ~30 minutes)."""


def main(selected: list[str]) -> int:
    names = sorted({p.stem for p in Path(__file__).parent.glob("bench_*.py")} | set(OPT_IN))
    if selected:
        names = [n for n in names if n in selected or n.removeprefix("bench_") in selected]
    else:
        names = [n for n in names if n not in OPT_IN]
    report: dict[str, object] = {"started": datetime.now(UTC).isoformat(), "machine": machine(),
                                 "setup": "local single-node Kafka 3.9.1 (KRaft), embedded "
                                          "ClickHouse (chDB), all on this machine",
                                 "results": {}}
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        bootstrap = os.environ.get("WEBHOOKS_KAFKA_BOOTSTRAP")
        broker = None
        if not bootstrap:
            broker = LocalKafka(Path(work) / "kafka", port=free_port(), heap="1g")
            bootstrap = broker.start()
        context = BenchContext(kafka_bootstrap=bootstrap, work_dir=Path(work),
                               broker_pid=broker.process.pid if broker and broker.process
                               else None)
        try:
            for name in names:
                print(f"== {name}", flush=True)
                started = time.monotonic()
                try:
                    result = importlib.import_module(f"benchmarks.{name}").run(context)
                except Exception:
                    traceback.print_exc()
                    result = {"error": traceback.format_exc(limit=3)}
                    failed = True
                result["seconds"] = round(time.monotonic() - started, 1)
                # e.g. a ledger that does not balance; a soak whose memory grew
                failed |= bool(result.get("void") or result.get("failed"))
                report["results"][name] = result  # type: ignore[index]
                print(json.dumps(result, indent=2), flush=True)
        finally:
            if broker:
                broker.stop()
    RESULTS.mkdir(exist_ok=True)
    latest = RESULTS / "latest.json"
    if selected and latest.exists():
        # A partial run replaces only its own benchmarks' results in the last report.
        previous = json.loads(latest.read_text())
        report["results"] = {**previous.get("results", {}), **report["results"]}
        report["partial_run"] = sorted(names)
    latest.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'latest.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
