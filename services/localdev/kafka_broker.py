"""A real Apache Kafka broker (KRaft) for one machine: `make up` and tests.

The broker jars come from Maven Central (``kafka-pom.xml`` beside this module) into the
git-ignored ``.cache/`` folder of the project and run on the machine's Java 17. One
:class:`LocalKafka` is a single-node cluster unless it is given the controller quorum of
several (:mod:`services.localdev.kafka_cluster` starts three).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)

KAFKA_VERSION = "3.9.1"


def _project_dir() -> Path:
    """The source checkout this code runs from; for an installed package, the current folder.

    ``make up`` keeps its state there: ``.cache/`` (jars), ``.run/`` (pids, logs), ``.data/``.
    """
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


REPO_ROOT = _project_dir()
POM = Path(__file__).resolve().parent / "kafka-pom.xml"
JARS_DIR = REPO_ROOT / ".cache" / f"kafka-{KAFKA_VERSION}" / "libs"

_LOG4J = """\
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
"""


def ensure_kafka_jars(jars_dir: Path = JARS_DIR) -> Path:
    """Download the broker jars with Maven unless they are cached; return their folder."""
    if jars_dir.is_dir() and any(jars_dir.glob("kafka_2.13-*.jar")):
        return jars_dir
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is needed once to fetch the Kafka jars")
    jars_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=jars_dir.parent))
    log.info("fetching Kafka %s jars from Maven Central", KAFKA_VERSION)
    subprocess.run(
        ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
        check=True,
    )
    try:
        staging.rename(jars_dir)  # atomic: a concurrent fetch either wins or loses whole
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return jars_dir


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class LocalKafka:
    """One broker process: ``start()`` formats storage on first use, ``stop()`` ends it.

    Alone it is a single-node cluster (node 1, its own controller quorum, replication 1).
    As a node of a cluster it gets its ``node_id``, the quorum's ``voters``
    (``id@host:port,…``), the ``cluster_id`` every node is formatted with and the
    ``replication`` of the broker's internal topics and of ``min.insync.replicas``.
    """

    def __init__(self, data_dir: Path, port: int = 9092, controller_port: int | None = None,
                 heap: str = "512m", *, node_id: int = 1, voters: str | None = None,
                 cluster_id: str | None = None, replication: int = 1,
                 jvm_options: tuple[str, ...] = ("-XX:+UseG1GC",),
                 extra_config: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.controller_port = controller_port or free_port()
        self.heap = heap
        self.node_id = node_id
        self.voters = voters or f"{node_id}@127.0.0.1:{self.controller_port}"
        self.cluster_id = cluster_id
        self.replication = replication
        self.jvm_options = jvm_options
        self.extra_config = dict(extra_config or {})
        self._dumping: Path | None = None
        """Where the running JVM writes the class-data archive as it exits, if it does."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    def _write_config(self) -> Path:
        logs = self.data_dir / "logs"
        config = self.data_dir / "server.properties"
        # With replication 3: every partition waits for 2 of its 3 replicas (acks=all).
        min_insync = min(2, self.replication)
        config.write_text(
            "\n".join([
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"controller.quorum.voters={self.voters}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={logs}",
                "num.partitions=3",
                f"default.replication.factor={self.replication}",
                f"min.insync.replicas={min_insync}",
                f"offsets.topic.replication.factor={self.replication}",
                "offsets.topic.num.partitions=10",
                f"transaction.state.log.replication.factor={self.replication}",
                f"transaction.state.log.min.isr={min_insync}",
                "group.initial.rebalance.delay.ms=0",
                "log.cleaner.backoff.ms=1000",
                "auto.create.topics.enable=true",
                *(f"{name}={value}" for name, value in self.extra_config.items()),
            ]) + "\n"
        )
        (self.data_dir / "log4j.properties").write_text(_LOG4J)
        return config

    def _java(self, *args: str, dump_classes: bool = False) -> list[str]:
        """The JVM command line for ``args``; with the class-data archive of earlier
        brokers where there is one (start-up ~2 s faster), else, with ``dump_classes``,
        writing one at exit (see :meth:`_settle_class_archive`)."""
        jars = ensure_kafka_jars()
        archive = self._class_archive()
        if archive.is_file():
            sharing = [f"-XX:SharedArchiveFile={archive}"]
        elif dump_classes:
            self._dumping = archive.with_name(f"{archive.name}.{uuid.uuid4().hex}.tmp")
            sharing = [f"-XX:ArchiveClassesAtExit={self._dumping}"]
        else:
            sharing = []
        return [
            "java", f"-Xmx{self.heap}", f"-Xms{self.heap}", *self.jvm_options, *sharing,
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}",
            "-cp", f"{jars}/*", *args,
        ]

    def _class_archive(self) -> Path:
        """The class-data sharing archive for this JVM and these options: the classes a
        broker loads, mapped at start-up instead of parsed and verified again."""
        java = Path(shutil.which("java") or "java").resolve()
        stamp = f"{java}:{java.stat().st_mtime if java.exists() else 0}:{self.jvm_options}"
        return JARS_DIR.parent / f"classes-{hashlib.sha1(stamp.encode()).hexdigest()[:12]}.jsa"

    def _settle_class_archive(self, exited_cleanly: bool) -> None:
        """Keep the archive the JVM wrote as it exited, unless it was killed meanwhile
        (a partial file); another broker stopping cleanly writes it later."""
        dumped, self._dumping = self._dumping, None
        if dumped is None:
            return
        if exited_cleanly and dumped.is_file() and dumped.stat().st_size > 0:
            os.replace(dumped, self._class_archive())  # atomic: readers see all or nothing
        else:
            dumped.unlink(missing_ok=True)

    def start(self, timeout: float = 90.0, detach: bool = False) -> str:
        """Start the broker and wait until it takes a produce and a consume.

        ``detach`` starts it in its own session so it outlives this process (``make up``).
        """
        self.launch(detach)
        try:
            wait_until_ready(self.bootstrap, timeout, process=self.process,
                             replication=self.replication)
        except Exception:
            self.stop()
            raise
        return self.bootstrap

    def launch(self, detach: bool = False) -> None:
        """Format the storage on first use and start the process, without waiting: a
        cluster's node serves only once a majority of the quorum runs."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            subprocess.run(
                self._java("kafka.tools.StorageTool", "format",
                           "-t", self.cluster_id or new_cluster_id(),
                           "-c", str(config), "--ignore-formatted"),
                check=True, capture_output=True,
            )
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                # A detached broker (make up) is stopped by another process: no archive.
                self._java("kafka.Kafka", str(config), dump_classes=not detach),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=detach,
            )
        (self.data_dir / "broker.pid").write_text(str(self.process.pid))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: nothing flushed, no leadership handed over, no controlled shutdown."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(30)
        self._settle_class_archive(exited_cleanly=False)
        self.process = None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker cleanly (SIGTERM), or kill it if it does not exit in time."""
        if self.process is None:
            return
        cleanly = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                cleanly = False
        self._settle_class_archive(cleanly)
        self.process = None


