"""A local Apache Kafka cluster of three KRaft nodes on one machine, for the tests that
kill brokers: the same jars as :class:`LocalKafka`, one process, port and log folder per
node, each node broker and controller at once (a quorum of three voters), every topic
replicated three times and written with two in-sync replicas at least.

``make up`` keeps its single broker; this is test harness.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from services.localdev.kafka_broker import (
    LocalKafka,
    free_port,
    new_cluster_id,
    wait_until_ready,
)

FAST_START = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k")
"""JVM options of the nodes: one GC thread, the quick compiler only. Three JVMs start on
a loaded 2-core machine in seconds instead of competing for the cores with C2 compiler
threads; a test's few hundred records a second need no peak throughput."""


class LocalKafkaCluster:
    """``size`` nodes (ids 1…size) under ``data_dir``; ``start()`` waits until every node
    serves, ``kill``/``terminate``/``restart`` act on one node."""

    def __init__(self, data_dir: Path, size: int = 3, heap: str = "256m",
                 extra_config: dict[str, str] | None = None) -> None:
        ports = {node: (free_port(), free_port()) for node in range(1, size + 1)}
        voters = ",".join(f"{node}@127.0.0.1:{controller}"
                          for node, (_, controller) in ports.items())
        cluster_id = new_cluster_id()
        self.nodes = {node: LocalKafka(Path(data_dir) / f"node-{node}", port=port,
                                       controller_port=controller, heap=heap, node_id=node,
                                       voters=voters, cluster_id=cluster_id,
                                       replication=size, jvm_options=FAST_START,
                                       extra_config=extra_config)
                      for node, (port, controller) in ports.items()}

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes.values())

    @property
    def size(self) -> int:
        return len(self.nodes)

    def start(self, timeout: float = 120.0) -> str:
        """Start every node and wait until the cluster takes a produce and a consume on a
        topic replicated to all of them; return the bootstrap servers."""
        for node in self.nodes.values():
            node.launch()
        try:
            self.wait_brokers(set(self.nodes), timeout)
            wait_until_ready(self.bootstrap, timeout, replication=self.size)
        except BaseException:
            self.stop(timeout=2.0)
            raise
        return self.bootstrap

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to every node at once, then wait (SIGKILL after ``timeout``)."""
        for node in self.nodes.values():
            if node.running and node.process is not None:
                node.process.terminate()
        for node in self.nodes.values():
            node.stop(timeout)

    def kill(self, node: int) -> None:
        """SIGKILL of ``node``: a crash."""
        self.nodes[node].kill()

    def terminate(self, node: int, timeout: float = 60.0) -> None:
        """SIGTERM of ``node`` and wait for it to exit: a controlled shutdown, which hands
        its partitions' leadership to the other nodes first."""
        self.nodes[node].stop(timeout)

    def restart(self, node: int, timeout: float = 120.0) -> None:
        """Start ``node`` again (same port and folder) and wait until it has rejoined:
        registered with the controller and back in the ISR of every partition."""
        self.nodes[node].launch()
        self.wait_rejoined(node, timeout)

    def running(self) -> list[int]:
        return [node_id for node_id, node in self.nodes.items() if node.running]

    def metadata(self, timeout: float = 5.0, node: int | None = None) -> ClusterMetadata:
        """The cluster's metadata as a running node (or ``node`` itself) sees it now."""
        nodes = [node] if node is not None else self.running()
        servers = ",".join(self.nodes[n].bootstrap for n in nodes)
        admin = AdminClient({"bootstrap.servers": servers, "log_level": 0})
        return admin.list_topics(timeout=timeout)

    def wait_brokers(self, nodes: set[int], timeout: float) -> None:
        """Until every one of ``nodes`` answers and sees all of ``nodes`` as live brokers:
        a node answers only once it caught up with the controller's metadata."""
        deadline = time.monotonic() + timeout
        while True:
            for node_id in nodes:
                process = self.nodes[node_id].process
                if process is None or process.poll() is not None:
                    raise RuntimeError(f"Kafka node {node_id} exited: "
                                       f"{self.nodes[node_id].log_path}")
            try:
                if all(nodes <= set(self.metadata(node=node).brokers) for node in nodes):
                    return
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka nodes {sorted(nodes)} not all up after {timeout}s")
            time.sleep(0.5)

    def under_replicated(self, topics: Iterable[str] | None = None,
                         node: int | None = None) -> list[str]:
        """``topic/partition`` of every partition (of ``topics``, else of all) whose ISR
        lacks one of its replicas, as a running node (or ``node``) sees it."""
        metadata = self.metadata(node=node)
        wanted = set(topics) if topics is not None else set(metadata.topics)
        return [f"{name}/{p.id}" for name, topic in metadata.topics.items() if name in wanted
                for p in topic.partitions.values() if len(p.isrs) < len(p.replicas)]

    def wait_rejoined(self, node: int, timeout: float = 120.0) -> None:
        """Until ``node`` (started again) serves, and every partition's ISR is full as it
        sees it. Its own metadata is current: the node was fenced when it registered anew
        (dropped from every ISR) and enters each ISR again once it caught up."""
        deadline = time.monotonic() + timeout
        self.wait_brokers({node}, timeout)
        while True:
            try:
                lagging = self.under_replicated(node=node)
                if not lagging:
                    return
            except KafkaException as exc:
                lagging = [str(exc)]
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {node}: ISR not full after {timeout}s: {lagging[:5]}")
            time.sleep(0.25)

    def leaders(self, topic: str) -> dict[int, int]:
        """The leader node of each partition of ``topic`` (-1: none)."""
        return {p.id: p.leader for p in self.metadata().topics[topic].partitions.values()}

    def active_controller(self, timeout: float = 5.0) -> int:
        """The node that leads the controller quorum now (KRaft's active controller)."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.running():
                try:
                    leader = describe_quorum_leader(self.nodes[node].port)
                except OSError:
                    continue
                if leader >= 0:
                    return leader
            if time.monotonic() > deadline:
                raise TimeoutError("no active controller found")
            time.sleep(0.2)

    def pids(self) -> dict[int, int]:
        return {node_id: node.process.pid for node_id, node in self.nodes.items()
                if node.process is not None}

    def process(self, node: int) -> subprocess.Popen[bytes] | None:
        return self.nodes[node].process


def describe_quorum_leader(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> int:
    """The leader of the KRaft metadata quorum, asked of the broker at ``host:port`` with a
    DescribeQuorum request (version 0, which brokers forward to the controllers); -1 if
    it named none. Neither librdkafka nor the Python clients offer this request.
    """
    name = b"__cluster_metadata"
    client_id = b"webhooks-tests"
    # Request header v2: api key 55, version 0, correlation id, client id, no tags; then
    # the body: one topic (compact string), one partition (index 0), no tags anywhere.
    request = (struct.pack(">hhih", 55, 0, 1, len(client_id)) + client_id + b"\x00"
               + b"\x02" + bytes([len(name) + 1]) + name + b"\x02"
               + struct.pack(">i", 0) + b"\x00" + b"\x00" + b"\x00")
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _read_exactly(conn, 4))[0]
        response = _read_exactly(conn, size)
    # Response header v1 (correlation id, tags), error code, topics (compact array),
    # topic name (compact string), partitions (compact array), partition index, error
    # code, leader id.
    offset = 4 + 1
    (error,) = struct.unpack_from(">h", response, offset)
    if error:
        return -1
    offset += 2 + 1  # error code, topic count
    offset += 1 + response[offset] - 1  # topic name
    offset += 1 + 4  # partition count, partition index
    error, leader = struct.unpack_from(">hi", response, offset)
    return -1 if error else leader


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data
