"""The decision trace: an append-only, Merkle-hashed, checkpoint-signed, queryable log.

    from assay.trace import TraceLog
    log = TraceLog.open()                      # ASSAY_HOME/trace, or any fsspec URL
    log.append([decision, ...])                # durable when it returns
    log.verify().raise_if_failed()
    log.why(item_id, subject_id, at=None)
"""

from __future__ import annotations

from assay.trace.checkpoint import Checkpoint, SignatureError, Verifier
from assay.trace.log import AppendResult, TamperError, TraceLog, VerifyReport
from assay.trace.merkle import ProofError

__all__ = ["AppendResult", "Checkpoint", "ProofError", "SignatureError", "TamperError", "TraceLog", "Verifier", "VerifyReport"]
