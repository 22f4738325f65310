"""Signed checkpoints in the C2SP ``tlog-checkpoint`` format, signed as a C2SP ``signed-note``.

    <origin>\\n<tree size>\\n<base64 root hash>\\n[time <RFC 3339 UTC>\\n]
    \\n
    — <key name> <base64(key id[4] ‖ Ed25519 signature[64])>\\n

The key id is the first 4 bytes of SHA-256(key name ‖ "\\n" ‖ 0x01 ‖ public key) and the verifier
key is written ``<name>+<hex key id>+<base64(0x01 ‖ public key)>``, so existing transparency-log
tooling (Go ``golang.org/x/mod/sumdb/note``, ``transparency-dev/formats/log``) can read and check
them. Written by hand because the format is four lines; Ed25519 comes from ``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from assay.errors import AssayError, BadInput

ALG_ED25519 = b"\x01"
EM_DASH = "\u2014"


class SignatureError(AssayError):
    """A checkpoint's signature or format is wrong (tampering or the wrong key)."""


def _key_id(name: str, public_raw: bytes, alg: bytes = ALG_ED25519) -> bytes:
    """C2SP signed-note key id: SHA-256(name || 0x0A || signature type || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + alg + public_raw).digest()[:4]


def parse_vkey(vkey: str, alg: bytes, what: str) -> tuple[str, bytes]:
    """``name+<hex key id>+base64(type || Ed25519 public key)``: the name and the raw key, with the
    type byte and the key id checked (signed-note verifier keys; ``what`` names it in errors)."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3 or not parts[0]:
        raise BadInput(f"{what} must be name+keyid+key, got {vkey.strip()[:60]!r}")
    name, key_id_hex, key_b64 = parts
    try:
        raw = base64.b64decode(key_b64, validate=True)
        key_id = bytes.fromhex(key_id_hex)
    except ValueError as e:
        raise BadInput(f"{what} {name!r} is not valid base64/hex: {e}") from e
    if len(raw) != 33 or raw[:1] != alg:
        raise BadInput(f"{what} {name!r} is not an Ed25519 key of type 0x{alg.hex()} (type byte 0x{alg.hex()} + 32 bytes)")
    if _key_id(name, raw[1:], alg) != key_id:
        raise BadInput(f"{what} {name!r}: key id {key_id_hex} does not match the key")
    return name, raw[1:]


MAX_TREE_SIZE = (1 << 64) - 1  # tlog sizes are uint64 (C2SP tlog-checkpoint, tlog-witness)


def parse_tree_size(text: str) -> int | None:
    """A tree size as the C2SP specs write it: ASCII decimal without leading zeroes, at most
    2^64-1; None otherwise. ``str.isdigit`` alone is not enough: it accepts superscripts (which
    ``int`` then refuses) and other scripts' digits, and ``int`` refuses over 4,300 digits."""
    if not (0 < len(text) <= 20 and text.isascii() and text.isdigit()) or (text != "0" and text.startswith("0")):
        return None
    size = int(text)
    return size if size <= MAX_TREE_SIZE else None


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise BadInput(f"checkpoint key name {name!r} must be non-empty, without spaces or '+'")


@dataclass(frozen=True)
class Verifier:
    name: str
    public_key: bytes  # raw 32 bytes

    @property
    def key_id(self) -> bytes:
        return _key_id(self.name, self.public_key)

    def vkey(self) -> str:
        """The C2SP verifier key string."""
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(ALG_ED25519 + self.public_key).decode()}"

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        return cls(*parse_vkey(vkey, ALG_ED25519, "verifier key"))

    def verify_note(self, text: str, where: str = "checkpoint") -> str:
        """Check the note's signature by this key; return the signed body. Raise SignatureError."""
        if "\n\n" not in text:
            raise SignatureError(f"{where}: not a signed note (no blank line before the signatures)")
        body, _, sigs = text.rpartition("\n\n")
        body += "\n"
        found = False
        for line in sigs.splitlines():
            if not line.startswith(EM_DASH + " "):
                raise SignatureError(f"{where}: malformed signature line {line[:40]!r}")
            try:
                name, sig_b64 = line[2:].split(" ")
                blob = base64.b64decode(sig_b64, validate=True)
            except ValueError as e:
                raise SignatureError(f"{where}: malformed signature line {line[:40]!r}") from e
            if name != self.name or blob[:4] != self.key_id:
                continue
            found = True
            try:
                Ed25519PublicKey.from_public_bytes(self.public_key).verify(blob[4:], body.encode())
            except InvalidSignature as e:
                raise SignatureError(f"{where}: signature by {self.name} does not verify (the note was altered or forged)") from e
        if not found:
            raise SignatureError(f"{where}: no signature by the trusted key {self.name} ({self.key_id.hex()})")
        return body


class Signer:
    def __init__(self, name: str, private_key: Ed25519PrivateKey):
        _check_name(name)
        self.name = name
        self._key = private_key
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.verifier = Verifier(name, raw)

    def sign_note(self, body: str) -> str:
        if not body.endswith("\n"):
            raise ValueError("note body must end with a newline")
        signature = self._key.sign(body.encode())
        blob = base64.b64encode(self.verifier.key_id + signature).decode()
        return f"{body}\n{EM_DASH} {self.name} {blob}\n"

    @classmethod
    def load_or_create(cls, path: Path, name: str) -> Signer:
        """The log's signing key (PEM, PKCS#8, mode 0600), created on first use."""
        if path.exists():
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except ValueError as e:
                raise BadInput(f"{path}: not a PEM private key: {e}") from e
            if not isinstance(key, Ed25519PrivateKey):
                raise BadInput(f"{path}: the trace signing key must be Ed25519")
            return cls(name, key)
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return cls(name, key)


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time: float | None = None

    def body(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        if self.time is not None:
            stamp = datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            lines.append(f"time {stamp}")
        return "\n".join(lines) + "\n"

    def sign(self, signer: Signer) -> str:
        return signer.sign_note(self.body())

    @classmethod
    def parse_body(cls, body: str, where: str = "checkpoint") -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise SignatureError(f"{where}: a checkpoint body needs origin, size and root hash lines")
        origin, size_text, root_b64, *extra = lines[:-1]
        size = parse_tree_size(size_text)
        if size is None:
            raise SignatureError(f"{where}: tree size {size_text[:40]!r} is not a decimal number below 2^64")
        try:
            root = base64.b64decode(root_b64, validate=True)
        except ValueError as e:
            raise SignatureError(f"{where}: root hash is not base64") from e
        if len(root) != 32:
            raise SignatureError(f"{where}: root hash has {len(root)} bytes, expected 32")
        stamp = None
        for line in extra:
            if line.startswith("time "):
                try:
                    stamp = datetime.strptime(line[5:], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
                except ValueError as e:
                    raise SignatureError(f"{where}: bad time line {line!r}") from e
        return cls(origin, size, root, stamp)

    @classmethod
    def open(cls, text: str, verifier: Verifier, origin: str | None = None, where: str = "checkpoint") -> Checkpoint:
        """Verify a signed checkpoint note and parse it."""
        body = verifier.verify_note(text, where)
        checkpoint = cls.parse_body(body, where)
        if origin is not None and checkpoint.origin != origin:
            raise SignatureError(f"{where}: origin {checkpoint.origin!r} is not this log's origin {origin!r}")
        return checkpoint


def now() -> float:
    return time.time()
