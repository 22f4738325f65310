"""Sampling ranker explanations into the decision trace.

A request is either explained for every one of its candidates or for none, chosen by a hash of
the request id (so the choice is reproducible and independent of arrival order). The rate comes
from the caller, or ``ASSAY_EXPLAIN_SAMPLE_RATE`` (default 0.01). An explained decision carries
``Decision.attribution`` = ``{feature: TreeSHAP contribution}``, which ``assay trace why`` shows.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from assay.errors import BadInput
from assay.explain.ranking import Attribution
from assay.records import Decision

DEFAULT_RATE = 0.01


class DecisionSink(Protocol):
    """What the trace offers: ``assay.trace.TraceLog.append(records)`` (a batch, durable on return)."""

    def append(self, records: Sequence[Decision]) -> Any: ...


class ExplanationSampler:
    def __init__(self, rate: float | None = None, salt: str = "assay-explain"):
        if rate is None:
            raw = os.environ.get("ASSAY_EXPLAIN_SAMPLE_RATE", str(DEFAULT_RATE))
            try:
                rate = float(raw)
            except ValueError:
                raise BadInput(
                    f"ASSAY_EXPLAIN_SAMPLE_RATE must be a number in [0, 1]; got {raw!r}"
                ) from None
        if not 0.0 <= rate <= 1.0:
            raise BadInput(f"explanation sample rate must be in [0, 1]; got {rate}")
        self.rate = rate
        self.salt = salt.encode()

    def sampled(self, request_id: str) -> bool:
        if self.rate >= 1.0:
            return True
        if self.rate <= 0.0:
            return False
        digest = hashlib.sha256(self.salt + request_id.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.rate


def attach(
    decisions: Sequence[Decision], attribution: Attribution, sampler: ExplanationSampler
) -> list[Decision]:
    """The decisions, with ``attribution`` filled for the candidates of sampled requests (items
    missing from ``attribution`` are left without one)."""
    known = {str(int(i)) for i in attribution.item_ids}
    out = []
    for d in decisions:
        if d.attribution is None and d.item_id in known and sampler.sampled(d.request_id):
            d = replace(d, attribution=attribution.as_dict(int(d.item_id)))
        out.append(d)
    return out


def sample_into_trace(
    sink: DecisionSink,
    decisions: Iterable[Decision],
    attribution: Attribution,
    sampler: ExplanationSampler,
) -> int:
    """Append the decisions to the trace (``assay.trace.TraceLog``) in one batch, explained at
    the sampler's rate; returns how many carried an attribution."""
    batch = attach(list(decisions), attribution, sampler)
    if batch:
        sink.append(batch)
    return sum(d.attribution is not None for d in batch)
