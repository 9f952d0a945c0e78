"""A ClickHouse server for tests that have none: ClickHouse's HTTP interface in front of chDB.

The -slim image talks to ClickHouse over HTTP only (clickhouse-connect), so running its
server-mode eventlog needs a server; no ClickHouse server can be installed here, but the
embedded engine (the same ClickHouse, in-process) can answer for one. This module, run as
``python -m tests.support.clickhouse_http DATA_DIR PORT_FILE`` in its own process (one chDB
engine per process), serves the part of the HTTP interface clickhouse-connect uses: the
SQL in the body or the ``query`` parameter, ``database``, ``param_*`` bindings, settings as
parameters, data inserts (``INSERT … FORMAT x`` with the data after it or in the body, plain
or chunked, compressed as ``Content-Encoding`` says), and errors as a 500 with
``X-ClickHouse-Exception-Code``. Requests run one at a time. It is not ClickHouse's server:
no users, no sessions, no streaming of large results; the eventlog's store, sink and DLQ
tests pass against it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

START_TIMEOUT = 60.0
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_SETTING = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Parameters of the HTTP interface itself, not ClickHouse settings.
_TRANSPORT = frozenset({
    "query", "database", "default_format", "session_id", "session_timeout", "session_check",
    "query_id", "compress", "decompress", "wait_end_of_query", "client_protocol_version",
    "enable_http_compression", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "buffer_size", "role", "quota_key"})


class ChdbHttpEngine:
    """One chDB connection; each request runs under a lock in the database it names."""

    def __init__(self, path: str) -> None:
        import chdb  # only this process needs the engine

        self._connection = chdb.connect(path)
        self._lock = threading.Lock()

    def run(self, sql: str, database: str, params: dict[str, str], settings: dict[str, str],
            data: bytes | None) -> bytes:
        with self._lock:
            self._connection.query(f"USE {_identifier(database)}")
            for name, value in settings.items():
                self._connection.query(f"SET {_identifier(name)} = {_quoted(value)}")
            infile = None
            try:
                if data is not None:  # INSERT … FORMAT x, the rows from a file as chDB reads them
                    fd, infile = tempfile.mkstemp(prefix="insert-")
                    with os.fdopen(fd, "wb") as file:
                        file.write(data)
                    sql = _TRAILING_FORMAT.sub(
                        lambda m: f"FROM INFILE {_quoted(infile)} FORMAT {m.group(1)}", sql.strip())
                    output_format = "TabSeparated"
                else:
                    found = _TRAILING_FORMAT.search(sql)
                    output_format = found.group(1) if found else "TabSeparated"
                result = (self._connection.query(sql, output_format, params=params) if params
                          else self._connection.query(sql, output_format))
                return result.bytes()
            finally:
                if infile is not None:
                    os.unlink(infile)


def _identifier(name: str) -> str:
    if not _SETTING.match(name):
        raise ValueError(f"not an identifier: {name!r}")
    return name


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _decompress(data: bytes, encoding: str) -> bytes:
    from clickhouse_connect.driver._backend.chdb_backend import _decompress as decompress

    return decompress(data, encoding)


class _Handler(BaseHTTPRequestHandler):
    engine: ChdbHttpEngine
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            body = b"".join(chunks)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding")
        return _decompress(body, encoding) if encoding else body

    def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _serve(self) -> None:
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        body = self._body()
        if "query" in query:
            sql, data = query["query"], body or None
        elif body[:6].upper() == b"INSERT" and b"\n" in body:  # the statement, then the rows
            head, _, data = body.partition(b"\n")
            sql = head.decode()
        else:
            sql, data = body.decode(), None
        params = {key[6:]: value for key, value in query.items() if key.startswith("param_")}
        settings = {key: value for key, value in query.items()
                    if not key.startswith("param_") and key not in _TRANSPORT}
        try:
            payload = self.engine.run(sql, query.get("database") or "default", params, settings,
                                      data)
        except Exception as exc:  # ClickHouse's way: 500, the code in a header, the text
            message = str(exc)
            code = re.search(r"Code: (\d+)", message)
            self._answer(500, message.encode(), {
                "X-ClickHouse-Exception-Code": code.group(1) if code else "1001",
                "Content-Type": "text/plain; charset=UTF-8"})
            return
        self._answer(200, payload, {"X-ClickHouse-Query-Id": str(uuid.uuid4()),
                                    "X-ClickHouse-Timezone": "UTC"})

    do_GET = _serve
    do_POST = _serve


def serve(data_dir: str, port_file: str) -> None:
    _Handler.engine = ChdbHttpEngine(data_dir)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


@dataclass
class ClickHouseHttp:
    """The server in its own process, its data in ``folder``."""

    folder: Path
    port: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def url(self, database: str) -> str:
        return f"http://default:@127.0.0.1:{self.port}/{database}"

    def start(self) -> ClickHouseHttp:
        port_file = self.folder / "port"
        port_file.unlink(missing_ok=True)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.clickhouse_http", str(self.folder / "data"),
             str(port_file)], cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.DEVNULL, stderr=(self.folder / "server.err").open("ab"))
        deadline = time.monotonic() + START_TIMEOUT
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ClickHouse HTTP did not start: {self.folder / 'server.err'}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
