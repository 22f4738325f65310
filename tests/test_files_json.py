"""``assay.files.dumps_json``: what a command prints with --json always parses as strict JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from assay.files import dumps_json, refuse_constant, strict_json


def test_non_finite_floats_become_null_everywhere_and_the_rest_is_kept():
    value = {"a": math.nan, "b": [1.5, math.inf, (-math.inf, 2)], "c": {"d": np.float64("nan"), "e": np.float32(0.5), "f": np.int64(3)},
             "g": "NaN", "h": True, "i": None}
    text = dumps_json(value, sort_keys=True)
    back = json.loads(text, parse_constant=refuse_constant)
    assert back == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": None, "e": 0.5, "f": 3}, "g": "NaN", "h": True, "i": None}
    assert strict_json(1e308) == 1e308 and strict_json(-0.0) == 0.0


def test_unknown_objects_print_through_default_and_json_rules_still_hold():
    class Thing:
        def __str__(self) -> str:
            return "thing"

    assert json.loads(dumps_json({"t": Thing()})) == {"t": "thing"}
    with pytest.raises(TypeError):
        dumps_json({"t": Thing()}, default=None)


@pytest.mark.parametrize(("text", "line", "column"), [
    ('{"a": NaN}', 1, 7), ('{"s": "NaN Infinity \\" NaN",\n "b": [1, -Infinity]}', 2, 11), ("Infinity", 1, 1)])
def test_a_refused_constant_is_located_at_itself(text, line, column):
    from assay.errors import LocatedError
    from assay.files import parse_json

    with pytest.raises(LocatedError) as e:
        parse_json(text, "f.json", first_line=1)
    assert (e.value.location.line, e.value.location.column) == (line, column)


def test_a_json_lines_record_cut_at_its_end_is_located_on_its_own_line(tmp_path):
    from assay.errors import LocatedError
    from assay.files import read_jsonl

    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1}\n{"id": 2\n{"id": 3}\n')
    with pytest.raises(LocatedError) as info:
        list(read_jsonl(path, "rows"))
    assert (info.value.location.line, info.value.location.column) == (2, 9)  # not 3:1, the next line
