"""The differential fuzzer (assay.guard.fuzz): random bundles, requests and batches in every input
shape the guard takes, decided by the guard in a child process and by the reference guard (the
CEL library, one candidate at a time). A bounded run is part of the default suite; the long run
is ``-m slow`` (``ASSAY_FUZZ_CASES`` sets its size)."""

from __future__ import annotations

import os
import sys

import pytest

from assay.guard import fuzz


def _check(report: fuzz.Report, cases: int) -> None:
    examples = "\n\n".join(f"{e['problem']}\nbundle: {e['bundle']}\nrequest: {e['request']}\ncandidates: {e['candidates']}"
                           for e in report.examples)
    assert report.cases == cases
    assert report.crashes == 0 and report.disagreements == 0, examples
    assert set(report.shapes) == set(fuzz.SHAPES) and min(report.shapes.values()) > 0, report.shapes
    assert report.bad_input_cases > 0  # malformed batches were sent, and refused


def test_a_bounded_fuzz_run_finds_no_crash_and_no_disagreement():
    report = fuzz.run(cases=300, seed=20261201)
    _check(report, 300)


@pytest.mark.slow
def test_a_long_fuzz_run():
    cases = int(os.environ.get("ASSAY_FUZZ_CASES", "20000"))
    report = fuzz.run(cases=cases, seed=int(os.environ.get("ASSAY_FUZZ_SEED", "7")))
    _check(report, cases)


def test_a_crash_in_the_child_is_a_finding_not_the_end_of_the_run(monkeypatch):
    """The guard runs in a child process: a segfault there is counted (and the child restarted),
    the run and the test runner go on."""

    class Segfaulting(fuzz.Child):
        def start(self):
            import subprocess

            self.proc = subprocess.Popen([sys.executable, "-c", "import ctypes, sys; sys.stdin.buffer.read(8); ctypes.string_at(0)"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    child = Segfaulting(timeout_s=30)
    report = fuzz.run(cases=3, seed=1, child=child)
    assert report.cases == 3 and report.crashes == 3 and all("exited -11" in e["problem"] for e in report.examples)


def test_the_fuzzer_finds_a_wrong_answer(monkeypatch):
    """A guard that answers wrongly is caught: here the slate comparison is fed a served list the
    reference did not serve."""
    got = {"status": "ok", "served": ["x"], "scores": [1.0], "labels": {}, "decisions": [], "outcomes": None}
    want = {"served": [], "scores": [], "labels": {}, "decisions": [], "outcomes": []}
    assert "served differ" in fuzz.compare(got, want)
