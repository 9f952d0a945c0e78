"""The whole-stack benchmark's load generator, run as its own process:
``python -m benchmarks.stack_load URL KEYS --rate R --seconds S [--connections C] [--first N]
[--burst]``.

Posts single events to ingest (``POST URL/v1/events``, ``Bearer KEY``) paced at ``R`` per
second for ``S`` seconds over ``C`` keep-alive connections (aiohttp, uvloop): event ``i``
is due ``i / R`` seconds after the start and is sent by the first free connection, so a
slow ingest shows as time behind schedule rather than as a lower rate. With ``--burst``
all ``R * S`` events are due at the start: as fast as ingest takes them. ``KEYS`` is one
API key or several, comma-separated, that take turns (event ``i`` goes with key ``i``
modulo their number): one tenant each, so that events spread over the partitions. Each event's
``data.object`` carries its number ``n`` (from ``N``) and ``sent_at``, the time its
request was sent (epoch seconds), which the receiver (:mod:`benchmarks.receiver`) turns
into the publish-to-receipt latency. A 429 is retried after 0.2 s, like the rig's driver.

It prints ``ready`` once started, starts on a line from stdin (so that the caller reads
the other processes' CPU meters right before), and prints one JSON line: accepted/s,
status codes, the POSTs' latency, time behind schedule and its own CPU-seconds while
publishing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
import orjson
import uvloop

from benchmarks.context import percentiles

RETRIES = 20
"""Attempts of one event (429 or a connection error) before it is given up."""


async def publish(url: str, keys: list[str], rate: float, seconds: float, connections: int,
                  first: int, burst: bool = False) -> dict[str, Any]:
    """Publish ``rate * seconds`` events paced at ``rate``/s (all due at once if ``burst``),
    with ``keys`` in turn; what happened, as a dict."""
    total = int(rate * seconds)
    headers = [{"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
               for key in keys]
    status: dict[str, int] = {}
    accepted = errors = 0
    post_latencies: list[float] = []
    behind: list[float] = []
    next_index = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        print("ready", flush=True)
        sys.stdin.readline()  # the caller's "go", after reading its CPU meters
        cpu, started = time.process_time(), time.time()
        deadline = started + seconds + 60

        async def sender() -> None:
            nonlocal next_index, accepted, errors
            while next_index < total and time.time() < deadline:
                index, next_index = next_index, next_index + 1
                due = started if burst else started + index / rate
                if (wait := due - time.time()) > 0:
                    await asyncio.sleep(wait)
                behind.append(max(0.0, time.time() - due))
                for _ in range(RETRIES):
                    sent = time.time()
                    body = orjson.dumps({"type": "bench.stack", "data": {"object": {
                        "n": first + index, "sent_at": sent}}})
                    try:
                        async with session.post(url, data=body,
                                                headers=headers[index % len(headers)]) as answer:
                            await answer.read()
                    except (aiohttp.ClientError, TimeoutError):
                        errors += 1
                        await asyncio.sleep(0.05)
                        continue
                    post_latencies.append(time.time() - sent)
                    status[str(answer.status)] = status.get(str(answer.status), 0) + 1
                    if answer.status != 429:
                        accepted += answer.status in (200, 201, 202)
                        break
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(sender() for _ in range(connections)))
        ended, cpu = time.time(), time.process_time() - cpu
    return {"events": total, "accepted": accepted, "status": status, "errors": errors,
            "publish_start": started, "publish_end": ended,
            "publish_s": round(ended - started, 3),
            "accepted_per_s": round(accepted / max(ended - started, 1e-9), 1),
            "post_latency": percentiles(post_latencies, (50, 99)),
            "behind_schedule": percentiles(behind, (50, 99)),
            "cpu_s": round(cpu, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="ingest's base URL")
    parser.add_argument("keys", help="API key, or several, comma-separated, taking turns")
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--first", type=int, default=0, help="number of the first event")
    parser.add_argument("--burst", action="store_true",
                        help="every event due at the start instead of paced")
    args = parser.parse_args()
    result = uvloop.run(publish(f"{args.url}/v1/events", args.keys.split(","), args.rate,
                                args.seconds, args.connections, args.first, args.burst))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
