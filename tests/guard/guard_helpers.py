"""Helpers for the guard tests (a uniquely named module: tests/ has no packages)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

import numpy as np

GUARD_TEST_BUNDLE = """
bundle: guard-test
version: "1"
attributes:
  rules:
    request.user.age: int
    item.labels.mature: double
    item.labels.spam: double
    item.labels.toxic: double
    item.source: string
    item.creator: string
    item.topic: string
    item.verified: bool
rules:
  - id: teen-mature-drop
    when: request.user.age < 18 && item.labels.mature >= 0.7
    action: drop
    reason: mature content is not for minors
  - id: verified-allow
    surface: [for_you, search]
    when: item.verified && item.labels.spam < 0.5
    action: allow
    reason: verified creators skip the later rules
  - id: spam-drop
    when: item.labels.spam >= 0.9
    action: drop
    reason: spam
  - id: toxic-demote
    when: item.labels.toxic >= 0.5
    action: demote(0.5)
    reason: toxic ranks lower
  - id: mature-demote
    when: item.labels.mature >= 0.5
    action: demote(0.8)
    reason: mature ranks lower
  - id: mature-label
    when: item.labels.mature >= 0.5
    action: label("Mature")
    reason: mature gets a warning
  - id: strict-spam-shadow
    when: item.labels.spam >= 0.5
    action: drop
    shadow: true
    reason: trial of a stricter spam threshold
  - id: toxic-drop-rollout
    when: item.labels.toxic >= 0.95
    action: drop
    rollout: 50
    reason: ramping a toxic drop
  - id: news-label
    when: item.topic == "news"
    action: label("News")
    on_missing: skip
    reason: news is labelled
  - id: creator-cap
    when: "true"
    action: cap(creator, 2)
    reason: at most two per creator
  - id: search-strict-spam
    surface: [search_strict]
    when: item.labels.spam >= 0.3
    action: drop
    reason: the stricter rule set drops more spam
"""

LABELS = ("mature", "spam", "toxic")


class ManualClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def make_candidates(n: int, seed: int = 0, *, creators: int = 50, sources=("catalog", "ugc:a", "ads:b")) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "id": np.array([f"item-{i}" for i in range(n)], dtype=object),
        "score": rng.random(n),
        "source": np.array(rng.choice(list(sources), n), dtype=object),
        "creator": np.array([f"creator-{k}" for k in rng.integers(0, creators, n)], dtype=object),
        "topic": np.array(rng.choice(["news", "film", "music"], n), dtype=object),
        "verified": rng.random(n) < 0.1,
    }


def make_labels(ids, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    n = len(ids)
    return {name: rng.beta(0.6, 3.0, n) for name in LABELS}


class FaultProxy:
    """A TCP proxy in front of a real server that can be made ``down`` (connections are closed at
    once and existing ones cut) or ``slow`` (every chunk is delayed) — a real network fault, not a
    mock. Counts accepted connections and relayed chunks so tests can tell whether the guard even
    tried to reach the store."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.mode = "up"
        self.delay_s = 0.0
        self.accepted = 0
        self.requests = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._conns: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def set_mode(self, mode: str, delay_s: float = 0.0) -> None:
        self.mode, self.delay_s = mode, delay_s
        if mode == "down":
            with self._lock:
                for a, b in self._conns:
                    for s in (a, b):
                        with contextlib.suppress(OSError):
                            s.shutdown(socket.SHUT_RDWR)
                        s.close()
                self._conns.clear()

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            if self.mode == "down":
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=1)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.append((client, upstream))
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        socks = [client, upstream]
        try:
            while not self._stop.is_set():
                r, _, _ = select.select(socks, [], [], 0.05)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is client:
                        self.requests += 1
                    if self.mode == "slow" and self.delay_s:
                        time.sleep(self.delay_s)
                    if self.mode == "down":
                        return
                    (upstream if s is client else client).sendall(data)
        except (OSError, ValueError):  # the other side, or set_mode("down"), closed the socket
            return
        finally:
            for s in socks:
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self._stop.set()
        self.set_mode("down")
        self._listener.close()
        self._thread.join(1)
