"""Rogan-Gladen correction: the formula against hand-worked values, and the interval's coverage
by simulation (a judge with known sensitivity and specificity, a validation set and an
evaluation drawn from it, many times)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from assay.errors import BadInput
from assay.judges.correction import correct_with, corrected_rate, rogan_gladen


def test_formula_by_hand():
    # Se 0.9, Sp 0.8, observed 0.34 -> (0.34 + 0.8 - 1) / (0.9 + 0.8 - 1) = 0.14 / 0.7 = 0.2
    assert float(rogan_gladen(0.34, 0.9, 0.8)) == pytest.approx(0.2)
    # a perfect judge changes nothing; results are clipped into [0, 1]
    assert float(rogan_gladen(0.3, 1.0, 1.0)) == pytest.approx(0.3)
    assert float(rogan_gladen(0.01, 0.9, 0.8)) == 0.0 and float(rogan_gladen(0.99, 0.9, 0.95)) == 1.0
    # no better than chance: undefined
    assert math.isnan(float(rogan_gladen(0.5, 0.5, 0.5)))


def test_point_and_interval_contain_truth_for_a_well_measured_judge():
    c = corrected_rate(340, 1000, {"tp": 900, "fn": 100, "tn": 800, "fp": 200})
    assert c.value == pytest.approx(0.2)
    assert c.ci_low < 0.2 < c.ci_high
    assert c.raw == pytest.approx(0.34) and c.raw_ci[0] < 0.34 < c.raw_ci[1]


def test_small_validation_widens_the_interval():
    big = corrected_rate(340, 1000, {"tp": 900, "fn": 100, "tn": 800, "fp": 200})
    small = corrected_rate(340, 1000, {"tp": 9, "fn": 1, "tn": 8, "fp": 2})
    assert (small.ci_high - small.ci_low) > 2 * (big.ci_high - big.ci_low)


def test_complement_swaps_roles():
    v = {"validated": True, "parsed_confusion": {"tp": 90, "fn": 10, "tn": 80, "fp": 20}}
    pos = correct_with(v, 34, 100)
    neg = correct_with(v, 66, 100, complement=True)
    assert pos is not None and neg is not None
    assert neg.value == pytest.approx(1 - pos.value)
    assert correct_with({"validated": False}, 1, 2) is None


def test_undefined_cases_say_so():
    c = corrected_rate(50, 100, {"tp": 5, "fn": 5, "tn": 5, "fp": 5})
    assert math.isnan(c.value) and "chance" in c.note
    c = corrected_rate(0, 0, {"tp": 5, "fn": 5, "tn": 5, "fp": 5})
    assert math.isnan(c.value) and c.note
    with pytest.raises(BadInput):
        corrected_rate(5, 3, {"tp": 1, "fn": 1, "tn": 1, "fp": 1})
    with pytest.raises(BadInput):
        corrected_rate(1, 3, {"tp": 1})


@pytest.mark.parametrize(("pi", "se", "sp"), [(0.0, 0.9, 0.95), (0.05, 0.85, 0.95), (0.2, 0.9, 0.9), (0.5, 0.8, 0.97), (0.3, 0.95, 0.85)])
def test_coverage_by_simulation(pi, se, sp):
    """Validation of 150 positives and 350 negatives, evaluation of 400 items; 300 replicates.
    The 95% interval must cover the true rate at least 92% of the time (the simulation's own
    standard error is about 1.3 points)."""
    rng = np.random.default_rng(12345)
    reps, covered = 300, 0
    for r in range(reps):
        tp = rng.binomial(150, se)
        tn = rng.binomial(350, sp)
        truth = rng.random(400) < pi
        flagged = np.where(truth, rng.random(400) < se, rng.random(400) >= sp)
        c = corrected_rate(int(flagged.sum()), 400, {"tp": tp, "fn": 150 - tp, "tn": tn, "fp": 350 - tn},
                           resamples=1000, seed=r)
        covered += c.ci_low <= pi <= c.ci_high
    assert covered / reps >= 0.92, covered / reps
