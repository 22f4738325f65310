"""The guard as a stream worker: candidate batches in, slates out, at least once.

One :class:`StreamWorker` drives any :class:`StreamTransport`; two transports ship:

- :class:`RedisStreamsTransport` — Redis Streams with a consumer group. A message is read with
  ``XREADGROUP``; its slate is written to the output stream, the request id is marked done and the
  message is acknowledged in **one MULTI/EXEC transaction**, so "slate written" and "acked" happen
  together or not at all. A message read but never acknowledged (a crashed worker) stays pending
  and is claimed by a live worker with ``XAUTOCLAIM`` after ``claim_idle_ms``. A redelivered or
  duplicated request id finds its done marker and is acknowledged without a second slate
  (idempotent on redelivery).
- :class:`KafkaTransport` — plain Kafka through confluent-kafka: a whole read's slates produced
  and confirmed, their request ids marked done in a dedupe store (in-memory LRU by default,
  :class:`RedisDedupe` to share it across the group), the offsets committed up to the last
  message done, a failed read rewound and read again (details in its docstring).
  :class:`KafkaTraceWriter` appends a group's decisions to one trace log, once per request id.

A transport that fails is reported once through the worker's ``on_status`` and retried with
exponential back-off.

Wire format (JSON, encoded with orjson): an input message is
``{"request": {...}, "candidates": {...columns...} | [...records...]}`` or a feedback message
``{"kind": "feedback", "item_id", "source", "model_version", "surface", "creator", "severe"}`` (a
served item later found harmful: a failure against the breaker of each scope it names; a malformed
one is counted as bad input and acknowledged). An output message is the slate's JSON (see
``Slate.to_dict``), or ``{"request_id", "error"}`` for a batch that was bad input.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from assay.errors import AssayError, BadInput, Unavailable


@dataclass
class StreamMessage:
    """One input message: transport-specific id, the raw JSON body, and the transport's handle."""

    id: str
    body: bytes
    handle: Any = None


class StreamTransport(Protocol):
    def read(self, count: int, block_ms: int) -> list[StreamMessage]: ...

    def is_done(self, request_id: str) -> bool: ...

    def write_and_ack(self, msg: StreamMessage, request_id: str, output: bytes) -> None:
        """Write ``output`` to the output stream, mark ``request_id`` done, then acknowledge."""
        ...

    def ack(self, msg: StreamMessage) -> None: ...

    def close(self) -> None: ...


