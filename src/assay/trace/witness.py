"""Witnesses: independent parties that cosign the log's checkpoints (C2SP tlog-witness and
tlog-cosignature, Ed25519 ``cosignature/v1``).

A log's own signature says "I, the log, say this is my tree"; it cannot rule out that the log
shows one history to one auditor and another to the next (a split view), or that it quietly went
back to an older tree. A witness keeps, per log, the newest checkpoint it cosigned, accepts a new
one only with a consistency proof from there (so only an append-only extension), and cosigns it.
A verifier that requires a quorum of witnesses' cosignatures (``assay trace verify --witness KEY
--quorum K``) is then protected even on its first run.

Formats, as the specs write them (``c2sp.org/tlog-cosignature``, ``/tlog-witness``,
``/signed-note``):

- cosigner key id: ``SHA-256(name || 0x0A || 0x04 || Ed25519 public key)[:4]``; verifier key
  ``name+<hex key id>+base64(0x04 || public key)``;
- cosignature line: ``— <name> base64(key id || u64 big-endian timestamp || Ed25519 signature)``,
  the signature over ``"cosignature/v1\\ntime <timestamp>\\n" || <the checkpoint's note body>``;
- ``POST <prefix>/add-checkpoint``: ``old <size>\\n``, up to 63 base64 consistency-proof lines,
  an empty line, then the signed checkpoint; answers 200 with the cosignature line(s), 400
  (malformed, or old size above the checkpoint's), 403 (no valid signature by a key trusted for
  the origin), 404 (unknown origin), 409 with ``text/x.tlog.size`` and the size it knows (old
  size is not the last size it cosigned), 422 (the proof does not verify, or a size-0 checkpoint
  without the empty root); ``GET <prefix>/<hex sha256(origin)>/checkpoint``: the newest
  checkpoint it cosigned, with its cosignature.

The check of the old size and the write of the new state happen under one lock (a thread lock
and a file lock), and the state is fsynced before the cosignature is returned, as the spec
requires. Written by hand: the protocol is a few lines of text and no Python package implements
it; Ed25519 is ``cryptography``'s, the HTTP service Starlette's (under uvicorn).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from assay.asgi import BodyDeadline, text_refusal
from assay.errors import BadInput, Unavailable
from assay.trace import merkle
from assay.trace.checkpoint import (
    EM_DASH,
    Checkpoint,
    SignatureError,
    Verifier,
    _check_name,
    _key_id,
    parse_tree_size,
    parse_vkey,
)
from assay.trace.state import write_atomic

ALG_COSIGNATURE_V1 = b"\x04"
HEADER = "cosignature/v1"
MAX_PROOF_LINES = 63
MAX_REQUEST_BYTES = 64 * 1024
MAX_SIGNATURES = 64
# what `assay trace cosign` reads of a witness's answer (a few cosignature lines, or a size)
MAX_ANSWER_BYTES = 64 * 1024
SIZE_CONTENT_TYPE = "text/x.tlog.size"


def cosignature_message(body: str, timestamp: int) -> bytes:
    """What a cosigner signs: the header line, the timestamp line, then the note body."""
    return f"{HEADER}\ntime {timestamp}\n".encode() + body.encode()


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness's public key, as a verifier holds it."""

    name: str
    public_key: bytes  # raw 32 bytes

    @property
    def key_id(self) -> bytes:
        return _key_id(self.name, self.public_key, ALG_COSIGNATURE_V1)

    def vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(ALG_COSIGNATURE_V1 + self.public_key).decode()}"

    @classmethod
    def parse(cls, vkey: str) -> CosignatureVerifier:
        return cls(*parse_vkey(vkey, ALG_COSIGNATURE_V1, "witness key"))

    def verify(self, body: str, blob: bytes) -> int:
        """Check one cosignature (the decoded blob of its line) over a note body; returns its
        timestamp. Raises ``SignatureError``."""
        if len(blob) != 4 + 8 + 64 or blob[:4] != self.key_id:
            raise SignatureError(f"cosignature by {self.name}: not a cosignature/v1 signature of this key")
        timestamp = int.from_bytes(blob[4:12], "big")
        if timestamp >= 1 << 63:
            raise SignatureError(f"cosignature by {self.name}: timestamp {timestamp} is out of range")
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(blob[12:], cosignature_message(body, timestamp))
        except InvalidSignature as e:
            raise SignatureError(f"cosignature by {self.name} does not verify (the checkpoint or the line was altered)") from e
        return timestamp


