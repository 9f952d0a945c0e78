"""What every benchmark gets: a real broker, an embedded ClickHouse path, settings."""

from __future__ import annotations

import os
import platform
import statistics
import uuid
from dataclasses import dataclass
from pathlib import Path

from webhooks.secret_encryption import SecretsKeyring
from webhooks.settings import Settings
from webhooks.topics import ensure_topics

# The benchmarks' endpoints have their secrets sealed, as in production.
BENCH_SECRETS_KEY = SecretsKeyring.generate("bench")


@dataclass
class BenchContext:
    """The broker every benchmark shares, and a folder for its files."""

    kafka_bootstrap: str
    work_dir: Path
    broker_pid: int | None = None
    """The local broker's process (for its CPU time); None for a broker named by
    ``WEBHOOKS_KAFKA_BOOTSTRAP``."""

    def settings(self, **overrides: object) -> Settings:
        """Fresh topics and a fresh ClickHouse database for one benchmark."""
        scope = f"b{uuid.uuid4().hex[:8]}"
        settings = Settings(**{
            "kafka_bootstrap": self.kafka_bootstrap,
            "clickhouse_url": f"chdb://{self.work_dir / 'clickhouse'}?database={scope}",
            "topic_prefix": scope,
            "api_keys": {"bench-key": "bench", "bench-admin": "*"},
            "secrets_key": BENCH_SECRETS_KEY,
            "allow_private_targets": ("127.0.0.0/8",),
            **overrides,
        })
        ensure_topics(settings)
        return settings


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process ``pid`` has used so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU-seconds of ``pid`` and its children (uvicorn's workers)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += tree_cpu_seconds(int(child))
    return total


def percentiles(samples: list[float], points: tuple[int, ...] = (50, 95, 99)
                ) -> dict[str, float]:
    """The ``points`` percentiles (p50/p95/p99 unless told) and the max of latencies in
    seconds, reported in milliseconds."""
    if not samples:
        return {}
    ordered = sorted(samples)
    if len(ordered) == 1:
        ordered = ordered * 2
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {**{f"p{point}_ms": round(q[point - 1] * 1000, 2) for point in points},
            "max_ms": round(ordered[-1] * 1000, 2), "samples": len(ordered)}


def machine_ticks() -> tuple[int, int]:
    """(all, idle + iowait) clock ticks of the machine so far, from ``/proc/stat``."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]


def busy_cores(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How many cores the whole machine kept busy, on average, between two
    :func:`machine_ticks` readings: the benchmarks' processes and whatever else ran."""
    total, idle = (b - a for a, b in zip(before, after, strict=True))
    return (os.cpu_count() or 1) * (total - idle) / max(total, 1)


def machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "processor": platform.processor()}
