"""Subject ids are pseudonymised with HMAC-SHA-256 under a key that lives outside the log.

The key comes from ``ASSAY_PSEUDONYM_KEY`` (hex, at least 16 bytes) or the file
``ASSAY_HOME/keys/pseudonym.key`` (created with 32 random bytes on first use, mode 0600). The log
only ever holds ``HMAC(key, subject_id)`` truncated to 128 bits (32 hex characters): with the key
an operator can find a person's records (``why``, ``erase``); without it the log does not say who
anyone is. A batch is pseudonymised per distinct subject (a request has one subject and many
candidates), then spread back with a take.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assay.config import settings
from assay.errors import BadInput

ENV = "ASSAY_PSEUDONYM_KEY"


def key_path() -> Path:
    return settings().home / "keys" / "pseudonym.key"


def load_key(path: Path | None = None) -> bytes:
    value = os.environ.get(ENV)
    if value:
        try:
            key = bytes.fromhex(value.strip())
        except ValueError as e:
            raise BadInput(f"{ENV} must be hex") from e
        if len(key) < 16:
            raise BadInput(f"{ENV} must hold at least 16 bytes (32 hex characters)")
        return key
    path = path or key_path()
    if path.exists():
        key = bytes.fromhex(path.read_text().strip())
        if len(key) < 16:
            raise BadInput(f"{path}: pseudonym key is shorter than 16 bytes")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return key


def load_key_available(path: Path | None = None) -> bool:
    """Whether a pseudonym key exists (a reader must not create one)."""
    return bool(os.environ.get(ENV)) or (path or key_path()).exists()


class Pseudonymiser:
    def __init__(self, key: bytes | None):
        self._key = key

    def one(self, subject_id: str) -> str:
        if self._key is None:
            raise BadInput(f"no pseudonym key: subjects cannot be looked up without {key_path()} or {ENV}")
        return hmac.new(self._key, subject_id.encode(), hashlib.sha256).hexdigest()[:32]

    def column(self, subjects: pa.Array) -> pa.DictionaryArray:
        """Pseudonyms of a column of subject ids, dictionary-encoded (each distinct subject is
        keyed once; segments store the column in this form)."""
        encoded = pc.dictionary_encode(subjects)
        return pa.DictionaryArray.from_arrays(encoded.indices, self._many(encoded.dictionary))

    def _many(self, subjects: pa.Array) -> pa.Array:
        """``one`` of each value, in one native call (the same bytes as ``hmac.new``, the oracle
        in tests/trace/test_trace_native.py, which costs ~2 us a subject in Python)."""
        from assay.trace import hashing

        if self._key is None or not len(subjects):
            return pa.array([self.one(s) for s in subjects.to_pylist()], pa.string())
        _, offsets, data = subjects.buffers()
        n = len(subjects)
        digests = hashing._native.hmac_rows(self._key, offsets, data if data is not None else b"", subjects.offset, n)
        text = np.frombuffer(digests, np.uint8).reshape(n, 32)[:, :16].tobytes().hex().encode()  # 128 bits in hex
        offsets = np.arange(0, 32 * n + 1, 32, dtype=np.int32)
        return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])
