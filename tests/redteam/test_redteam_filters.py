"""Filter evasion on a real filter (alt-profanity-check) and the guard's rules on its labels,
with and without the normalisation defence."""

from __future__ import annotations

import pytest

from assay.errors import BadInput
from assay.redteam.filters import run_filters


def test_normalisation_defends_against_character_tricks():
    out = run_filters("profanity-check", kinds=("homoglyph", "zero_width", "fullwidth", "paraphrase"), limit=25, rate=1.0)
    assert out["flagged"] == 25
    assert out["unperturbed_guard_pass"]["rate"] == 0.0  # the rule drops everything the filter flags
    for kind in ("homoglyph", "zero_width", "fullwidth"):
        with_norm = out["perturbations"][kind]["with_normalisation"]
        without = out["perturbations"][kind]["without_normalisation"]
        assert without["classifier"]["rate"] > with_norm["classifier"]["rate"], kind
        # the guard acts on the filter's labels, so it is evaded exactly when the filter is
        assert without["guard"]["evaded"] == without["classifier"]["evaded"]
        assert 0.0 <= without["classifier"]["ci_low"] <= without["classifier"]["rate"] <= without["classifier"]["ci_high"] <= 1.0
    # a paraphrase template keeps the words: normalisation neither helps nor is needed
    para = out["perturbations"]["paraphrase"]
    assert para["with_normalisation"]["classifier"]["rate"] == para["without_normalisation"]["classifier"]["rate"]


def test_filters_bad_input():
    with pytest.raises(BadInput, match="unknown perturbation"):
        run_filters("profanity-check", kinds=("rot47",))
    with pytest.raises(BadInput, match="flags none"):
        run_filters("profanity-check", texts=["have a lovely day", "thanks for the tea"], limit=2)
