"""``webhooks listen --forward-to``: real events, forwarded to the README's FastAPI receiver,
which verifies each with the ``standardwebhooks`` library; the stream survives an eventlog
crash."""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Iterator

import pytest

from examples.receiver_fastapi import create_app
from services.localdev.kafka_broker import free_port
from services.localdev.service_process import ServiceProcess
from tests.services.cli.conftest import Cli
from tests.support.server_thread import ServerThread


class Lines:
    """The lines a child process prints, read in a thread, so a test can wait for one."""

    def __init__(self, stream: object) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line.rstrip("\n"))

    def next(self, timeout: float = 30.0) -> str:
        return self.lines.get(timeout=timeout)

    def until(self, text: str, timeout: float = 30.0) -> str:
        while True:
            line = self.next(timeout)
            if text in line:
                return line


@pytest.fixture()
def listener(cli: Cli) -> Iterator[tuple[subprocess.Popen[str], Lines, Lines, int]]:
    port = free_port()
    process = cli.spawn("listen", "--forward-to", f"http://127.0.0.1:{port}/hook",
                        "--events", "listen.*", "--max-events", "3")
    try:
        yield process, Lines(process.stdout), Lines(process.stderr), port
    finally:
        process.kill()
        process.wait(10)


def test_listen_forwards_signed_events_and_resumes_after_a_dropped_stream(
        cli: Cli, stack: dict[str, ServiceProcess],
        listener: tuple[subprocess.Popen[str], Lines, Lines, int]) -> None:
    process, out, err, port = listener
    secret = out.next().removeprefix("Session signing secret: ")
    assert secret.startswith("whsec_")
    # The receiver of the README, configured with the session secret the CLI printed.
    receiver_app = create_app(secret)
    with ServerThread(receiver_app, port=port):
        assert "Forwarding listen.* events to" in out.until("Ready!")
        # Only events after "Ready!" (the stream starts now): this one is the first.
        cli.json("send", "--type", "elsewhere.first", "--data", "{}")
        first = cli.json("send", "--type", "listen.first", "--data", '{"object": {"n": 1}}')
        line = out.next()
        assert first["id"] in line and "listen.first" in line and "[200]" in line, line
        handled = receiver_app.state.handled
        assert [e["id"] for e in handled] == [first["id"]]
        assert handled[0] == first  # verified by standardwebhooks, the exact envelope

        cli.json("send", "--type", "elsewhere.second", "--data", "{}")  # not forwarded

        # The eventlog crashes and comes back on the same port: the CLI reconnects and
        # continues after the last event it got.
        stack["eventlog"].kill()
        assert "reconnecting" in err.until("stream:")
        while_down = cli.json("send", "--type", "listen.second", "--data", "{}")
        stack["eventlog"].start()
        line = out.until(while_down["id"], timeout=60)
        assert "listen.second" in line and "[200]" in line
        third = cli.json("send", "--type", "listen.third", "--data", "{}")
        assert "[200]" in out.until(third["id"])
        assert process.wait(10) == 0  # --max-events 3
    assert [e["id"] for e in handled] == [first["id"], while_down["id"], third["id"]]

