"""The guard's Kafka adapter against a real Kafka-protocol broker (Tansu, started here on a free
port): a consumer group of worker processes with a rebalance and ``kill -9`` mid-batch, a broker
cut off mid-batch, and a broker that is not there at start.

The broker keeps its state in memory, so "down" is a TCP proxy between the clients and the
broker that cuts every connection (the broker advertises the proxy's address): the committed
offsets survive, as they would on a real cluster during a network partition."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from guard_helpers import FaultProxy, make_candidates, make_labels

from assay.guard import Guard
from assay.guard.stream import (
    KafkaTraceWriter,
    KafkaTransport,
    StreamWorker,
    encode_feedback,
    encode_request,
)
from assay.guard.tansu import TansuBroker, free_port
from assay.store.labels import InMemoryLabelStore

ROOT = Path(__file__).resolve().parents[2]
FAST_GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}  # joins and fail-overs in seconds, not 45 s
QUIET = logging.getLogger("assay.guard.kafka")  # librdkafka's lines of the test's own clients, kept off stderr
USERS = [{"id": "teen", "age": 15}, {"id": "adult", "age": 34}, {"id": "senior", "age": 70}]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = TansuBroker(log_path=tmp_path_factory.mktemp("tansu") / "broker.log").start()
    yield b
    b.stop()


def topics(broker: TansuBroker, partitions_in: int = 4, partitions_out: int = 2) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    names = (f"in-{tag}", f"out-{tag}")
    broker.create_topics({names[0]: partitions_in, names[1]: partitions_out})
    return names


def request(k: int) -> dict:
    return {"request_id": f"r{k:04d}", "surface": "for_you", "user": USERS[k % len(USERS)], "deadline_ms": 60_000}


def producer(bootstrap: str):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 1, "logger": QUIET})


def read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 30.0) -> list[tuple[str, dict]]:
    """Every record of ``topic`` from the start (key, JSON value), until ``expect`` were read and
    nothing more came for a second."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "logger": QUIET, **FAST_GROUP})
    c.subscribe([topic])
    out: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        msgs = [m for m in c.consume(100, 0.2) if not m.error()]
        if msgs:
            quiet_since = time.monotonic()
            out += [(m.key().decode(), json.loads(m.value())) for m in msgs]
        elif len(out) >= expect and time.monotonic() - quiet_since > 1.0:
            break
    c.close()
    return out


def expected_decisions(guard: Guard, cands: dict, n: int) -> dict[str, list]:
    return {request(k)["request_id"]: sorted((d.item_id, d.action, d.rank_after) for d in guard.apply(request(k), cands).decisions)
            for k in range(n)}


@pytest.fixture
def labelled(tmp_path, bundle_path, test_bundle):
    cands = make_candidates(30, seed=4)
    store = InMemoryLabelStore()
    store.put(list(cands["id"]), make_labels(cands["id"], seed=4), "clf-1")
    path = store.to_parquet(tmp_path / "labels.parquet")
    return cands, path, Guard(test_bundle, InMemoryLabelStore.from_parquet(path))


def spawn(name: str, broker, tin, tout, group, bundle_path, labels, redis_url, tmp_path, **pause) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "tests" / "guard" / "kafka_worker.py"), broker.bootstrap, tin, tout, group, name,
            str(bundle_path), str(labels), redis_url]
    for key, value in pause.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(tmp_path / f"{name}.err", "w"), text=True, env=env)  # noqa: SIM115
    assert proc.stdout.readline().strip() == "ready", (tmp_path / f"{name}.err").read_text()
    return proc


def wait_for(path: Path, timeout_s: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)
    time.sleep(0.05)
    return json.loads(path.read_text())