def encode_request(request: dict[str, Any], candidates: Any) -> bytes:
    """An input message for a candidate batch (numpy columns are encoded natively by orjson)."""
    if isinstance(candidates, dict):
        candidates = {k: (v.tolist() if hasattr(v, "dtype") and v.dtype.kind in "OUSb" else v) for k, v in candidates.items()}
    return orjson.dumps({"request": request, "candidates": candidates}, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_feedback(*, item_id: str, source: str | None = None, model_version: str | None = None,
                    surface: str | None = None, creator: str | None = None, severe: bool = False) -> bytes:
    return orjson.dumps({"kind": "feedback", "item_id": item_id, "source": source, "model_version": model_version,
                         "surface": surface, "creator": creator, "severe": severe})


def apply_feedback(guard: Any, body: dict[str, Any]) -> dict[str, str]:
    """A harm report (HTTP or stream) to the guard's breakers; a BadInput names what is wrong."""
    severe = body.get("severe")
    return guard.report_harmful(item_id=body.get("item_id"), source=body.get("source"), model_version=body.get("model_version"),
                                surface=body.get("surface"), creator=body.get("creator"),
                                severe=False if severe is None else severe)


@dataclass
class WorkerStats:
    processed: int = 0
    duplicates: int = 0
    bad_input: int = 0
    feedback: int = 0
    errors: int = 0
    outages: int = 0
    last_error: str = ""


class StreamWorker:
    """Reads batches from a transport, decides each with the guard, writes its slate, acks."""

    def __init__(self, guard: Any, transport: StreamTransport, *, count: int = 64, block_ms: int = 100,
                 decisions_in_output: bool = False, on_status: Callable[[str], None] | None = None,
                 max_backoff_s: float = 5.0):
        self.guard = guard
        self.transport = transport
        self.count = count
        self.block_ms = block_ms
        self.decisions_in_output = decisions_in_output
        self.on_status = on_status  # told once when the transport goes down and once when it is back
        self.max_backoff_s = max_backoff_s
        self.stats = WorkerStats()

    def handle(self, msg: StreamMessage) -> None:
        try:
            body = orjson.loads(msg.body)
            if not isinstance(body, dict):
                raise BadInput("stream message must be a JSON object")
        except (orjson.JSONDecodeError, BadInput) as e:
            self.stats.bad_input += 1
            self.transport.write_and_ack(msg, f"bad:{msg.id}", orjson.dumps({"request_id": None, "error": f"message {msg.id}: {e}"}))
            return
        if body.get("kind") == "feedback":
            try:
                apply_feedback(self.guard, body)
                self.stats.feedback += 1
            except BadInput:
                self.stats.bad_input += 1
            self.transport.ack(msg)
            return
        request = body.get("request")
        request_id = request.get("request_id") if isinstance(request, dict) else None
        if not isinstance(request_id, str) or not request_id:
            self.stats.bad_input += 1
            self.transport.write_and_ack(msg, f"bad:{msg.id}", orjson.dumps(
                {"request_id": None, "error": f"message {msg.id}: request.request_id must be a non-empty string (it makes redelivery idempotent)"}))
            return
        if self.transport.is_done(request_id):
            self.stats.duplicates += 1
            self.transport.ack(msg)
            return
        out = self._decide(request, request_id, body.get("candidates"))
        self.transport.write_and_ack(msg, request_id, out)
        self.stats.processed += 1

    def _decide(self, request: dict, request_id: str, candidates: Any) -> bytes:
        try:
            slate = self.guard.apply(request, candidates)
            return orjson.dumps(slate.to_dict(decisions=self.decisions_in_output), option=orjson.OPT_SERIALIZE_NUMPY)
        except BadInput as e:
            self.stats.bad_input += 1
            return orjson.dumps({"request_id": request_id, "error": e.message})

    def handle_many(self, msgs: list[StreamMessage]) -> None:
        """A whole read at once, for transports with ``done_many`` and ``write_and_ack_many``: one
        round trip asks which request ids are already done, and one transaction writes every slate
        and done marker and acknowledges every message (so a slate is still never acknowledged
        without being written, and a failed write leaves the whole read pending, redelivered and
        deduplicated by request id). Feedback is applied and acknowledged as it comes, in order,
        so a failed write never replays it."""
        parsed: list[tuple[StreamMessage, Any]] = []
        for msg in msgs:
            try:
                body = orjson.loads(msg.body)
                if not isinstance(body, dict):
                    raise BadInput("stream message must be a JSON object")
            except (orjson.JSONDecodeError, BadInput) as e:
                body = e
            parsed.append((msg, body))
        request_ids = [b["request"].get("request_id") for _, b in parsed
                       if isinstance(b, dict) and b.get("kind") != "feedback" and isinstance(b.get("request"), dict)]
        wanted = [r for r in request_ids if isinstance(r, str) and r]
        done = set(self.transport.done_many(wanted)) if wanted else set()  # type: ignore[attr-defined]
        writes: list[tuple[StreamMessage, str, bytes]] = []
        acks: list[StreamMessage] = []
        decided = duplicates = bad = 0
        for msg, body in parsed:
            if not isinstance(body, dict):
                bad += 1
                writes.append((msg, f"bad:{msg.id}", orjson.dumps({"request_id": None, "error": f"message {msg.id}: {body}"})))
                continue
            if body.get("kind") == "feedback":
                self.handle(msg)
                continue
            request = body.get("request")
            request_id = request.get("request_id") if isinstance(request, dict) else None
            if not isinstance(request_id, str) or not request_id:
                bad += 1
                writes.append((msg, f"bad:{msg.id}", orjson.dumps(
                    {"request_id": None, "error": f"message {msg.id}: request.request_id must be a non-empty string (it makes redelivery idempotent)"})))
                continue
            if request_id in done:  # done before, or earlier in this read
                duplicates += 1
                acks.append(msg)
                continue
            done.add(request_id)
            writes.append((msg, request_id, self._decide(request, request_id, body.get("candidates"))))
            decided += 1
        self.transport.write_and_ack_many(writes, acks)  # type: ignore[attr-defined]
        self.stats.processed += decided
        self.stats.duplicates += duplicates
        self.stats.bad_input += bad

    def run_once(self) -> int:
        """Read one batch of messages and handle them; returns how many were handled."""
        msgs = self.transport.read(self.count, self.block_ms)
        if len(msgs) > 1 and hasattr(self.transport, "write_and_ack_many") and hasattr(self.transport, "done_many"):
            try:
                self.handle_many(msgs)
            except AssayError as e:  # transport down: the whole read stays pending (redelivered)
                self.stats.errors += 1
                self.stats.last_error = e.message
            return len(msgs)
        for msg in msgs:
            try:
                self.handle(msg)
            except AssayError as e:  # transport down mid-batch: leave the rest pending (redelivered)
                self.stats.errors += 1
                self.stats.last_error = e.message
                break
        return len(msgs)

    def run(self, stop: threading.Event | None = None, *, max_messages: int | None = None, idle_exit_s: float | None = None) -> int:
        """Loop until ``stop`` is set, ``max_messages`` were handled, or nothing arrived for ``idle_exit_s``.

        A transport that fails (its server down, a write not confirmed) is reported once through
        ``on_status`` and retried with exponential back-off (0.1 s doubling to ``max_backoff_s``); what
        was read and not written stays unacknowledged and is read again. Time spent down does not
        count as idle."""
        stop = stop or threading.Event()
        handled = 0
        idle_since = time.monotonic()
        backoff = 0.0
        down = False
        while not stop.is_set():
            errors_before = self.stats.errors
            try:
                k = self.run_once()
            except Unavailable as e:
                self.stats.errors += 1
                self.stats.last_error = e.message
                k = 0
            if self.stats.errors > errors_before:
                if not down:
                    down = True
                    self.stats.outages += 1
                    self._status(f"{self.stats.last_error}; retrying with back-off")
                backoff = min(max(backoff * 2, 0.1), self.max_backoff_s)
                stop.wait(backoff)
                idle_since = time.monotonic()
                continue
            if down:
                down, backoff = False, 0.0
                self._status("transport reachable again; resuming from the last acknowledged message")
            handled += k
            if k:
                idle_since = time.monotonic()
            elif idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
                break
            if max_messages is not None and handled >= max_messages:
                break
        return handled

    def _status(self, line: str) -> None:
        if self.on_status is not None:
            self.on_status(line)


class RedisStreamsTransport:
    """Redis Streams with a consumer group (see the module docstring for the guarantees)."""

    def __init__(self, url: str, *, input_stream: str = "assay:guard:in", output_stream: str = "assay:guard:out",
                 group: str = "assay-guard", consumer: str = "worker-1", done_ttl_s: int = 86400,
                 claim_idle_ms: int = 30000, output_maxlen: int | None = 1_000_000, socket_timeout_s: float = 5.0):
        import redis

        self._redis = redis
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s)
        self.input_stream = input_stream
        self.output_stream = output_stream
        self.group = group
        self.consumer = consumer
        self.done_ttl_s = done_ttl_s
        self.claim_idle_ms = claim_idle_ms
        self.output_maxlen = output_maxlen
        self.done_prefix = f"{output_stream}:done:"
        self._claim_cursor = "0-0"
        self._last_claim = 0.0
        try:
            self.client.xgroup_create(input_stream, group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise Unavailable(f"cannot create consumer group {group!r} on {input_stream!r}: {e}") from e
        except (redis.exceptions.RedisError, OSError) as e:
            raise Unavailable(f"Redis at {url} is unavailable: {e}") from e

    def _guard_errors(self, what: str):
        transport = self

        class _Ctx:
            def __enter__(self):
                return self

            def __exit__(self, et, ev, tb):
                if ev is not None and isinstance(ev, (transport._redis.exceptions.RedisError, OSError)):
                    raise Unavailable(f"Redis at {transport.url}: {what} failed: {ev}") from ev
                return False

        return _Ctx()

    def publish(self, body: bytes) -> str:
        """Add one input message (producers and tests use this)."""
        with self._guard_errors("XADD"):
            return self.client.xadd(self.input_stream, {"data": body}).decode()

    def read(self, count: int, block_ms: int) -> list[StreamMessage]:
        with self._guard_errors("XREADGROUP"):
            msgs = self._claim(count)
            if not msgs:
                resp = self.client.xreadgroup(self.group, self.consumer, {self.input_stream: ">"}, count=count, block=block_ms or None)
                for _, entries in resp or []:
                    for entry_id, fields in entries:
                        msgs.append(StreamMessage(entry_id.decode(), fields.get(b"data", b""), entry_id))
            return msgs

    def _claim(self, count: int) -> list[StreamMessage]:
        """Messages another (dead) consumer read but never acknowledged, after ``claim_idle_ms``."""
        now = time.monotonic()
        if now - self._last_claim < max(self.claim_idle_ms / 4000, 0.05):
            return []
        self._last_claim = now
        resp = self.client.xautoclaim(self.input_stream, self.group, self.consumer, self.claim_idle_ms,
                                      start_id=self._claim_cursor, count=count)
        cursor, entries = resp[0], resp[1]
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        out = []
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream meanwhile
                continue
            out.append(StreamMessage(entry_id.decode(), fields.get(b"data", b""), entry_id))
        return out

    def is_done(self, request_id: str) -> bool:
        with self._guard_errors("EXISTS"):
            return bool(self.client.exists(self.done_prefix + request_id))

    def write_and_ack(self, msg: StreamMessage, request_id: str, output: bytes) -> None:
        with self._guard_errors("write slate"):
            pipe = self.client.pipeline(transaction=True)
            kwargs: dict[str, Any] = {}
            if self.output_maxlen:
                kwargs = {"maxlen": self.output_maxlen, "approximate": True}
            pipe.xadd(self.output_stream, {"request_id": request_id, "slate": output}, **kwargs)
            pipe.set(self.done_prefix + request_id, msg.id, ex=self.done_ttl_s)
            pipe.xack(self.input_stream, self.group, msg.id)
            pipe.execute()

    def done_many(self, request_ids: list[str]) -> list[str]:
        """The request ids among ``request_ids`` already done (one MGET)."""
        with self._guard_errors("MGET"):
            found = self.client.mget([self.done_prefix + r for r in request_ids])
        return [r for r, v in zip(request_ids, found, strict=True) if v is not None]

    def write_and_ack_many(self, writes: list[tuple[StreamMessage, str, bytes]], acks: list[StreamMessage] = ()) -> None:
        """``write_and_ack`` for many messages in one MULTI/EXEC: every slate and done marker is
        written and every message of ``writes`` and ``acks`` acknowledged, or none is."""
        if not writes and not acks:
            return
        with self._guard_errors("write slates"):
            pipe = self.client.pipeline(transaction=True)
            kwargs: dict[str, Any] = {}
            if self.output_maxlen:
                kwargs = {"maxlen": self.output_maxlen, "approximate": True}
            for msg, request_id, output in writes:
                pipe.xadd(self.output_stream, {"request_id": request_id, "slate": output}, **kwargs)
                pipe.set(self.done_prefix + request_id, msg.id, ex=self.done_ttl_s)
            pipe.xack(self.input_stream, self.group, *[m.id for m, _, _ in writes], *[m.id for m in acks])
            pipe.execute()

    def ack(self, msg: StreamMessage) -> None:
        with self._guard_errors("XACK"):
            self.client.xack(self.input_stream, self.group, msg.id)

    def pending(self) -> int:
        with self._guard_errors("XPENDING"):
            return int(self.client.xpending(self.input_stream, self.group)["pending"])

    def read_output(self, count: int = 10000) -> list[dict[str, Any]]:
        """The slates written so far (for tests and the demo)."""
        with self._guard_errors("XRANGE"):
            return [orjson.loads(fields[b"slate"]) for _, fields in self.client.xrange(self.output_stream, count=count)]

    def close(self) -> None:
        self.client.close()


class DedupeStore(Protocol):
    def seen_many(self, keys: list[str]) -> set[str]: ...

    def mark_many(self, keys: list[str]) -> None: ...


class InMemoryDedupe:
    """The last ``capacity`` request ids this process finished (LRU). Per worker: a redelivery
    to another worker (after a rebalance or a crash) is not caught — use :class:`RedisDedupe`
    to share it."""

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def seen_many(self, keys: list[str]) -> set[str]:
        with self._lock:
            return {k for k in keys if k in self._ids}

    def mark_many(self, keys: list[str]) -> None:
        with self._lock:
            for k in keys:
                self._ids[k] = None
                self._ids.move_to_end(k)
            while len(self._ids) > self.capacity:
                self._ids.popitem(last=False)


class RedisDedupe:
    """Done markers shared by every worker of a group, in Redis (one MGET per read, one
    pipelined SET per written batch), kept ``ttl_s``."""

    def __init__(self, url: str, *, prefix: str = "assay:guard:kafka:done:", ttl_s: int = 86400, timeout_s: float = 5.0):
        import redis

        self._redis = redis
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.prefix = prefix
        self.ttl_s = ttl_s
        try:
            self.client.ping()
        except (redis.exceptions.RedisError, OSError) as e:
            raise Unavailable(f"dedupe store: Redis at {url} is unavailable: {e}") from e

    def seen_many(self, keys: list[str]) -> set[str]:
        if not keys:
            return set()
        try:
            found = self.client.mget([self.prefix + k for k in keys])
        except (self._redis.exceptions.RedisError, OSError) as e:
            raise Unavailable(f"dedupe store: Redis at {self.url}: MGET failed: {e}") from e
        return {k for k, v in zip(keys, found, strict=True) if v is not None}

    def mark_many(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for k in keys:
                pipe.set(self.prefix + k, b"1", ex=self.ttl_s)
            pipe.execute()
        except (self._redis.exceptions.RedisError, OSError) as e:
            raise Unavailable(f"dedupe store: Redis at {self.url}: SET failed: {e}") from e


_KAFKA_LOG = logging.getLogger("assay.guard.kafka")
_KAFKA_LOG.addHandler(logging.NullHandler())  # librdkafka's own log lines stay out of stderr unless logging is set up


class KafkaTransport:
    """Kafka (or any Kafka-protocol broker: Redpanda, Tansu) via confluent-kafka, with the same
    interface as :class:`RedisStreamsTransport`; the worker handles a whole read at once.

    - **At least once, committed only when done.** A read's slates are produced (idempotent
      producer, key = request id) and their delivery confirmed; then their request ids are marked
      done in the dedupe store; the input offsets are committed at the start of the next read (and
      at close), per partition up to the last message that is done. A read whose slates were not
      confirmed is not committed: its partitions are rewound to the first message not done, and
      read again once the broker answers (so nothing is lost and the committed offset is where a
      restarted or rebalanced worker resumes).
    - **Idempotent by request id.** A request id already marked done is acknowledged without a
      slate. With :class:`RedisDedupe` the markers are shared by the group, so a batch redelivered
      to another worker after a rebalance or a ``kill -9`` is not decided twice. Feedback messages
      are marked by their position (topic/partition/offset), so a rewound read never replays one.
      One window remains: a worker killed after its slates were delivered but before it marked
      them done leaves them to be decided again — the output topic can then hold a request id's
      slate twice (the same decisions, as the guard is deterministic). Whoever reads the output
      deduplicates by the record key, as :class:`KafkaTraceWriter` does; Kafka transactions would
      close the window on a broker that aborts a dead producer's transaction (Tansu 0.6 does not:
      it later exposes it), so they are not used.
    - **A broker that is down** is found at start (``Unavailable``: the CLI exits 3) and, later,
      through librdkafka's error callback: :meth:`read` then checks the broker with a metadata
      request and raises ``Unavailable`` while it does not answer; the worker reports the outage
      once and backs off. librdkafka's own log lines go to the ``assay.guard.kafka`` logger.
    """

    def __init__(self, bootstrap_servers: str, *, input_topic: str = "assay.guard.in", output_topic: str = "assay.guard.out",
                 group: str = "assay-guard", consumer: str = "worker-1", dedupe: Any = None, delivery_timeout_s: float = 10.0,
                 connect_timeout_s: float = 10.0, extra_config: dict[str, Any] | None = None):
        from assay.errors import require_extra

        ck = require_extra("confluent_kafka", "kafka")
        self._ck = ck
        self.bootstrap_servers = bootstrap_servers
        self.input_topic = input_topic
        self.output_topic = output_topic
        self.group = group
        self.dedupe = dedupe if dedupe is not None else InMemoryDedupe()
        self.delivery_timeout_s = delivery_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.errors: deque[str] = deque(maxlen=100)
        self.commit_failures = 0
        self._suspect = ""  # the last connection error librdkafka reported, until a metadata request succeeds
        self._read: list[Any] = []  # the last read's messages (confluent Message), in order
        self._done: set[tuple[str, int, int]] = set()  # their positions that are done
        common = {"bootstrap.servers": bootstrap_servers, "client.id": consumer, "error_cb": self._on_error,
                  "logger": _KAFKA_LOG, **(extra_config or {})}
        self.consumer = ck.Consumer({**common, "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                     "enable.partition.eof": False})
        self.producer = ck.Producer({**common, "enable.idempotence": True, "acks": "all", "linger.ms": 1,
                                     "message.timeout.ms": int(delivery_timeout_s * 1000)})
        try:
            self._check_topics(self._first_metadata())
        except (Unavailable, BadInput):
            self._close_clients()
            raise
        self.consumer.subscribe([input_topic])

    def _first_metadata(self) -> Any:
        """The cluster's metadata, asked until ``connect_timeout_s``; a broker that refuses the
        connection (librdkafka: all brokers down) fails at once rather than at the timeout."""
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            try:
                return self.consumer.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            except self._ck.KafkaException as e:
                self.consumer.poll(0)  # serves the error callback
                down = any("brokers are down" in err or "Connection refused" in err for err in self.errors)
                if down or time.monotonic() >= deadline:
                    why = self.errors[-1] if self.errors else (e.args[0].str() if e.args else str(e))
                    raise Unavailable(f"Kafka at {self.bootstrap_servers} is unreachable: {why}") from None

    def _check_topics(self, metadata: Any) -> None:
        missing = [t for t in (self.input_topic, self.output_topic) if t not in metadata.topics or metadata.topics[t].error is not None]
        if missing:
            raise BadInput(f"Kafka at {self.bootstrap_servers}: topic(s) {', '.join(map(repr, missing))} do not exist",
                           hint="create them first, with as many input partitions as workers you want to share the load")

    def _on_error(self, err: Any) -> None:
        self.errors.append(err.str())
        ck = self._ck
        if err.code() in (ck.KafkaError._ALL_BROKERS_DOWN, ck.KafkaError._TRANSPORT, ck.KafkaError._RESOLVE,
                          ck.KafkaError._TIMED_OUT) or err.fatal():
            self._suspect = err.str()

    def _check_broker(self) -> None:
        """While librdkafka has reported a connection error, one metadata request decides whether the
        broker is back (a dropped idle connection is not an outage)."""
        if not self._suspect:
            return
        try:
            self.consumer.list_topics(self.input_topic, timeout=min(self.connect_timeout_s, 2.0))
        except self._ck.KafkaException as e:
            raise Unavailable(f"Kafka at {self.bootstrap_servers} is unreachable: {self._suspect or e}") from None
        self._suspect = ""

    def publish(self, body: bytes, key: str | None = None) -> None:
        """Produce one input message and wait for its delivery (producers and tests use this)."""
        self.producer.produce(self.input_topic, value=body, key=key)
        if self.producer.flush(self.delivery_timeout_s):
            raise Unavailable(f"Kafka at {self.bootstrap_servers}: input message not delivered in {self.delivery_timeout_s}s")

    @staticmethod
    def _pos(m: Any) -> tuple[str, int, int]:
        return m.topic(), m.partition(), m.offset()

    def _settle(self) -> None:
        """Commit what the last read finished; rewind each partition to its first message that is
        not done (so it is read again)."""
        if not self._read:
            return
        TopicPartition = self._ck.TopicPartition
        commit: dict[tuple[str, int], int] = {}
        rewind: dict[tuple[str, int], int] = {}
        for m in self._read:
            key = (m.topic(), m.partition())
            if key in rewind:
                continue
            if self._pos(m) in self._done:
                commit[key] = m.offset() + 1
            else:
                rewind[key] = m.offset()
        if commit:
            try:
                self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in commit.items()], asynchronous=False)
            except self._ck.KafkaException as e:
                # a rebalance took the partition away, or the broker went: the slates are out and
                # marked done, so whoever reads these messages again acknowledges them without a slate
                self.commit_failures += 1
                self.errors.append(f"commit: {e}")
        if rewind:
            assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
            for (t, p), offset in rewind.items():
                if (t, p) in assigned:
                    self.consumer.seek(TopicPartition(t, p, offset))
        self._read, self._done = [], set()

    def read(self, count: int, block_ms: int) -> list[StreamMessage]:
        self._settle()
        self._check_broker()
        msgs = self.consumer.consume(num_messages=count, timeout=block_ms / 1000)
        good = []
        for m in msgs:
            if m.error():
                self.errors.append(str(m.error()))
                continue
            good.append(m)
        self._read = good
        ids = [f"{t}/{p}/{o}" for t, p, o in map(self._pos, good)]
        applied = self.dedupe.seen_many([f"msg:{i}" for i in ids]) if good else set()  # feedback applied before a rewind
        out = []
        for m, i in zip(good, ids, strict=True):
            if f"msg:{i}" in applied:
                self._done.add(self._pos(m))
            else:
                out.append(StreamMessage(i, m.value() or b"", m))
        return out

    def is_done(self, request_id: str) -> bool:
        return bool(self.dedupe.seen_many([request_id]))

    def done_many(self, request_ids: list[str]) -> list[str]:
        seen = self.dedupe.seen_many(request_ids)
        return [r for r in request_ids if r in seen]

    def write_and_ack(self, msg: StreamMessage, request_id: str, output: bytes) -> None:
        self.write_and_ack_many([(msg, request_id, output)])

    def write_and_ack_many(self, writes: list[tuple[StreamMessage, str, bytes]], acks: list[StreamMessage] = ()) -> None:
        """Produce every slate and wait for the broker to confirm all of them; only then are their
        request ids marked done and the messages counted as done (committed at the next read)."""
        if writes:
            failed: list[Any] = []

            def on_delivery(err: Any, _m: Any) -> None:
                if err is not None:
                    failed.append(err)

            for _msg, request_id, output in writes:
                self.producer.produce(self.output_topic, key=request_id, value=output, on_delivery=on_delivery)
            remaining = self.producer.flush(self.delivery_timeout_s)
            if remaining or failed:
                self.producer.purge()  # what is still queued is not sent later behind our back
                self.producer.flush(0)
                why = failed[0] if failed else f"{remaining} not confirmed in {self.delivery_timeout_s}s"
                self._suspect = self._suspect or str(why)
                raise Unavailable(f"Kafka at {self.bootstrap_servers}: slates not delivered ({why}); offsets not committed, the read is retried")
            self.dedupe.mark_many([r for _, r, _ in writes if not r.startswith("bad:")])
        for msg, *_ in writes:
            self._done.add(self._pos(msg.handle))
        for msg in acks:
            self._done.add(self._pos(msg.handle))

    def ack(self, msg: StreamMessage) -> None:
        """A message that needs no slate (a duplicate, or feedback once applied): done. Its position is
        marked in the dedupe store so that a rewound read does not apply feedback twice."""
        self.dedupe.mark_many([f"msg:{msg.id}"])
        self._done.add(self._pos(msg.handle))

    def _close_clients(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close()
        with contextlib.suppress(Exception):
            self.producer.purge()
            self.producer.flush(0)

    def close(self) -> None:
        if not self._suspect:
            with contextlib.suppress(Exception):
                self._settle()
        self._close_clients()


class KafkaTraceWriter:
    """The decision log of a Kafka guard group: consumes the workers' output topic (slates written
    with their decisions, ``assay guard worker --decisions-in-output``) and appends each request's
    decisions to one :class:`assay.trace.TraceLog`, once per request id.

    The log is appended (fsynced, checkpointed) before the input offsets are committed; after a
    crash the uncommitted tail is read again and every request id already in the log (the last
    ``window`` records are read back at start) or already appended is skipped. Slates without
    decisions, and error answers, are counted and skipped."""

    def __init__(self, bootstrap_servers: str, log: Any, *, topic: str = "assay.guard.out", group: str = "assay-trace",
                 window: int = 1_000_000, connect_timeout_s: float = 10.0, extra_config: dict[str, Any] | None = None):
        from assay.errors import require_extra

        ck = require_extra("confluent_kafka", "kafka")
        self._ck = ck
        self.log = log
        self.bootstrap_servers = bootstrap_servers
        self.stats = {"slates": 0, "decisions": 0, "duplicates": 0, "skipped": 0}
        size = log.size
        recent = log.table(["request_id"]).slice(max(0, size - window)) if size else None
        self._seen: OrderedDict[str, None] = OrderedDict.fromkeys(
            [] if recent is None else [r for r in recent.column("request_id").to_pylist() if r])
        self.window = window
        self.consumer = ck.Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group, "enable.auto.commit": False,
                                     "auto.offset.reset": "earliest", "logger": _KAFKA_LOG, **(extra_config or {})})
        try:
            md = self.consumer.list_topics(timeout=connect_timeout_s)
        except ck.KafkaException as e:
            self.consumer.close()
            raise Unavailable(f"Kafka at {bootstrap_servers} is unreachable: {e.args[0].str() if e.args else e}") from None
        if topic not in md.topics:
            self.consumer.close()
            raise BadInput(f"Kafka at {bootstrap_servers}: topic {topic!r} does not exist")
        self.consumer.subscribe([topic])

    def run_once(self, count: int = 500, block_ms: int = 200) -> int:
        """Read up to ``count`` slates, append the new requests' decisions, then commit; returns how many were read."""
        from assay.records import Decision

        msgs = [m for m in self.consumer.consume(num_messages=count, timeout=block_ms / 1000) if not m.error()]
        if not msgs:
            return 0
        records: list[Decision] = []
        fresh: list[str] = []
        for m in msgs:
            try:
                slate = orjson.loads(m.value() or b"")
            except orjson.JSONDecodeError:
                self.stats["skipped"] += 1
                continue
            rid = slate.get("request_id") if isinstance(slate, dict) else None
            if not isinstance(rid, str) or not isinstance(slate.get("decisions"), list):
                self.stats["skipped"] += 1
                continue
            if rid in self._seen or rid in fresh:
                self.stats["duplicates"] += 1
                continue
            fresh.append(rid)
            for d in slate["decisions"]:
                records.append(Decision(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}))
        if records:
            self.log.append(records)  # durable before the offsets move
        for rid in fresh:
            self._seen[rid] = None
        while len(self._seen) > self.window:
            self._seen.popitem(last=False)
        self.stats["slates"] += len(fresh)
        self.stats["decisions"] += len(records)
        last: dict[tuple[str, int], int] = {}
        for m in msgs:
            last[(m.topic(), m.partition())] = max(last.get((m.topic(), m.partition()), -1), m.offset() + 1)
        self.consumer.commit(offsets=[self._ck.TopicPartition(t, p, o) for (t, p), o in last.items()], asynchronous=False)
        return len(msgs)

    def run(self, stop: threading.Event | None = None, *, idle_exit_s: float | None = None) -> int:
        stop = stop or threading.Event()
        total, idle_since = 0, time.monotonic()
        while not stop.is_set():
            k = self.run_once()
            total += k
            if k:
                idle_since = time.monotonic()
            elif idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
                break
        return total

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close()


def worker_thread(worker: StreamWorker, stop: threading.Event) -> threading.Thread:
    t = threading.Thread(target=worker.run, args=(stop,), name="assay-guard-stream", daemon=True)
    t.start()
    return t

