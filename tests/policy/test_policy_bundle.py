"""Loading bundles: validation errors name file:line:column, hashing ignores formatting,
signatures are enforced, folder bundles merge, and the bundle's own tests run."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from assay.cli.main import main
from assay.errors import BadInput
from assay.policy import PolicyError, load_bundle
from assay.policy.signing import generate_keypair, sign_bundle
from assay.policy.testing import run_tests

FEED = Path(__file__).resolve().parents[2] / "src" / "assay" / "policy" / "examples" / "feed.yaml"

GOOD = """\
bundle: t
version: "1"
attributes:
  rules:
    request.user.age: int
    item.labels.mature: double
    item.tags: list(string)
  gates:
    eval.metrics: map(string, double)
rules:
  - id: teen-mature-drop
    when: request.user.age < 18 && item.labels.mature >= 0.7
    action: drop
    reason: mature content is not recommended to minors
gates:
  - id: tox
    when: eval.metrics["toxicity_rate"] <= 0.01
"""


def write(tmp_path: Path, text: str, name: str = "b.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def error_of(path: Path, **kw) -> PolicyError:
    with pytest.raises(PolicyError) as e:
        load_bundle(path, **kw)
    return e.value


def test_example_bundle_loads_and_its_tests_pass():
    b = load_bundle(FEED)
    assert len(b.rules) == 25 and b.surfaces() == {"for_you"}
    results = run_tests(b)
    assert results and all(r.passed for r in results), [r.problems for r in results if not r.passed]


@pytest.mark.parametrize(
    "text, line, col, message",
    [
        ("rules: [\n  - id: a\n", 2, 3, "malformed YAML"),
        ("rulez: []\n", 1, 1, "unknown section 'rulez'"),
        ("attributes:\n  rules:\n    item.x: double\nrules:\n  - id: a\n    when: item.y > 1.0\n    action: drop\n", 6, 11, "undeclared reference to 'item.y'"),
        ("attributes:\n  rules:\n    item.x: double\nrules:\n  - id: a\n    when: item.x > \"s\"\n    action: drop\n", 6, 18, "no matching overload"),
        ("attributes:\n  rules:\n    item.x: string\nrules:\n  - id: a\n    when: item.x.matches(\"^a\")\n    action: drop\n", 6, 18, "vectorised evaluator cannot compile"),
        ("attributes:\n  rules:\n    item.x: double\nrules:\n  - id: a\n    when: frobnicate(item.x)\n    action: drop\n", 6, 11, "undeclared reference to 'frobnicate'"),
        ("attributes:\n  rules:\n    item.x: double\nrules:\n  - id: a\n    when: item.x > 1.0\n    action: drop\n  - id: a\n    when: item.x > 2.0\n    action: drop\n", 8, 9, "duplicate rule id 'a'"),
        ("attributes:\n  rules:\n    item.x: tensor\n", 3, 13, "unsupported attribute type"),
        ("attributes:\n  rules:\n    item.x: double\nrules:\n  - id: a\n    when: item.x > 1.0\n    action: explode\n", 7, 13, "unknown action"),
        ("attributes:\n  rules:\n    item.x: double\nrules:\n  - id: a\n    when: item.x\n    action: drop\n", 6, 11, "must be a bool"),
        ("attributes:\n  rules:\n    item.x: double\nrules:\n  - id: a\n    when: item.x > 1.0 &&\n    action: drop\n", 6, 26, "syntax error"),
        ("rules:\n  - id: a\n    when: 'true'\n    action: drop\n    colour: red\n", 5, 5, "unknown field 'colour'"),
    ],
)
def test_bad_bundles_name_the_place(tmp_path, text, line, col, message):
    path = write(tmp_path, text)
    err = error_of(path)
    assert err.location.file == str(path)
    assert (err.location.line, err.location.column) == (line, col), err.render()
    assert message in err.message
    rendered = err.render()
    assert re.match(rf"{re.escape(str(path))}:{line}:{col}: ", rendered)
    assert "^" in rendered  # the offending text is marked


def test_reference_only_rule_is_served_one_candidate_at_a_time(tmp_path):
    path = write(tmp_path, """\
        attributes:
          rules:
            item.x: string
        rules:
          - id: a
            when: item.x.matches("^ab+$")
            action: drop
            evaluator: reference
        """)
    from assay.policy import Batch

    b = load_bundle(path)
    out = b.compile_rules("*").evaluate(Batch.from_records({}, [{"x": "abbb"}, {"x": "ba"}, {}]))
    assert out[0].tolist() == [1, 0, 2]


def test_hash_ignores_key_order_whitespace_and_comments(tmp_path):
    a = load_bundle(write(tmp_path, GOOD, "a.yaml"))
    reordered = GOOD.replace('bundle: t\nversion: "1"\n', 'version: "1"   # the version\n\n\nbundle: t\n')
    reordered = reordered.replace("    when: request.user.age < 18 && item.labels.mature >= 0.7\n    action: drop\n",
                                  "    action:   drop\n    when:   request.user.age < 18 && item.labels.mature >= 0.7\n")
    b = load_bundle(write(tmp_path, reordered, "b.yaml"))
    assert a.hash == b.hash
    changed = load_bundle(write(tmp_path, GOOD.replace("0.7", "0.6"), "c.yaml"))
    assert changed.hash != a.hash


def test_folder_bundle_merges_files_and_rejects_conflicts(tmp_path):
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "10-attributes.yaml").write_text("bundle: f\nattributes:\n  rules:\n    item.x: double\n")
    (folder / "20-rules.yaml").write_text("rules:\n  - id: a\n    when: item.x > 0.5\n    action: drop\n")
    b = load_bundle(folder)
    assert [r.id for r in b.rules] == ["a"] and b.name == "f"
    (folder / "30-more.yaml").write_text("rules:\n  - id: a\n    when: item.x > 0.9\n    action: drop\n")
    err = error_of(folder)
    assert err.location.file.endswith("30-more.yaml") and "duplicate rule id" in err.message


def test_signing_is_required_and_tampering_is_refused(tmp_path):
    path = write(tmp_path, GOOD.replace('version: "1"', 'version: "1"\nrequires_signature: true'))
    priv, pub = tmp_path / "k", tmp_path / "k.pub"
    generate_keypair(priv, pub)
    err = error_of(path, public_key=pub)
    assert "must be signed" in err.message
    bundle = load_bundle(path, require_signature=False)
    sig = sign_bundle(bundle, priv)
    assert load_bundle(path, public_key=pub).hash == bundle.hash
    # tamper with the content: the signature no longer matches
    path.write_text(path.read_text().replace("0.7", "0.9"))
    err = error_of(path, public_key=pub)
    assert "does not match its signature" in err.message and err.location.file == str(sig)
    # a forged signature with another key
    path.write_text(path.read_text().replace("0.9", "0.7"))
    other, other_pub = tmp_path / "o", tmp_path / "o.pub"
    generate_keypair(other, other_pub)
    assert "not with the trusted key" in error_of(path, public_key=other_pub).message
    # a corrupted signature with the right key id
    doc = sig.read_text()
    sig.write_text(re.sub(r'"signature": "([A-Za-z0-9+/]{4})', '"signature": "AAAA', doc))
    assert "not valid" in error_of(path, public_key=pub).message


def test_a_bad_trusted_key_is_named_even_for_an_unsigned_bundle(tmp_path, monkeypatch, capsys):
    """A probe's ``policy check --pubkey junk`` on an unsigned bundle passed (the key was never
    read), so a wrong key or ASSAY_POLICY_PUBKEY surfaced only at the first signed bundle."""
    path = write(tmp_path, GOOD)
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key\n")
    with pytest.raises(BadInput, match=r"junk\.pub: not an Ed25519 public key"):
        load_bundle(path, public_key=junk)
    assert main(["policy", "check", str(path), "--pubkey", str(junk)]) == 2
    assert "not an Ed25519 public key" in capsys.readouterr().err
    monkeypatch.setenv("ASSAY_POLICY_PUBKEY", str(tmp_path / "missing.pub"))
    assert main(["policy", "check", str(path)]) == 2
    priv, pub = tmp_path / "k", tmp_path / "k.pub"
    generate_keypair(priv, pub)
    monkeypatch.setenv("ASSAY_POLICY_PUBKEY", str(pub))
    assert load_bundle(path).name  # a good key and an unsigned bundle that need not be signed: loads


def test_cli_exit_codes_and_messages(tmp_path, capsys):
    good = write(tmp_path, GOOD, "good.yaml")
    assert main(["policy", "check", str(good)]) == 0
    bad = write(tmp_path, GOOD.replace("item.labels.mature >= 0.7", "item.labels.maturity >= 0.7"), "bad.yaml")
    assert main(["policy", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:12:" in err.replace("\n", "") and "item.labels.maturity" in err
    assert main(["policy", "hash", str(good)]) == 0
    assert capsys.readouterr().out.strip() == load_bundle(good).hash
    assert main(["policy", "diff", str(good), str(good)]) == 0
    changed = write(tmp_path, GOOD.replace("0.7", "0.5"), "changed.yaml")
    assert main(["policy", "diff", str(good), str(changed)]) == 1
    assert "rules/teen-mature-drop.when" in capsys.readouterr().out
    assert main(["policy", "test", str(FEED)]) == 0
    failing = write(tmp_path, GOOD + "tests:\n  - name: wrong\n    gates: {}\n    input: {eval: {metrics: {toxicity_rate: 0.5}}}\n    expect: {pass: true}\n", "failing.yaml")
    assert main(["policy", "test", str(failing)]) == 1
    out = capsys.readouterr().out
    assert "FAIL wrong" in out and "0 passed, 1 failed" in out


def test_cli_usage_errors_exit_2_without_traceback(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert "No such command" in err and "Traceback" not in err
    assert main(["policy", "check"]) == 2  # missing argument


def test_require_signed_is_a_yes_or_no_never_quietly_no(tmp_path, monkeypatch):
    """ASSAY_POLICY_REQUIRE_SIGNED counted only when exactly "1": a probe's =true (or =yes) loaded
    an unsigned bundle as if no signature were required. Now 1/true/yes/on require one, 0/false/
    no/off do not, and anything else is bad input naming the setting."""
    path = write(tmp_path, GOOD)
    for value in ("1", "true", "YES", "on"):
        monkeypatch.setenv("ASSAY_POLICY_REQUIRE_SIGNED", value)
        assert "must be signed" in error_of(path).message, value
    for value in ("0", "false", "no", "off", ""):
        monkeypatch.setenv("ASSAY_POLICY_REQUIRE_SIGNED", value)
        assert load_bundle(path).rules
    monkeypatch.setenv("ASSAY_POLICY_REQUIRE_SIGNED", "maybe")
    with pytest.raises(BadInput, match="ASSAY_POLICY_REQUIRE_SIGNED='maybe'"):
        load_bundle(path)
