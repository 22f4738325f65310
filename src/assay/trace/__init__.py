"""The decision trace: an append-only, Merkle-hashed, checkpoint-signed, queryable log.

    from assay.trace import TraceLog
    log = TraceLog.open()                      # ASSAY_HOME/trace, or any fsspec URL
    log.append([decision, ...])                # durable when it returns
    log.verify().raise_if_failed()
    log.why(item_id, subject_id, at=None)

Names are imported lazily so that ``assay.trace.cli`` (and ``assay --help``) stay cheap.
"""

from __future__ import annotations

from assay import lazy_exports

_EXPORTS = {
    "AppendResult": "assay.trace.log",
    "TamperError": "assay.trace.log",
    "TraceLog": "assay.trace.log",
    "VerifyReport": "assay.trace.log",
    "Checkpoint": "assay.trace.checkpoint",
    "SignatureError": "assay.trace.checkpoint",
    "Verifier": "assay.trace.checkpoint",
    "ProofError": "assay.trace.merkle",
    "guard_span": "assay.trace.telemetry",
}

# `assay trace verify`: the signed log verifies, but records (or a torn batch) follow its newest
# checkpoint, never acknowledged (a crashed writer not yet reopened, or one between checkpoints).
EXIT_UNACKNOWLEDGED = 4

__all__ = sorted([*_EXPORTS, "EXIT_UNACKNOWLEDGED"])


__getattr__ = lazy_exports(__name__, _EXPORTS)
