"""Producers declare what they supply (issue 27, item 2): a bundle whose condition reads an
attribute the producer of its section does not fill is refused at load, at file:line:column,
and each producer fills exactly what it declares."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from assay.cli.main import main
from assay.policy import PolicyError, load_bundle
from assay.policy.supplied import EVAL, GUARD, PURPOSE, SUPPLIED, WINDOW

FEED = Path(__file__).resolve().parents[2] / "src" / "assay" / "policy" / "examples" / "feed.yaml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "b.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def refusal(path: Path) -> PolicyError:
    with pytest.raises(PolicyError) as e:
        load_bundle(path)
    return e.value


HARMFUL_RATE = """\
bundle: t
attributes:
  alerts:
    window.n: int
    window.harmful_rate: double
alerts:
  - id: harmful-surge
    when: window.n >= 100 && window.harmful_rate > 0.05
    severity: page
"""


def test_an_alert_over_an_attribute_the_monitor_does_not_supply_is_refused_where_it_is_read(tmp_path) -> None:
    path = write(tmp_path, HARMFUL_RATE)
    e = refusal(path)
    assert (e.location.file, e.location.line, e.location.column) == (str(path), 8, 30), e.render()
    assert "'window.harmful_rate'" in e.message and "the monitor does not supply" in e.message
    assert "did you mean 'window.harm_rate'" in e.message
    assert "window.harm_rate" in e.hint and "window.drop_rate" in e.hint and "window.psi" in e.hint


def test_policy_check_exits_2_naming_the_place(tmp_path, capsys) -> None:
    path = write(tmp_path, HARMFUL_RATE)
    assert main(["policy", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:8:30" in err and "harmful_rate" in err


@pytest.mark.parametrize("section, decl, when, name, where", [
    ("gates", "eval.scores: map(string, double)", 'eval.scores["x"] <= 0.1', "eval.scores", "the evaluation engine"),
    ("purposes", "dataset.owner: string", 'dataset.owner == "me"', "dataset.owner", "the registry's deployment gate"),
    ("rules", "user.age: int", "user.age < 18", "user.age", "the guard"),
    ("alerts", "window: map(string, double)", 'window["n"] > 1.0', "window", "the monitor"),
])
def test_every_section_is_held_to_its_producer(tmp_path, section, decl, when, name, where) -> None:
    extra = "\n    action: drop" if section == "rules" else ""
    path = write(tmp_path, f"bundle: t\nattributes:\n  {section}:\n    {decl}\n{section}:\n  - id: c\n    when: '{when}'{extra}\n")
    e = refusal(path)
    assert e.location.line == 7 and f"'{name}'" in e.message and where in e.message, e.render()


def test_a_declared_type_other_than_the_supplied_one_is_refused(tmp_path) -> None:
    path = write(tmp_path, "bundle: t\nattributes:\n  alerts:\n    window.surface: int\nalerts:\n  - id: a\n    when: window.surface > 1\n")
    e = refusal(path)
    assert "declared int, but the monitor supplies it as string" in e.message and e.location.line == 7
    # an int the producer supplies may be read as a double (the evaluators coerce it)
    ok = write(tmp_path, "bundle: t\nattributes:\n  alerts:\n    window.n: double\nalerts:\n  - id: a\n    when: window.n > 1.0\n")
    assert load_bundle(ok).alerts[0].id == "a"


def test_the_guards_open_attributes_load(tmp_path) -> None:
    path = write(tmp_path, """\
        bundle: t
        attributes:
          rules:
            request.user.anything_the_caller_sends: string
            item.labels.some_label_store_column: double
            item.some_candidate_column: int
        rules:
          - id: r
            when: request.user.anything_the_caller_sends == "x" && item.labels.some_label_store_column > 0.5 && item.some_candidate_column > 1
            action: drop
        """)
    assert load_bundle(path).rules[0].id == "r"


def test_shipped_bundles_read_only_what_is_supplied() -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "assay"
    for path in (FEED, src / "govern" / "default_bundle.yaml", src / "mitigate" / "policy.yaml",
                 src / "evaluate" / "suites" / "release-gates.bundle.yaml"):
        load_bundle(path)
    feed = load_bundle(FEED)
    # the example alert reads what the monitor computes from decisions (window.harm_rate stays 0
    # without a score stream, so an alert over it would never fire live)
    assert "window.rule_rate_low" in feed.compiled("alerts", "harmful-surge").attributes


def test_the_records_cover_every_section() -> None:
    from assay.policy.model import SECTIONS

    assert set(SUPPLIED) == set(SECTIONS)
    assert GUARD.attributes == {} and set(GUARD.open_prefixes) == {"request.", "item."}
    for record in SUPPLIED.values():
        record.types()  # every declared type parses


# -- each producer fills exactly what it declares


def _flatten(ctx: dict, prefix: str = "") -> dict:
    """Top-level keys of each context object as dotted names (maps stay whole, as declared)."""
    return {f"{root}.{key}": value for root, obj in ctx.items() for key, value in obj.items()}


def test_the_monitor_fills_exactly_its_declaration() -> None:
    from assay.monitor.windows import WINDOW_ATTRIBUTES, WindowStats

    stats = WindowStats(start=0.0, end=10.0, surface="for_you", n=4, requests=2,
                        action_counts={"drop": 1, "allow": 3}, rule_counts={"r": 1}, fallback=0)
    stats.add_scores([0.9, 0.1])
    filled = _flatten(stats.context())
    assert set(filled) == set(WINDOW.attributes) == set(WINDOW_ATTRIBUTES)
    for name, t in WINDOW.types().items():
        value = filled[name]
        if t.kind == "map":
            assert isinstance(value, dict), name
        else:
            assert isinstance(value, {"int": int, "double": float, "string": str, "bool": bool}[t.kind]), (name, value)


def test_the_evaluation_engine_fills_its_declaration() -> None:
    from assay.evaluate.report import gate_context
    from assay.stats import Aggregate

    ctx = gate_context({"harmful_rate": Aggregate(value=0.1, n=50, ci_low=0.04, ci_high=0.2)})
    filled = _flatten(ctx)
    assert set(EVAL.attributes) <= set(filled)
    assert filled["eval.metrics"] == {"harmful_rate": 0.1} and filled["eval.n"] == {"harmful_rate": 50}
    assert all(math.isfinite(v) for v in filled["eval.metrics"].values())


def test_the_deployment_gate_fills_its_declaration() -> None:
    from assay.govern.gate import deployment_context

    spec = {"purpose": "recommendation", "surface": "for_you", "region": "eu", "environment": "production",
            "bundle_hash": "ab" * 32}
    filled = {f"deployment.{k}": v for k, v in deployment_context(spec).items()}
    assert set(filled) == {n for n in PURPOSE.attributes if n.startswith("deployment.")}
    assert {n for n in PURPOSE.attributes if not n.startswith("deployment.")} == {"dataset.purposes", "dataset.restrictions"}