@pytest.mark.redis
def test_a_group_with_a_rebalance_and_kill_9_mid_batch_decides_and_traces_every_batch_once(
        broker, labelled, bundle_path, redis_url, tmp_path):
    from assay.trace import TraceLog

    cands, labels, guard = labelled
    tin, tout = topics(broker)
    group = f"g-{uuid.uuid4().hex[:6]}"
    sent = [0]
    enough = threading.Event()

    def produce() -> None:  # the producer runs all along: the workers never drain a backlog filled before them
        p = producer(broker.bootstrap)
        k = 0
        while not enough.is_set() and k < 5000:
            p.produce(tin, key=request(k)["request_id"], value=encode_request(request(k), cands))
            p.poll(0)
            k += 1
            sent[0] = k
            time.sleep(0.02)
        assert p.flush(10) == 0

    def until_sent(k: int) -> None:
        while sent[0] < k:
            time.sleep(0.02)

    common = (broker, tin, tout, group, bundle_path, labels, redis_url, tmp_path)
    # a: stops mid-batch (decided, nothing produced) when told; c: stops after producing and
    # marking its slates done, before committing the offsets
    a = spawn("a", *common, pause_file=tmp_path / "pause-a", paused_file=tmp_path / "paused-a", pause_at="before-write")
    feeder = threading.Thread(target=produce)
    feeder.start()
    until_sent(40)
    b = spawn("b", *common, idle_exit=6)  # joins the group: a rebalance
    until_sent(100)
    (tmp_path / "pause-a").touch()
    lost_with_a = wait_for(tmp_path / "paused-a")
    a.send_signal(signal.SIGKILL)
    a.wait()
    c = spawn("c", *common, pause_file=tmp_path / "pause-c", paused_file=tmp_path / "paused-c", pause_at="after-write")
    (tmp_path / "pause-c").touch()  # c stops at its first write, whenever it gets partitions
    written_by_c = wait_for(tmp_path / "paused-c", timeout_s=60)
    c.send_signal(signal.SIGKILL)
    c.wait()
    until_sent(sent[0] + 20)
    enough.set()
    feeder.join()
    n = sent[0]
    out, _ = b.communicate(timeout=120)
    assert b.returncode == 0, (tmp_path / "b.err").read_text()
    b_stats = json.loads(out.strip().splitlines()[-1])
    assert lost_with_a and written_by_c

    slates = read_topic(broker.bootstrap, tout, n)
    rids = [key for key, _ in slates]
    assert sorted(rids) == sorted(request(k)["request_id"] for k in range(n))  # none lost, none twice
    assert all(s["request_id"] == key for key, s in slates)
    # c's slates were out and marked done but not committed: b was handed them again and acknowledged them
    assert b_stats["duplicates"] >= len(written_by_c) and b_stats["errors"] == 0

    # the trace: one writer appends each request's decisions once; a second pass over the whole
    # topic (as after a crash before its commit) appends nothing
    log = TraceLog.open(tmp_path / "trace", checkpoint_every=None)
    writer = KafkaTraceWriter(broker.bootstrap, log, topic=tout, group=f"{group}-trace", extra_config=FAST_GROUP)
    writer.run(idle_exit_s=3)
    writer.close()
    again = KafkaTraceWriter(broker.bootstrap, log, topic=tout, group=f"{group}-trace-2", extra_config=FAST_GROUP)
    again.run(idle_exit_s=3)
    again.close()
    assert writer.stats["slates"] == n and again.stats["slates"] == 0 and again.stats["duplicates"] == n
    traced: dict[str, list] = {}
    for row in log.table().to_pylist():
        if row["type"] == "decision":
            traced.setdefault(row["request_id"], []).append((row["item_id"], row["action"], row["rank_after"]))
    log.close()
    assert {k: sorted(v) for k, v in traced.items()} == expected_decisions(guard, cands, n)


def cut_proxy():
    port = free_port()
    proxy = FaultProxy("127.0.0.1", port)
    return proxy, TansuBroker(port, advertised_port=proxy.port).start()


class CutsTheBrokerOnce(KafkaTransport):
    """The real transport; the first time it writes slates the broker becomes unreachable for a
    few seconds (the proxy cuts every connection), so the write fails mid-batch."""

    proxy: FaultProxy
    cut = True

    def write_and_ack_many(self, writes, acks=()):
        if self.cut and writes:
            self.cut = False
            self.proxy.set_mode("down")
            threading.Timer(4.0, self.proxy.set_mode, ("up",)).start()
        super().write_and_ack_many(writes, acks)


