"""Fuzzing the loader: random text and mutated valid bundles never crash with a traceback; they
load, or fail with a PolicyError that names a file:line:column place."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.errors import AssayError
from assay.policy import PolicyError, load_bundle

FEED = (Path(__file__).resolve().parents[2] / "src" / "assay" / "policy" / "examples" / "feed.yaml").read_text()
PLACE = re.compile(r"^.+:\d+:\d+: ")
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def load_or_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    for sig in tmp_path.glob("*.sig"):
        sig.unlink()
    try:
        load_bundle(path)
    except PolicyError as e:
        rendered = e.render()
        assert PLACE.match(rendered), rendered
        assert e.location.line >= 1 and e.location.column >= 1
    except AssayError as e:  # pragma: no cover - a non-located error is a defect
        raise AssertionError(f"error without a place: {e.render()}") from e


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes(tmp_path, data):
    load_or_error(tmp_path, data)


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("rules:gates- id:when action drop\n\t {}[]'\"&|<>=!0.5x.y")), max_size=300))
def test_random_yaml_like_text(tmp_path, text):
    load_or_error(tmp_path, text.encode())


@SETTINGS
@given(st.data())
def test_mutated_valid_bundle(tmp_path, data):
    text = FEED
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["delete", "insert", "replace", "swap_lines", "truncate"]))
        i = data.draw(st.integers(0, max(len(text) - 1, 0)))
        if op == "delete":
            text = text[:i] + text[i + data.draw(st.integers(1, 20)):]
        elif op == "insert":
            text = text[:i] + data.draw(st.sampled_from(["(", ")", "&&", "'", '"', ":", "- ", "\n", "  ", "x", "0.", "\t", "\x00", "é"])) + text[i:]
        elif op == "replace":
            text = text.replace(data.draw(st.sampled_from(["0.7", "drop", "item.labels", "when", "id", "double", "string", "int", "[", "&&"])),
                                data.draw(st.sampled_from(["7", "dorp", "item.label", "wen", "ID", "float", "str", "long", "(", "||", ""])), 1)
        elif op == "swap_lines":
            lines = text.split("\n")
            a, b = data.draw(st.integers(0, len(lines) - 1)), data.draw(st.integers(0, len(lines) - 1))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
        else:
            text = text[:i]
    load_or_error(tmp_path, text.encode("utf-8", "surrogatepass"))
