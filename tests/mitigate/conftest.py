"""Fixtures for the mitigation tests: real findings made from Do-Not-Answer's human labels, and a
per-session cache of the dequantised SmolLM2 so the GGUF is converted once per test session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """Where the dequantised bundled model is kept for this session (``ASSAY_MODEL_CACHE`` if set)."""
    path = Path(os.environ.get("ASSAY_MODEL_CACHE") or tmp_path_factory.mktemp("model-cache"))
    os.environ["ASSAY_MODEL_CACHE"] = str(path)
    return path


def write_findings(path: Path, n_harmful: int = 60, n_passed: int = 10) -> Path:
    """Evaluation failures as the replay of Do-Not-Answer produces them: the six models' real
    responses that human annotators labelled harmful (verdict ``harmful``), plus passing rows."""
    from assay.data import do_not_answer

    responses = do_not_answer.load_responses()
    harmful = [r for r in responses if r.harmful][:n_harmful]
    passed = [r for r in responses if not r.harmful][:n_passed]
    with open(path, "w", encoding="utf-8") as fh:
        for r in harmful:
            fh.write(json.dumps({"prompt": r.question, "response": r.response, "verdict": "harmful", "model": r.model}) + "\n")
        for r in passed:
            fh.write(json.dumps({"prompt": r.question, "response": r.response, "verdict": "pass", "model": r.model}) + "\n")
    return path


@pytest.fixture
def findings_file(tmp_path) -> Path:
    return write_findings(tmp_path / "findings.jsonl")
