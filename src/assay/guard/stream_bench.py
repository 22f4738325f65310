"""``assay bench stream``: the guard's stream worker on Kafka and on Redis Streams, measured with
the producer running (never by draining a backlog filled before the worker started).

For each transport, one worker thread (the real ``StreamWorker`` and transport), a producer
thread and a reader thread of the output run together in this process, on the same 200-candidate
batches of the guard bench's catalogue and the example feed bundle:

1. **throughput**: the worker is started and waiting; the producer then sends ``n`` batches as
   fast as it can. ``kafka_batches_per_s`` / ``redis_batches_per_s`` = ``n`` ÷ the time from the
   first produce to the last slate read from the output (every slate must arrive, once);
2. **latency**: the producer sends at a fixed offered rate, half the throughput just measured,
   for a few seconds; each batch's end-to-end latency runs from just before its produce call to
   the moment the reader has its slate (decided, written, delivered): ``kafka_e2e_p99_ms`` /
   ``redis_e2e_p99_ms`` (p50 in ``detail``).

Baseline: the same batches decided by ``Guard.apply`` in one thread, no transport
(``inprocess_batches_per_s``). Kafka: ``ASSAY_BENCH_KAFKA`` (bootstrap servers; topics are
created) or a local Tansu broker started for the run; Redis: ``ASSAY_BENCH_REDIS_URL`` (default
``redis://127.0.0.1:6379/14``). The producer, worker and reader share this process and its
cores: on a 2-core machine they compete with each other, as they would not in production.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from typing import Any

import numpy as np
import orjson

from assay.records import BenchResult

CANDIDATES = 200
# Tansu answers a fetch with nothing new only after fetch.wait.max.ms (librdkafka's default 500 ms)
# even when data arrives meanwhile; Kafka answers as soon as data is there. 10 ms keeps an idle
# worker's wait from dominating the latency figure on Tansu.
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 10}


class _Clock:
    """Send and arrival times by request id (written by the producer and the reader threads)."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.arrived: dict[str, float] = {}
        self.duplicates = 0
        self.lock = threading.Lock()

    def arrive(self, request_id: str) -> None:
        now = time.perf_counter()
        with self.lock:
            if request_id in self.arrived:
                self.duplicates += 1
            else:
                self.arrived[request_id] = now

    def wait(self, ids: list[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if all(i in self.arrived for i in ids):
                    return True
            time.sleep(0.005)
        return False


def _batches(n: int, seed: int) -> list[tuple[str, bytes]]:
    from assay.guard.bench import USERS, candidate_batch, catalog
    from assay.guard.stream import encode_request

    ids, _, meta = catalog(20_000)
    rng = np.random.default_rng(seed)
    tag = uuid.uuid4().hex[:6]
    out = []
    for k in range(n):
        rid = f"{tag}-{k}"
        out.append((rid, encode_request({"request_id": rid, "surface": "for_you", "user": USERS[k % len(USERS)]},
                                        candidate_batch(ids, meta, CANDIDATES, rng))))
    return out


def _guard():
    from assay.guard.bench import _feed_bundle, catalog
    from assay.guard.core import Guard, GuardConfig

    _, store, _ = catalog(20_000)
    return Guard(_feed_bundle(), store, config=GuardConfig(deadline_ms=1000))


def _produce(send: Any, batches: list[tuple[str, bytes]], clock: _Clock, rate: float | None) -> None:
    start = time.perf_counter()
    for k, (rid, body) in enumerate(batches):
        if rate:
            delay = start + k / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        clock.sent[rid] = time.perf_counter()
        send(rid, body)


def _phases(send: Any, flush: Any, clock: _Clock, n: int, duration_s: float) -> dict[str, float]:
    """Throughput with the producer free-running, then latency at half that rate."""
    batches = _batches(n, seed=1)
    started = time.perf_counter()
    _produce(send, batches, clock, None)
    flush()
    ids = [rid for rid, _ in batches]
    if not clock.wait(ids, 300):
        raise RuntimeError(f"{sum(i in clock.arrived for i in ids)} of {n} slates arrived")
    rate = n / (max(clock.arrived[i] for i in ids) - started)
    offered = rate / 2
    paced = _batches(max(int(offered * duration_s), 20), seed=2)
    _produce(send, paced, clock, offered)
    flush()
    pids = [rid for rid, _ in paced]
    if not clock.wait(pids, 300):
        raise RuntimeError("not every paced slate arrived")
    lat = np.array([clock.arrived[i] - clock.sent[i] for i in pids]) * 1000
    return {"batches_per_s": rate, "offered_per_s": offered, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "latency_samples": len(pids)}


def bench_kafka(n: int, duration_s: float) -> dict[str, Any]:
    from confluent_kafka import Consumer, Producer

    from assay.guard.stream import KafkaTransport, StreamWorker
    from assay.guard.tansu import TansuBroker

    quiet = logging.getLogger("assay.guard.kafka")
    external = os.environ.get("ASSAY_BENCH_KAFKA")
    broker = None if external else TansuBroker().start()
    bootstrap = external or broker.bootstrap
    tag = uuid.uuid4().hex[:8]
    tin, tout = f"bench-in-{tag}", f"bench-out-{tag}"
    try:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": bootstrap, "logger": quiet})
        for f in admin.create_topics([NewTopic(tin, 1, 1), NewTopic(tout, 1, 1)]).values():
            f.result(timeout=10)
        clock = _Clock()
        stop = threading.Event()
        transport = KafkaTransport(bootstrap, input_topic=tin, output_topic=tout, group=f"bench-{tag}", extra_config=FAST_GROUP)
        worker = StreamWorker(_guard(), transport, count=64, block_ms=20)
        reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-reader-{tag}", "auto.offset.reset": "earliest",
                           "enable.auto.commit": False, "fetch.wait.max.ms": 5, "logger": quiet, **FAST_GROUP})
        reader.subscribe([tout])

        def read() -> None:
            while not stop.is_set():
                for m in reader.consume(500, 0.01):
                    if not m.error():
                        clock.arrive(m.key().decode())

        _wait_assigned(transport, reader)  # before the threads: a client's assignment() blocks while another thread consumes
        threads = [threading.Thread(target=worker.run, args=(stop,), daemon=True), threading.Thread(target=read, daemon=True)]
        for t in threads:
            t.start()
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "enable.idempotence": True, "logger": quiet})

        def send(rid: str, body: bytes) -> None:
            while True:
                try:
                    producer.produce(tin, key=rid, value=body)
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)

        out = _phases(send, lambda: producer.flush(30), clock, n, duration_s)
        stop.set()
        for t in threads:
            t.join(10)
        transport.close()
        reader.close()
        return {**out, "duplicates": clock.duplicates, "errors": worker.stats.errors,
                "broker": "external (ASSAY_BENCH_KAFKA)" if external else "Tansu 0.6 (memory storage), started for the run"}
    finally:
        if broker is not None:
            broker.stop()


