"""The guard as a stream worker: candidate batches in, slates out, at least once.

One :class:`StreamWorker` drives any :class:`StreamTransport`; two transports ship:

- :class:`RedisStreamsTransport` — Redis Streams with a consumer group. A message is read with
  ``XREADGROUP``; its slate is written to the output stream, the request id is marked done and the
  message is acknowledged in **one MULTI/EXEC transaction**, so "slate written" and "acked" happen
  together or not at all. A message read but never acknowledged (a crashed worker) stays pending
  and is claimed by a live worker with ``XAUTOCLAIM`` after ``claim_idle_ms``. A redelivered or
  duplicated request id finds its done marker and is acknowledged without a second slate
  (idempotent on redelivery).
- :class:`KafkaTransport` — confluent-kafka with the same interface: manual offset commits after
  the slate is produced and its delivery confirmed (at least once), an idempotent producer, and a
  pluggable dedupe store keyed by request id (in-memory LRU by default, :class:`RedisDedupe` to share
  it across workers).

Wire format (JSON, encoded with orjson): an input message is
``{"request": {...}, "candidates": {...columns...} | [...records...]}`` or a feedback message
``{"kind": "feedback", "item_id", "source", "model_version", "surface", "creator", "severe"}`` (a
served item later found harmful: a failure against the breaker of each scope it names; a malformed
one is counted as bad input and acknowledged). An output message is the slate's JSON (see
``Slate.to_dict``), or ``{"request_id", "error"}`` for a batch that was bad input.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
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
    last_error: str = ""


class StreamWorker:
    """Reads batches from a transport, decides each with the guard, writes its slate, acks."""

    def __init__(self, guard: Any, transport: StreamTransport, *, count: int = 64, block_ms: int = 100,
                 decisions_in_output: bool = False):
        self.guard = guard
        self.transport = transport
        self.count = count
        self.block_ms = block_ms
        self.decisions_in_output = decisions_in_output
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
        """Loop until ``stop`` is set, ``max_messages`` were handled, or nothing arrived for ``idle_exit_s``."""
        stop = stop or threading.Event()
        handled = 0
        idle_since = time.monotonic()
        while not stop.is_set():
            try:
                k = self.run_once()
            except Unavailable as e:
                self.stats.errors += 1
                self.stats.last_error = e.message
                time.sleep(min(self.block_ms / 1000, 0.5))
                k = 0
            handled += k
            if k:
                idle_since = time.monotonic()
            elif idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
                break
            if max_messages is not None and handled >= max_messages:
                break
        return handled


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
    def seen(self, request_id: str) -> bool: ...

    def mark(self, request_id: str) -> None: ...


class InMemoryDedupe:
    """The last ``capacity`` request ids this process finished (LRU). Per worker: a redelivery
    to another worker is not caught — use :class:`RedisDedupe` to share it."""

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._ids

    def mark(self, request_id: str) -> None:
        with self._lock:
            self._ids[request_id] = None
            self._ids.move_to_end(request_id)
            while len(self._ids) > self.capacity:
                self._ids.popitem(last=False)


class RedisDedupe:
    def __init__(self, url: str, *, prefix: str = "assay:guard:kafka:done:", ttl_s: int = 86400):
        import redis

        self.client = redis.Redis.from_url(url)
        self.prefix = prefix
        self.ttl_s = ttl_s

    def seen(self, request_id: str) -> bool:
        return bool(self.client.exists(self.prefix + request_id))

    def mark(self, request_id: str) -> None:
        self.client.set(self.prefix + request_id, b"1", ex=self.ttl_s)


@dataclass
class KafkaTransport:
    """Kafka via confluent-kafka, same interface as :class:`RedisStreamsTransport`.

    Offsets are committed manually, per message, only after the slate was produced and its
    delivery confirmed by the broker (at least once). The producer is idempotent
    (``enable.idempotence``); duplicates from redelivery are caught by the dedupe store.
    """

    bootstrap_servers: str
    input_topic: str = "assay.guard.in"
    output_topic: str = "assay.guard.out"
    group: str = "assay-guard"
    dedupe: Any = field(default_factory=InMemoryDedupe)
    delivery_timeout_s: float = 5.0
    extra_config: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from assay.errors import require_extra

        ck = require_extra("confluent_kafka", "kafka")
        self._ck = ck
        common = {"bootstrap.servers": self.bootstrap_servers, "error_cb": self._on_error, **self.extra_config}
        self.consumer = ck.Consumer({**common, "group.id": self.group, "enable.auto.commit": False,
                                     "auto.offset.reset": "earliest", "enable.partition.eof": False})
        self.producer = ck.Producer({**common, "enable.idempotence": True, "acks": "all", "linger.ms": 1,
                                     "message.timeout.ms": int(self.delivery_timeout_s * 1000)})
        self.consumer.subscribe([self.input_topic])

    def _on_error(self, err: Any) -> None:
        self.errors.append(str(err))

    def publish(self, body: bytes, key: str | None = None) -> None:
        self.producer.produce(self.input_topic, value=body, key=key)
        self.producer.flush(self.delivery_timeout_s)

    def read(self, count: int, block_ms: int) -> list[StreamMessage]:
        msgs = self.consumer.consume(num_messages=count, timeout=block_ms / 1000)
        out = []
        for m in msgs:
            if m.error():
                self.errors.append(str(m.error()))
                continue
            out.append(StreamMessage(f"{m.topic()}/{m.partition()}/{m.offset()}", m.value() or b"", m))
        return out

    def is_done(self, request_id: str) -> bool:
        return self.dedupe.seen(request_id)

    def write_and_ack(self, msg: StreamMessage, request_id: str, output: bytes) -> None:
        delivered: list[Any] = []

        def on_delivery(err: Any, _m: Any) -> None:
            delivered.append(err)

        self.producer.produce(self.output_topic, key=request_id, value=output, on_delivery=on_delivery)
        remaining = self.producer.flush(self.delivery_timeout_s)
        if remaining or not delivered or delivered[0] is not None:
            why = delivered[0] if delivered and delivered[0] is not None else "delivery not confirmed in time"
            raise Unavailable(f"Kafka {self.bootstrap_servers}: slate for {request_id} not delivered ({why}); offset not committed")
        self.dedupe.mark(request_id)
        self.ack(msg)

    def ack(self, msg: StreamMessage) -> None:
        if msg.handle is not None:
            self.consumer.commit(message=msg.handle, asynchronous=False)

    def close(self) -> None:
        self.consumer.close()
        self.producer.purge()  # undelivered slates are not acknowledged: they will be redelivered
        self.producer.flush(0)


def worker_thread(worker: StreamWorker, stop: threading.Event) -> threading.Thread:
    t = threading.Thread(target=worker.run, args=(stop,), name="assay-guard-stream", daemon=True)
    t.start()
    return t

