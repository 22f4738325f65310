"""Bounded parsing of policy bundles (issue #20): size, alias expansion, nesting, file kinds, and
empty bundles, plus a bounded fuzz of hostile bundle files. Every refusal is a ``PolicyError``
naming file:line:column, reached in well under a second (an unbounded expansion would take
minutes and gigabytes)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.cli.main import main
from assay.policy import PolicyError, load_bundle
from assay.policy.source import MAX_DEPTH, MAX_NODES

PLACE = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): ")
RULE = 'rules:\n  - {id: r, when: "true", action: drop}\n'


def refused(path: Path, *words: str) -> PolicyError:
    started = time.monotonic()
    with pytest.raises(PolicyError) as caught:
        load_bundle(path)
    assert time.monotonic() - started < 5, "the refusal was bounded"
    rendered = caught.value.render()
    assert PLACE.match(rendered), rendered
    for w in words:
        assert w in rendered, (w, rendered)
    return caught.value


def laughs(levels: int, fanout: int, where: str = "tests") -> str:
    """The classic alias bomb, ``fanout ** levels`` strings from a few hundred bytes."""
    lines = [f'      l0: &l0 [{", ".join(["lol"] * fanout)}]']
    lines += [f'      l{i}: &l{i} [{", ".join([f"*l{i - 1}"] * fanout)}]' for i in range(1, levels)]
    if where == "tests":
        return RULE + "tests:\n  - name: t\n    rules: {surface: x}\n    expect: {action: drop}\n    input:\n" + "\n".join(lines) + "\n"
    return RULE + "bundle: x\ndescription:\n" + "\n".join(x[4:] for x in lines) + "\n"


def test_a_billion_laughs_is_refused_at_the_node_that_crosses_the_bound(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(laughs(9, 10))
    error = refused(bomb, "YAML aliases")
    # l4 (about 10 ** 5 values once expanded) is the first node over the bound: the error is at its anchor
    line = next(i for i, text in enumerate(bomb.read_text().splitlines(), 1) if text.strip().startswith("l4:"))
    assert (error.location.line, error.location.column) == (line, 11), error.location
    assert len(bomb.read_bytes()) < 1000
    ok = tmp_path / "ok.yaml"
    ok.write_text(laughs(3, 10))  # a thousand values: aliases are fine within the bound
    assert load_bundle(ok).tests[0].input["l2"][0][0] == ["lol"] * 10


def test_policy_check_refuses_an_alias_bomb_in_tests_input_with_exit_2(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(laughs(12, 9))
    started = time.monotonic()
    assert main(["policy", "check", str(bomb)]) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert f"{bomb}:" in err and "YAML aliases" in err


def test_deep_nesting_is_refused_even_when_aliases_make_it(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text(RULE + "description: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n")
    refused(deep, "deeper than")
    # 40 levels under an anchor, used 40 levels deep: each half is fine, together too deep
    half = MAX_DEPTH // 2 + 8
    sneaky = tmp_path / "sneaky.yaml"
    sneaky.write_text(RULE + "bundle: x\nattributes: {}\ntests:\n  - name: t\n    rules: {}\n    expect: {}\n    input:\n"
                      f"      a: &a {'[' * half}1{']' * half}\n      b: {'[' * half}*a{']' * half}\n")
    refused(sneaky, "deeper than")


def test_size_limits_name_the_place_where_the_file_crosses_them(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_POLICY_MAX_BYTES", "200")
    big = tmp_path / "big.yaml"
    big.write_text(RULE + "description: |\n" + "".join(f"  line {i}\n" for i in range(100)))
    error = refused(big, "larger than the limit of 200 bytes")
    raw = big.read_bytes()
    assert error.location.line == raw[:200].count(b"\n") + 1  # where byte 201 sits
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "a.yaml").write_text(RULE + "description: " + "x" * 100 + "\n")
    (folder / "b.yaml").write_text("description: " + "x" * 100 + "\n")
    refused(folder, "b.yaml", "together are larger than the limit of 200 bytes")
    monkeypatch.setenv("ASSAY_POLICY_MAX_BYTES", "nope")
    with pytest.raises(Exception, match="ASSAY_POLICY_MAX_BYTES"):
        load_bundle(folder)


def test_fifos_devices_and_empty_bundles_are_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    refused(fifo, "FIFO")  # opening it must not wait for a writer
    refused(Path("/dev/zero"), "device")
    refused(Path("/dev/null"), "device")
    for text in ("", "# only a comment\n", "bundle: b\nversion: 1\n", "tests: []\n", "rules: []\ngates:\n"):
        empty = tmp_path / "empty.yaml"
        empty.write_text(text)
        refused(empty, "the bundle is empty")


def test_key_files_that_are_fifos_or_devices_are_refused_at_once(tmp_path, capsys):
    """``policy sign --key`` and ``--pubkey`` read keys as bundle files are read: a probe's FIFO
    as the private key held ``policy sign`` forever, and /dev/zero was read until memory ran out."""
    from assay.policy.signing import generate_keypair

    bundle = tmp_path / "b.yaml"
    bundle.write_text((Path(__file__).resolve().parents[2] / "src/assay/policy/examples/feed.yaml").read_text())
    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for key, kind in ((fifo, "FIFO"), (Path("/dev/zero"), "device"), (tmp_path, "folder")):
        assert main(["policy", "sign", str(bundle), "--key", str(key)]) == 2
        err = capsys.readouterr().err
        assert f"private key {key}" in err and kind in err, err
    assert main(["policy", "sign", str(bundle), "--key", str(tmp_path / "k")]) == 0
    for key, kind in ((fifo, "FIFO"), (Path("/dev/zero"), "device")):
        assert main(["policy", "verify", str(bundle), "--pubkey", str(key)]) == 2
        err = capsys.readouterr().err
        assert f"public key {key}" in err and kind in err, err
    assert main(["policy", "verify", str(bundle), "--pubkey", str(tmp_path / "k.pub")]) == 0


# ---------------------------------------------------------------- the bounded fuzz

SCALARS = st.sampled_from(["lol", "1", "0.5", "true", "null", '"x"', "'y'", "~", "-1e9", "é", "\\u00e9"])


@st.composite
def hostile_yaml(draw) -> str:
    """A policy file with random anchors and aliases (lists, maps, merge keys), random nesting,
    in a random place: a rule, a test input, an attribute, the description."""
    levels = draw(st.integers(1, 12))
    fanout = draw(st.integers(1, 12))
    lines, kinds = [], []
    for i in range(levels):
        kind = draw(st.sampled_from(["seq", "map", "merge"]))
        if kind == "merge" and (not kinds or kinds[-1] == "seq"):
            kind = "map"  # a merge key needs a mapping to merge
        items = [f"*a{i - 1}" if i and draw(st.booleans()) else draw(SCALARS) for _ in range(fanout)]
        if kind == "seq":
            lines.append(f"a{i}: &a{i} [{', '.join(items)}]")
        elif kind == "map":
            lines.append(f"a{i}: &a{i} {{{', '.join(f'k{j}: {v}' for j, v in enumerate(items))}}}")
        else:
            lines.append(f"a{i}: &a{i} {{<<: *a{i - 1}, {', '.join(f'm{j}: {v}' for j, v in enumerate(items))}}}")
        kinds.append("seq" if kind == "seq" else "map")
    depth = draw(st.integers(0, 80))
    body = "\n".join("      " + x for x in lines)
    place = draw(st.sampled_from(["tests", "description", "rule"]))
    if place == "tests":
        text = RULE + "tests:\n  - name: t\n    rules: {surface: x}\n    expect: {action: drop}\n    input:\n" + body + "\n"
    elif place == "description":
        text = RULE + "description:\n" + "\n".join(x[4:] for x in body.split("\n")) + "\n"
    else:
        text = "rules:\n  - id: r\n    when: " + "[" * depth + "1" + "]" * depth + "\n    action: drop\n"
    return text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(hostile_yaml())
def test_hostile_bundles_load_or_are_refused_quickly_with_a_place(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    started = time.monotonic()
    try:
        bundle = load_bundle(path)
    except PolicyError as e:
        assert PLACE.match(e.render()), e.render()
    else:
        # what loaded is bounded: its canonical form (what the hash covers) is small
        import json

        assert len(json.dumps(bundle.canonical())) < 64 * MAX_NODES
    assert time.monotonic() - started < 3, text[:300]