def _wait_assigned(transport: Any, reader: Any, timeout_s: float = 60.0) -> None:
    """Both consumers have joined their groups (a join is not part of the figures); nothing has
    been produced yet, so these reads return nothing."""
    deadline = time.monotonic() + timeout_s
    while not (transport.consumer.assignment() and reader.assignment()):
        if time.monotonic() > deadline:
            raise RuntimeError("the Kafka consumers were not assigned their partitions")
        transport.read(1, 50)
        reader.consume(1, 0.05)


def bench_redis(n: int, duration_s: float) -> dict[str, Any]:
    import redis

    from assay.guard.stream import RedisStreamsTransport, StreamWorker

    url = os.environ.get("ASSAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    tag = f"assay:bench:stream:{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url)
    transport = RedisStreamsTransport(url, input_stream=f"{tag}:in", output_stream=f"{tag}:out", consumer="bench")
    try:
        clock = _Clock()
        stop = threading.Event()
        worker = StreamWorker(_guard(), transport, count=64, block_ms=20)
        reader = redis.Redis.from_url(url)

        def read() -> None:
            last = "0-0"
            while not stop.is_set():
                for _, entries in reader.xread({f"{tag}:out": last}, count=1000, block=20) or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        clock.arrive(fields[b"request_id"].decode())

        threads = [threading.Thread(target=worker.run, args=(stop,), daemon=True), threading.Thread(target=read, daemon=True)]
        for t in threads:
            t.start()
        out = _phases(lambda rid, body: client.xadd(f"{tag}:in", {"data": body}), lambda: None, clock, n, duration_s)
        stop.set()
        for t in threads:
            t.join(10)
        reader.close()
        return {**out, "duplicates": clock.duplicates, "errors": worker.stats.errors}
    finally:
        with contextlib.suppress(Exception):
            client.delete(f"{tag}:in", f"{tag}:out", *client.scan_iter(f"{tag}:out:done:*", count=1000))
        transport.close()
        client.close()


def bench_inprocess(n: int) -> float:
    guard = _guard()
    bodies = [orjson.loads(body) for _, body in _batches(n, seed=3)]
    started = time.perf_counter()
    for body in bodies:
        guard.apply(body["request"], body["candidates"])
    return n / (time.perf_counter() - started)


def run(quick: bool = False) -> BenchResult:
    n, duration = (100, 2.0) if quick else (2000, 10.0)
    kafka = bench_kafka(n, duration)
    redis_ = bench_redis(n, duration)
    inproc = bench_inprocess(min(n, 500))
    ms = "ms"
    return BenchResult(
        figures={"kafka_batches_per_s": round(kafka["batches_per_s"], 1), "kafka_e2e_p99_ms": round(kafka["p99_ms"], 2),
                 "redis_batches_per_s": round(redis_["batches_per_s"], 1), "redis_e2e_p99_ms": round(redis_["p99_ms"], 2)},
        baseline={"inprocess_batches_per_s": round(inproc, 1)},
        units={"kafka_batches_per_s": "batches/s", "kafka_e2e_p99_ms": ms, "redis_batches_per_s": "batches/s",
               "redis_e2e_p99_ms": ms, "inprocess_batches_per_s": "batches/s"},
        measures={
            "kafka_batches_per_s": f"{n} batches of {CANDIDATES} candidates produced while the worker runs, ÷ the time from "
                                   "the first produce to the last slate read from the output topic",
            "kafka_e2e_p99_ms": "p99 from produce to the slate read from the output topic, offered at half the throughput",
            "redis_batches_per_s": "the same through Redis Streams (XADD ... slate XADD + XACK in one transaction, XREAD)",
            "redis_e2e_p99_ms": "the same latency through Redis Streams",
        },
        detail={"kafka": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in kafka.items()},
                "redis": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in redis_.items()},
                "candidates_per_batch": CANDIDATES, "batches": n, "latency_phase_s": duration, "worker_read_count": 64,
                "load_average_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()},
    )
