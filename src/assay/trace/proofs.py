"""Check proofs printed by ``assay trace prove`` with nothing but the log's public key.

A third party needs no access to the log: the inclusion bundle carries the record's RFC 8785
JSON, its hash, the audit path and the signed checkpoint; the key is supplied separately (never
trust the ``verifier_key`` inside a bundle — it is there for convenience only).
"""

from __future__ import annotations

import hashlib
from typing import Any

from assay.errors import BadInput
from assay.trace import merkle
from assay.trace.checkpoint import Checkpoint, Verifier


def _hashes(values: list[str], what: str) -> list[bytes]:
    try:
        return [bytes.fromhex(v) for v in values]
    except (TypeError, ValueError) as e:
        raise BadInput(f"{what} must be a list of hex strings") from e


def check_inclusion(bundle: dict[str, Any], verifier: Verifier) -> Checkpoint:
    """Raise ``ProofError``/``SignatureError`` unless the bundle proves its record is in the log."""
    if bundle.get("kind") != "assay.trace.inclusion/v1":
        raise BadInput(f"not an inclusion proof bundle (kind {bundle.get('kind')!r})")
    checkpoint = Checkpoint.open(bundle["checkpoint"], verifier, where="proof checkpoint")
    if checkpoint.size != bundle["tree_size"]:
        raise merkle.ProofError(f"the proof is for tree size {bundle['tree_size']} but the checkpoint is of size {checkpoint.size}")
    record_hash = bytes.fromhex(bundle["record_hash"])
    if "record_json" in bundle and hashlib.sha256(bundle["record_json"].encode()).digest() != record_hash:
        raise merkle.ProofError("the record JSON does not hash to the record hash in the proof")
    merkle.verify_inclusion(bundle["index"], checkpoint.size, merkle.leaf_hash(record_hash),
                            _hashes(bundle["proof"], "proof"), checkpoint.root)
    return checkpoint


def check_consistency(bundle: dict[str, Any], verifier: Verifier) -> tuple[Checkpoint, Checkpoint]:
    if bundle.get("kind") != "assay.trace.consistency/v1":
        raise BadInput(f"not a consistency proof bundle (kind {bundle.get('kind')!r})")
    old = Checkpoint.open(bundle["old_checkpoint"], verifier, where="old checkpoint")
    new = Checkpoint.open(bundle["new_checkpoint"], verifier, where="new checkpoint")
    if old.origin != new.origin:
        raise merkle.ProofError(f"the checkpoints are from different logs ({old.origin!r}, {new.origin!r})")
    merkle.verify_consistency(old.size, new.size, _hashes(bundle["proof"], "proof"), old.root, new.root)
    return old, new


def check_bundle(bundle: dict[str, Any], verifier: Verifier) -> str:
    """Check either kind of bundle; return a one-line summary."""
    if bundle.get("kind") == "assay.trace.consistency/v1":
        old, new = check_consistency(bundle, verifier)
        return f"consistent: the log of size {old.size} is a prefix of the log of size {new.size} ({new.origin})"
    checkpoint = check_inclusion(bundle, verifier)
    return f"included: record {bundle['index']} is in the log of size {checkpoint.size} ({checkpoint.origin})"
