"""Shared builders for the trace tests (imported by module name; tests/ has no packages)."""

from __future__ import annotations

from assay.records import Decision


def make_decisions(n: int, start: int = 0, subjects: int = 7) -> list[Decision]:
    out = []
    for i in range(start, start + n):
        dropped = i % 3 == 0
        out.append(Decision(
            request_id=f"r{i}", ts=1_764_000_000.0 + i, surface="for_you" if i % 2 else "search",
            subject_id=f"user{i % subjects}", item_id=f"item{i}", rank_before=i % 10,
            rank_after=-1 if dropped else i % 10, action="drop" if dropped else "allow",
            rule_ids=("teen-mature-drop",) if dropped else (), reasons=("mature content is not recommended to minors",) if dropped else (),
            bundle_hash="ab" * 32, bundle_version="2026.11.1", model_versions=("ranker@3",),
            score_before=0.25 + (i % 4) / 8, attribution={"genre": 0.5} if i % 11 == 0 else None,
        ))
    return out