def stop_pid(pid_file: Path, timeout: float = 30.0) -> bool:
    """Stop the process recorded in ``pid_file`` (SIGTERM, then SIGKILL); True if it ran."""
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip() or 0)
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return True


def new_cluster_id() -> str:
    """A random KRaft cluster id (what ``kafka-storage random-uuid`` prints)."""
    cluster_id = "-"
    while cluster_id.startswith("-"):  # StorageTool would read "-..." as an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return cluster_id


def wait_until_ready(bootstrap: str, timeout: float = 90.0,
                     process: subprocess.Popen[bytes] | None = None,
                     replication: int = 1) -> None:
    """Block until the broker at ``bootstrap`` accepts a produce and a consume (on a topic
    of ``replication`` replicas: on a cluster, every node is then up)."""
    deadline = time.monotonic() + timeout
    # log_level 0: a broker still starting is expected, not worth a log line per retry.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"Kafka broker exited with code {process.returncode}")
        try:
            metadata = admin.list_topics(timeout=2)
            if metadata.brokers:
                break
        except KafkaException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Kafka at {bootstrap} not ready after {timeout}s")
        time.sleep(0.5)
    _round_trip(bootstrap, admin, deadline, replication)


def _round_trip(bootstrap: str, admin: AdminClient, deadline: float,
                replication: int) -> None:
    topic = "__webhooks_ready"
    try:
        new_topic = NewTopic(topic, num_partitions=1, replication_factor=replication)
        admin.create_topics([new_topic])[topic].result()
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise
    marker = uuid.uuid4().hex.encode()
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, marker)
    if producer.flush(max(1.0, deadline - time.monotonic())) != 0:
        raise TimeoutError("Kafka did not acknowledge the readiness message")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ready-{marker.decode()}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and not message.error() and message.value() == marker:
                return
        raise TimeoutError("Kafka did not deliver the readiness message back")
    finally:
        consumer.close()