class Cosigner:
    def __init__(self, name: str, private_key: Ed25519PrivateKey):
        _check_name(name)
        self.name = name
        self._key = private_key
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.verifier = CosignatureVerifier(name, raw)

    def cosign(self, body: str, timestamp: int | None = None) -> str:
        """The cosignature line (with its newline) over a checkpoint's note body."""
        timestamp = int(time.time()) if timestamp is None else timestamp
        signature = self._key.sign(cosignature_message(body, timestamp))
        blob = self.verifier.key_id + timestamp.to_bytes(8, "big") + signature
        return f"{EM_DASH} {self.name} {base64.b64encode(blob).decode()}\n"


def split_note(text: str, where: str = "note") -> tuple[str, list[tuple[str, bytes]]]:
    """A signed note's body (with its final newline) and its signature lines as (name, blob),
    per C2SP signed-note: UTF-8 without control characters other than newline, the body ends at
    the last blank line, each signature line is an em dash, a space, the key name, a space and
    base64. Raises ``SignatureError`` on a malformed note."""
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise SignatureError(f"{where}: a signed note must not hold control characters")
    if "\n\n" not in text or not text.endswith("\n"):
        raise SignatureError(f"{where}: not a signed note (no blank line before the signatures)")
    body, _, sigs = text.rpartition("\n\n")
    lines = sigs[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise SignatureError(f"{where}: more than {MAX_SIGNATURES} signatures")
    return body + "\n", [_signature_line(line, where) for line in lines]


def _signature_line(line: str, where: str) -> tuple[str, bytes]:
    if not line.startswith(EM_DASH + " "):
        raise SignatureError(f"{where}: malformed signature line {line[:40]!r}")
    parts = line[2:].split(" ")
    if len(parts) != 2 or not parts[0] or "+" in parts[0]:
        raise SignatureError(f"{where}: malformed signature line {line[:40]!r}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError as e:
        raise SignatureError(f"{where}: malformed signature line {line[:40]!r}") from e
    if len(blob) < 4:
        raise SignatureError(f"{where}: malformed signature line {line[:40]!r}")
    return parts[0], blob


def count_cosignatures(body: str, lines: str, witnesses: list[CosignatureVerifier] | tuple, where: str = "checkpoint"
                       ) -> tuple[list[tuple[str, int]], list[str]]:
    """The valid cosignatures over ``body`` among ``lines`` (signature lines, one a line), one per
    distinct witness key given: ``[(witness name, timestamp)]``, and the problems: a line that
    names a given witness (name and key id) but does not verify. Lines of other keys are
    ignored, as signed-note requires."""
    valid: dict[bytes, tuple[str, int]] = {}
    problems: list[str] = []
    for line in lines.splitlines():
        if not line.strip():
            continue
        try:
            name, blob = _signature_line(line, where)
        except SignatureError as e:
            problems.append(str(e))
            continue
        for witness in witnesses:
            if name == witness.name and blob[:4] == witness.key_id:
                try:
                    valid[witness.public_key] = (witness.name, witness.verify(body, blob))
                except SignatureError as e:
                    problems.append(f"{where}: {e}")
    return list(valid.values()), problems


# ---------------------------------------------------------------- the witness


@dataclass
class Answer:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


class Witness:
    """A witness's key and state in a folder: ``witness.key`` (Ed25519, PEM, mode 0600),
    ``witness.json`` (its name and the logs it follows: origin -> log verifier keys) and
    ``state/<sha256(origin)>.checkpoint`` (per log, the newest checkpoint it cosigned, with the
    log's signature and its own cosignature)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        try:
            config = json.loads((self.folder / "witness.json").read_text())
            key = serialization.load_pem_private_key((self.folder / "witness.key").read_bytes(), password=None)
        except FileNotFoundError as e:
            raise BadInput(f"{folder} holds no witness (`assay trace witness init` makes one): {e.filename} is missing") from e
        except (ValueError, UnicodeDecodeError) as e:
            raise BadInput(f"{folder}: the witness key or witness.json is not readable ({e})") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise BadInput(f"{folder}/witness.key: a witness key must be Ed25519")
        self.cosigner = Cosigner(config["name"], key)
        self.logs: dict[str, list[Verifier]] = {origin: [Verifier.parse(v) for v in keys]
                                                for origin, keys in config.get("logs", {}).items()}
        self._lock = threading.Lock()

    @classmethod
    def init(cls, folder: Path, name: str) -> Witness:
        _check_name(name)
        folder = Path(folder)
        if (folder / "witness.key").exists():
            raise BadInput(f"{folder} already holds a witness key; refusing to replace it")
        folder.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd = os.open(folder / "witness.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        write_atomic(folder / "witness.json", json.dumps({"name": name, "logs": {}}, indent=2).encode())
        return cls(folder)

    @property
    def verifier(self) -> CosignatureVerifier:
        return self.cosigner.verifier

    def add_log(self, vkey: str, origin: str | None = None) -> str:
        """Follow a log: checkpoints of ``origin`` (default: the key's name, which is the origin
        for assay logs) signed by ``vkey`` will be cosigned."""
        verifier = Verifier.parse(vkey)
        origin = origin or verifier.name
        with self._lock:
            config = json.loads((self.folder / "witness.json").read_text())
            keys = config.setdefault("logs", {}).setdefault(origin, [])
            if verifier.vkey() not in keys:
                keys.append(verifier.vkey())
            write_atomic(self.folder / "witness.json", json.dumps(config, indent=2).encode())
            self.logs.setdefault(origin, [])
            if verifier not in self.logs[origin]:
                self.logs[origin].append(verifier)
        return origin

    def _state_path(self, origin: str) -> Path:
        return self.folder / "state" / f"{hashlib.sha256(origin.encode()).hexdigest()}.checkpoint"

    def latest(self, origin: str) -> tuple[Checkpoint, str] | None:
        """The newest checkpoint this witness cosigned for ``origin`` and its stored text."""
        try:
            text = self._state_path(origin).read_text()
        except FileNotFoundError:
            return None
        body, _ = split_note(text, f"witness state for {origin}")
        return Checkpoint.parse_body(body, f"witness state for {origin}"), text

    def add_checkpoint(self, request: bytes) -> Answer:
        """Handle one ``add-checkpoint`` request body (tlog-witness), all checks included."""
        try:
            old, proof, note = parse_request(request)
            body, _ = split_note(note, "checkpoint")
            checkpoint = Checkpoint.parse_body(body, "checkpoint")
        except (SignatureError, BadInput) as e:
            return Answer(400, f"{e}\n")
        trusted = self.logs.get(checkpoint.origin)
        if not trusted:
            return Answer(404, f"unknown log origin {checkpoint.origin!r}\n")
        if not _signed_by_any(note, trusted):
            return Answer(403, "the checkpoint carries no valid signature by a key trusted for its origin\n")
        if old > checkpoint.size:
            return Answer(400, f"old size {old} is larger than the checkpoint's size {checkpoint.size}\n")
        with self._lock, _file_lock(self.folder / ".lock"):
            known = self.latest(checkpoint.origin)
            known_size, known_root = (known[0].size, known[0].root) if known else (0, merkle.EMPTY_ROOT)
            if old != known_size:
                return Answer(409, f"{known_size}\n", SIZE_CONTENT_TYPE)
            if checkpoint.size == 0 and checkpoint.root != merkle.EMPTY_ROOT:
                return Answer(422, "a checkpoint of size 0 must carry the empty tree's root\n")
            if old == 0 and proof:
                return Answer(422, "from size 0 the consistency proof must be empty\n")
            if old == checkpoint.size and checkpoint.root != known_root:
                return Answer(422, f"the checkpoint of size {old} has another root than the one cosigned before\n")
            if 0 < old < checkpoint.size:
                try:
                    merkle.verify_consistency(old, checkpoint.size, proof, known_root, checkpoint.root)
                except merkle.ProofError as e:
                    return Answer(422, f"the consistency proof from size {old} does not verify: {e}\n")
            line = self.cosigner.cosign(body)
            path = self._state_path(checkpoint.origin)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, (note + line).encode())  # persisted before the answer, as the spec requires
        return Answer(200, line)

    def checkpoint_for(self, origin_hash: str) -> Answer:
        """``GET <prefix>/<origin hash>/checkpoint``."""
        if len(origin_hash) != 64 or any(c not in "0123456789abcdef" for c in origin_hash):
            return Answer(404, "not a lowercase hex SHA-256 of an origin\n")
        try:
            return Answer(200, (self.folder / "state" / f"{origin_hash}.checkpoint").read_text())
        except FileNotFoundError:
            return Answer(404, "this witness has cosigned no checkpoint of that log\n")


def parse_request(request: bytes) -> tuple[int, list[bytes], str]:
    """An add-checkpoint body: (old size, consistency proof, the checkpoint note). BadInput when malformed."""
    if len(request) > MAX_REQUEST_BYTES:
        raise BadInput(f"request of {len(request)} bytes is larger than {MAX_REQUEST_BYTES}")
    try:
        text = request.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput("the request is not UTF-8") from e
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise BadInput("the request has no empty line before the checkpoint")
    lines = head.split("\n")
    first = lines[0]
    old = parse_tree_size(first[4:]) if first.startswith("old ") else None
    if old is None:
        raise BadInput(f"the first line must be 'old <size>' in decimal without leading zeroes, below 2^64, got {first[:40]!r}")
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise BadInput(f"{len(proof_lines)} consistency proof lines; at most {MAX_PROOF_LINES}")
    proof = []
    for line in proof_lines:
        try:
            value = base64.b64decode(line, validate=True)
        except ValueError as e:
            raise BadInput(f"proof line {line[:50]!r} is not base64") from e
        if len(value) != 32:
            raise BadInput(f"proof line {line[:50]!r} is not a 32-byte hash")
        proof.append(value)
    return old, proof, note


def _signed_by_any(note: str, trusted: list[Verifier]) -> bool:
    """A valid signature by one of the trusted keys (matched by name and key id, as signed-note
    says); a matching line whose signature fails rejects the whole note."""
    body, signatures = split_note(note, "checkpoint")
    ok = False
    for name, blob in signatures:
        for verifier in trusted:
            if name == verifier.name and blob[:4] == verifier.key_id:
                try:
                    Ed25519PublicKey.from_public_bytes(verifier.public_key).verify(blob[4:], body.encode())
                except InvalidSignature:
                    return False
                ok = True
    return ok


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------- the HTTP service


def create_app(witness: Witness, prefix: str = "", body_timeout_s: float | None = None):
    """The witness's HTTP interface (tlog-witness): add-checkpoint and the monitoring GET, as a
    Starlette app (FastAPI's base: two plain-text routes need no request models). A body that does
    not arrive within ``body_timeout_s`` (``ASSAY_BODY_TIMEOUT_S``, 30 s, when None) is a 408."""
    import anyio
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    prefix = prefix.rstrip("/")

    def reply(answer: Answer) -> PlainTextResponse:
        return PlainTextResponse(answer.body, status_code=answer.status, media_type=answer.content_type)

    async def add_checkpoint(request) -> PlainTextResponse:
        declared = request.headers.get("content-length")
        if declared is not None and (not (declared.isascii() and declared.isdigit()) or len(declared) > 12
                                     or int(declared) > MAX_REQUEST_BYTES):
            return reply(Answer(400, f"request body larger than {MAX_REQUEST_BYTES} bytes\n"))
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_REQUEST_BYTES:
                return reply(Answer(400, f"request body larger than {MAX_REQUEST_BYTES} bytes\n"))
        return reply(await anyio.to_thread.run_sync(witness.add_checkpoint, body))  # fsync off the event loop

    async def checkpoint(request) -> PlainTextResponse:
        return reply(witness.checkpoint_for(request.path_params["origin_hash"]))

    return Starlette(routes=[Route(f"{prefix}/add-checkpoint", add_checkpoint, methods=["POST"]),
                             Route(f"{prefix}/{{origin_hash}}/checkpoint", checkpoint, methods=["GET"])],
                     middleware=[Middleware(BodyDeadline, timeout_s=body_timeout_s, refuse=text_refusal)])


def serve(witness: Witness, host: str = "127.0.0.1", port: int = 0, prefix: str = "", announce=print) -> None:
    """Run the witness until interrupted. ``port`` 0 picks a free port; the first line printed
    says where it listens (``witness NAME listening on http://HOST:PORT``)."""
    import socket

    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        raise Unavailable(f"cannot listen on {host}:{port}: {e}") from e
    sock.listen(128)
    bound = sock.getsockname()[1]
    announce(f"witness {witness.cosigner.name} listening on http://{host}:{bound}{prefix} (key {witness.verifier.vkey()})")
    server = uvicorn.Server(uvicorn.Config(create_app(witness, prefix), log_level="warning", access_log=False))
    server.run(sockets=[sock])


# ---------------------------------------------------------------- the log's side


class WitnessAnswerError(Exception):
    """A witness's answer that the log will not read to the end: too large, or too slow."""


def add_checkpoint_request(old_size: int, proof: list[bytes], note: str) -> bytes:
    return (f"old {old_size}\n" + "".join(base64.b64encode(p).decode() + "\n" for p in proof) + "\n" + note).encode()


def collect(log: Any, urls: list[str], keys: list[CosignatureVerifier], timeout: float = 10.0,
            post: Any = None) -> list[dict[str, Any]]:
    """Ask each witness to cosign the log's newest checkpoint (with a consistency proof from the
    size it last cosigned, learned from a 409 when not known) and store the cosignatures that
    verify with ``keys`` beside the checkpoint. Returns one result per witness. ``post(url,
    body) -> Answer`` replaces HTTP (a witness in the same process: the benchmark)."""
    import httpx

    if not keys:
        raise BadInput("give the witnesses' keys (--witness-key): cosignatures from unknown keys are ignored")
    found = log.latest_checkpoint()
    if found is None:
        raise BadInput("the log has no checkpoint to cosign yet")
    checkpoint, note = found
    body, _ = split_note(note, "checkpoint")
    known = log.witness_sizes()
    results = []
    with httpx.Client(timeout=timeout) if post is None else contextlib.nullcontext() as client:
        if post is None:
            def post(url: str, request: bytes) -> Answer:
                # read at most MAX_ANSWER_BYTES within about `timeout` (each read waits at most
                # `timeout` too): a witness answering without end, or a byte at a time, gets no more
                with client.stream("POST", url.rstrip("/") + "/add-checkpoint", content=request,
                                   headers={"content-type": "text/plain"}) as response:
                    deadline = time.monotonic() + timeout
                    answer = bytearray()
                    for chunk in response.iter_bytes():
                        answer += chunk
                        if len(answer) > MAX_ANSWER_BYTES:
                            raise WitnessAnswerError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
                        if time.monotonic() > deadline:
                            raise WitnessAnswerError(f"the answer did not arrive within {timeout:g} s")
                    return Answer(response.status_code, answer.decode("utf-8", "replace"),
                                  response.headers.get("content-type", ""))

        for url in urls:
            old = known.get(url, 0)
            result: dict[str, Any] = {"witness": url, "size": checkpoint.size}
            for _attempt in range(2):
                proof = _proof_from(log, old, checkpoint.size)
                try:
                    response = post(url, add_checkpoint_request(old, proof, note))
                except httpx.HTTPError as e:
                    result["error"] = f"unreachable: {e}"
                    break
                except WitnessAnswerError as e:
                    result["error"] = str(e)
                    break
                if response.status == 409 and response.content_type.startswith(SIZE_CONTENT_TYPE):
                    text = response.body.strip()
                    known_size = parse_tree_size(text)
                    if known_size is None:
                        result["error"] = f"409 with a malformed size {text[:30]!r}"
                        break
                    old = known_size
                    if old > checkpoint.size or (old and old not in log.checkpoint_sizes()):
                        result["error"] = (f"the witness has cosigned size {old}, which this log has no checkpoint of "
                                           f"(a rollback or a fork: investigate before going on)")
                        break
                    continue
                if response.status != 200:
                    result["error"] = f"HTTP {response.status}: {response.body.strip()[:200]}"
                    break
                valid_lines = []
                for line in response.body.splitlines():
                    got, problems = count_cosignatures(body, line, keys, where=f"witness {url}")
                    if got:
                        valid_lines.append(line)
                    elif problems:
                        result.setdefault("problems", []).extend(problems)
                if not valid_lines:
                    result["error"] = "the answer holds no cosignature that verifies with the witness keys given"
                    break
                log.add_cosignatures(checkpoint.size, valid_lines)
                log.remember_witness_size(url, checkpoint.size)
                result["cosigned"] = True
                break
            else:
                result["error"] = "the witness kept answering 409"
            results.append(result)
    return results


def _proof_from(log: Any, old: int, new: int) -> list[bytes]:
    if old == 0 or old == new:
        return []
    return [bytes.fromhex(h) for h in log.prove_consistency(old, new)["proof"]]


def load_witness_keys(values: list[str]) -> list[CosignatureVerifier]:
    """Witness keys from the command line: vkey strings or files holding one a line."""
    out: list[CosignatureVerifier] = []
    for value in values:
        path = Path(value)
        try:
            is_file = path.is_file()
        except OSError:  # not a possible file name (too long): the key itself
            is_file = False
        if is_file:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise BadInput(f"{value}: not a readable text file of witness keys ({e})") from e
            out.extend(CosignatureVerifier.parse(line) for line in text.splitlines() if line.strip())
        else:
            out.append(CosignatureVerifier.parse(value))
    if len({v.public_key for v in out}) != len(out):
        raise BadInput("the same witness key was given twice: a quorum counts distinct witnesses")
    return out

