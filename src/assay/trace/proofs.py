"""Check proofs printed by ``assay trace prove`` with nothing but the log's public key.

A third party needs no access to the log: the inclusion bundle carries the record's RFC 8785
JSON, its hash, the audit path and the signed checkpoint; the key is supplied separately (never
trust the ``verifier_key`` inside a bundle — it is there for convenience only).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from assay.errors import BadInput
from assay.trace import merkle
from assay.trace.checkpoint import Checkpoint, Verifier

if TYPE_CHECKING:
    from assay.trace.witness import CosignatureVerifier


def _hashes(values: Any, what: str) -> list[bytes]:
    if not isinstance(values, list):
        raise BadInput(f"{what} must be a list of hex strings")
    return [_hash(v, f"{what} item {i}") for i, v in enumerate(values)]


def _hash(value: Any, what: str) -> bytes:
    """A 32-byte hash written as 64 hex digits."""
    if not isinstance(value, str) or len(value) != 64:
        raise BadInput(f"{what} must be 64 hex digits (a SHA-256), got {str(value)[:70]!r}")
    try:
        return bytes.fromhex(value)
    except ValueError as e:
        raise BadInput(f"{what} must be 64 hex digits (a SHA-256), got {value[:70]!r}") from e


def _field(bundle: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in bundle:
        raise BadInput(f"the proof bundle has no {name!r}")
    value = bundle[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadInput(f"the proof bundle's {name!r} must be {names}, got {type(value).__name__}")
    if isinstance(value, int) and value < 0:
        raise BadInput(f"the proof bundle's {name!r} must not be negative")
    return value


def check_inclusion(bundle: dict[str, Any], verifier: Verifier) -> Checkpoint:
    """Raise ``ProofError``/``SignatureError`` unless the bundle proves its record is in the log."""
    if bundle.get("kind") != "assay.trace.inclusion/v1":
        raise BadInput(f"not an inclusion proof bundle (kind {bundle.get('kind')!r})")
    index, tree_size = _field(bundle, "index", int), _field(bundle, "tree_size", int)
    record_hash = _hash(_field(bundle, "record_hash", str), "the proof bundle's 'record_hash'")
    proof = _hashes(_field(bundle, "proof", list), "the proof bundle's 'proof'")
    record_json = _field(bundle, "record_json", str) if "record_json" in bundle else None
    checkpoint = Checkpoint.open(_field(bundle, "checkpoint", str), verifier, where="proof checkpoint")
    if checkpoint.size != tree_size:
        raise merkle.ProofError(f"the proof is for tree size {tree_size} but the checkpoint is of size {checkpoint.size}")
    if record_json is not None and hashlib.sha256(record_json.encode("utf-8", "surrogatepass")).digest() != record_hash:
        raise merkle.ProofError("the record JSON does not hash to the record hash in the proof")
    merkle.verify_inclusion(index, checkpoint.size, merkle.leaf_hash(record_hash), proof, checkpoint.root)
    return checkpoint


def check_consistency(bundle: dict[str, Any], verifier: Verifier) -> tuple[Checkpoint, Checkpoint]:
    if bundle.get("kind") != "assay.trace.consistency/v1":
        raise BadInput(f"not a consistency proof bundle (kind {bundle.get('kind')!r})")
    proof = _hashes(_field(bundle, "proof", list), "the proof bundle's 'proof'")
    old = Checkpoint.open(_field(bundle, "old_checkpoint", str), verifier, where="old checkpoint")
    new = Checkpoint.open(_field(bundle, "new_checkpoint", str), verifier, where="new checkpoint")
    if old.origin != new.origin:
        raise merkle.ProofError(f"the checkpoints are from different logs ({old.origin!r}, {new.origin!r})")
    merkle.verify_consistency(old.size, new.size, proof, old.root, new.root)
    return old, new


def check_bundle(bundle: Any, verifier: Verifier, witnesses: Sequence[CosignatureVerifier] = (),
                 quorum: int | None = None) -> str:
    """Check either kind of bundle; return a one-line summary. With ``witnesses``, the (newer)
    checkpoint must also carry ``quorum`` (default: all) valid cosignatures from them."""
    if not isinstance(bundle, dict):
        raise BadInput(f"a proof bundle is a JSON object, got {type(bundle).__name__}")
    if bundle.get("kind") == "assay.trace.consistency/v1":
        old, new = check_consistency(bundle, verifier)
        summary = f"consistent: the log of size {old.size} is a prefix of the log of size {new.size} ({new.origin})"
        note = bundle["new_checkpoint"]
    else:
        checkpoint = check_inclusion(bundle, verifier)
        summary = f"included: record {bundle['index']} is in the log of size {checkpoint.size} ({checkpoint.origin})"
        note = bundle["checkpoint"]
    if witnesses:
        summary += "; " + _check_quorum(note, witnesses, quorum)
    elif quorum is not None:
        raise BadInput("a quorum needs witness keys (--witness)")
    return summary


def _check_quorum(note: str, witnesses: Sequence[CosignatureVerifier], quorum: int | None) -> str:
    from assay.trace.checkpoint import SignatureError
    from assay.trace.witness import count_cosignatures, split_note

    quorum = len(witnesses) if quorum is None else quorum
    if not 1 <= quorum <= len(witnesses):
        raise BadInput(f"the quorum must be between 1 and the {len(witnesses)} witness keys given, got {quorum}")
    body, signatures = split_note(note, "proof checkpoint")
    lines = "\n".join(f"\u2014 {name} {base64.b64encode(blob).decode()}" for name, blob in signatures)
    valid, problems = count_cosignatures(body, lines, witnesses, where="proof checkpoint")
    if problems:
        raise SignatureError("; ".join(problems))
    if len(valid) < quorum:
        raise merkle.ProofError(f"the checkpoint carries {len(valid)} valid cosignatures of the witnesses given; "
                                f"the quorum is {quorum}")
    return f"witnessed by {', '.join(name for name, _ in valid)}"