def test_a_broker_cut_off_mid_batch_is_reported_once_and_nothing_is_lost(labelled, bundle_path, test_bundle):
    cands, _, guard = labelled
    proxy, broker = cut_proxy()
    try:
        tin, tout = topics(broker, partitions_in=2, partitions_out=1)
        p = producer(broker.bootstrap)
        for k in range(30):
            p.produce(tin, key=request(k)["request_id"], value=encode_request(request(k), cands))
        p.produce(tin, value=encode_feedback(item_id="item-1", source="ugc:a"))
        assert p.flush(10) == 0
        reports: list[int] = []
        guard.report_harmful = lambda **kw: reports.append(1)
        t = CutsTheBrokerOnce(broker.bootstrap, input_topic=tin, output_topic=tout, group="g", delivery_timeout_s=2.0,
                              extra_config={**FAST_GROUP, "reconnect.backoff.max.ms": 300})
        t.proxy = proxy
        lines: list[str] = []
        worker = StreamWorker(guard, t, count=8, block_ms=50, on_status=lines.append)
        worker.run(max_messages=31, idle_exit_s=15)
        t.close()
        slates = read_topic(broker.bootstrap, tout, 30)
        assert sorted(k for k, _ in slates) == sorted(request(k)["request_id"] for k in range(30))
        assert worker.stats.outages == 1 and worker.stats.errors >= 1
        assert len(lines) == 2 and "not delivered" in lines[0] and "again" in lines[1], lines
        assert reports == [1]  # the feedback was applied once, though its read was rewound
    finally:
        broker.stop()
        proxy.close()


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "assay.cli.main", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_worker_without_a_broker_exits_3_with_one_line(bundle_path):
    started = time.monotonic()
    rc = run_cli("guard", "worker", "--kafka", f"127.0.0.1:{free_port()}", "--bundle", str(bundle_path))
    assert rc.returncode == 3, (rc.stdout, rc.stderr)
    lines = rc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is unreachable" in lines[0] and "127.0.0.1:" in lines[0], rc.stderr
    assert time.monotonic() - started < 30


def test_worker_with_a_missing_topic_exits_2_naming_it(broker, bundle_path):
    rc = run_cli("guard", "worker", "--kafka", broker.bootstrap, "--input", "no-such-topic", "--output", "nor-this",
                 "--bundle", str(bundle_path))
    assert rc.returncode == 2 and "'no-such-topic', 'nor-this' do not exist" in rc.stderr, rc.stderr


def test_cli_worker_and_trace_writer_on_a_live_broker(broker, labelled, bundle_path, tmp_path):
    cands, labels, _ = labelled
    tin, tout = topics(broker)
    p = producer(broker.bootstrap)
    for k in range(12):
        p.produce(tin, key=request(k)["request_id"], value=encode_request(request(k), cands))
    p.produce(tin, value=b"{not json")
    assert p.flush(10) == 0
    rc = run_cli("guard", "worker", "--kafka", broker.bootstrap, "--input", tin, "--output", tout, "--bundle", str(bundle_path),
                 "--labels", str(labels), "--decisions-in-output", "--max-messages", "13", "--idle-exit", "20",
                 "--kafka-option", "session.timeout.ms=2000", "--kafka-option", "heartbeat.interval.ms=300")
    assert rc.returncode == 0, rc.stderr
    stats = json.loads(rc.stderr.strip().splitlines()[-1])
    assert stats["processed"] == 12 and stats["bad_input"] == 1 and stats["errors"] == 0
    rc = run_cli("guard", "trace-writer", "--kafka", broker.bootstrap, "--input", tout, "--trace", str(tmp_path / "trace"),
                 "--idle-exit", "3", "--kafka-option", "session.timeout.ms=2000", "--kafka-option", "heartbeat.interval.ms=300")
    assert rc.returncode == 0, rc.stderr
    assert json.loads(rc.stderr.strip().splitlines()[-1]) == {"slates": 12, "decisions": 12 * 30, "duplicates": 0, "skipped": 1}
