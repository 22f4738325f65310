"""The run log: written and read back, streamed, and refused with a clear error when it is
truncated, corrupt or of another schema version."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest

from assay import runlog as rl
from assay.stats import rate_aggregate


def _head(**kw) -> rl.Header:
    return rl.header(**{"run_id": "r1", "kind": "evaluation", "name": "suite-a", "created_at": "2026-12-07T00:00:00Z", **kw})


def _summary() -> dict:
    return {
        "metrics": {"refusal_rate": rl.metric(rate_aggregate([True, False, True]), judge="phrase@abc", judge_validated=False),
                    "no_interval": {"value": float("nan"), "n": 0, "ci_low": float("nan"), "ci_high": float("nan"), "note": "no values"}},
        "gates": rl.gates_from({"bundle": "b", "bundle_version": "1", "bundle_hash": "h" * 64, "verdicts": [
            {"id": "refusal", "verdict": "inconclusive", "passed": False, "reason": "interval straddles", "missing": ["n >= 50"]}]}),
    }


def _write(path, n=3, **kw):
    return rl.write_runlog(path, _head(**kw), ({"id": f"s{i}", "scores": {"refused": i % 2 == 0}} for i in range(n)), _summary())


def test_written_and_read_back_with_intervals_verdicts_and_samples(tmp_path) -> None:
    path = _write(tmp_path / "runlog.jsonl", n=5)
    log = rl.read_runlog(tmp_path)  # a folder reads its runlog.jsonl
    assert log.header.schema_version == rl.SCHEMA_VERSION and log.run_id == "r1"
    m = log.summary.metrics["refusal_rate"]
    assert (m.n, m.method, m.judge, m.judge_validated) == (3, "wilson", "phrase@abc", False)
    assert 0 < m.ci_low < m.value < m.ci_high < 1
    assert math.isnan(log.summary.metrics["no_interval"].ci_low)  # null in the file, NaN when read
    assert "NaN" not in path.read_text()  # strict JSON
    assert log.summary.gates.verdicts[0].verdict == "inconclusive" and log.summary.passed is False
    assert [s.id for s in log.samples()] == [f"s{i}" for i in range(5)]
    assert log.summary.samples == 5
    assert not list(tmp_path.glob("*.partial"))


def test_every_line_matches_the_shipped_json_schema(tmp_path) -> None:
    shipped = json.loads(rl.SCHEMA_FILE.read_text())
    assert shipped == json.loads(json.dumps(rl.json_schema())), "runlog.schema.json is stale: regenerate it from assay.runlog.json_schema()"
    path = _write(tmp_path / "runlog.jsonl")
    for line in path.read_text().splitlines():
        jsonschema.validate(json.loads(line), shipped)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"record": "sample"}, shipped)  # no id


def test_samples_stream_from_disk(tmp_path) -> None:
    path = _write(tmp_path / "runlog.jsonl", n=2000)
    log = rl.read_runlog(path)
    it = log.samples()
    assert next(it).id == "s0"  # one sample read, not all of them
    assert sum(1 for _ in it) == 1999


def test_an_unfinished_writer_leaves_nothing_at_the_final_name(tmp_path) -> None:
    path = tmp_path / "runlog.jsonl"
    with pytest.raises(RuntimeError), rl.RunLogWriter(path, _head()) as w:
        w.sample({"id": "a"})
        raise RuntimeError("the run died")
    assert not path.exists() and not list(tmp_path.iterdir())
    w = rl.RunLogWriter(path, _head())
    w.sample({"id": "a"})
    with pytest.raises(rl.RunLogError, match=r"only a \.partial file"):
        rl.read_runlog(path)
    w.abort()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[: len(b) - 40], "truncated: the last line ends mid-record"),
        (lambda b: b[: b.rindex(b'{"artifacts"')], "truncated: the last record is 'sample'"),
        (lambda b: b.split(b"\n", 1)[0] + b"\n", "truncated: no summary record"),
        (lambda b: b"", "empty file"),
        (lambda b: b"[1, 2]\n", "not an assay run log"),
        (lambda b: b.replace(b'"schema_version":1', b'"schema_version":2'), "schema_version 2 is not one this assay reads"),
        (lambda b: b.replace(b'"kind":"evaluation"', b'"kind":"party"'), r"runlog.jsonl:1: header field kind"),
        (lambda b: b.replace(b'"verdict":"inconclusive"', b'"verdict":"maybe"'), "summary field gates.verdicts.0.verdict"),
    ],
)
def test_a_damaged_file_is_refused_naming_the_file_and_the_problem(tmp_path, damage, message) -> None:
    path = _write(tmp_path / "runlog.jsonl")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(rl.RunLogError, match=message) as e:
        rl.read_runlog(path)
    assert str(path) in e.value.message


def test_a_corrupt_sample_is_refused_with_its_line(tmp_path) -> None:
    path = _write(tmp_path / "runlog.jsonl")
    lines = path.read_bytes().split(b"\n")
    lines[2] = b'{"record":"sample","id":7}'  # not a string id
    path.write_bytes(b"\n".join(lines))
    log = rl.read_runlog(path)
    with pytest.raises(rl.RunLogError, match=r"runlog.jsonl:3: sample field id"):
        list(log.samples())
    lines[2] = b'{"record":"sample","id":"x"'
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(rl.RunLogError, match=r"runlog.jsonl:3: not JSON"):
        list(rl.read_runlog(path).samples())


def test_a_sample_count_that_disagrees_with_the_summary_is_refused(tmp_path) -> None:
    path = _write(tmp_path / "runlog.jsonl")
    lines = path.read_bytes().split(b"\n")
    del lines[1]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(rl.RunLogError, match="counts 3 samples but the file holds 2"):
        list(rl.read_runlog(path).samples())


def test_find_runlogs_sees_folders_and_named_files(tmp_path) -> None:
    _write(tmp_path / "a" / "runlog.jsonl")
    _write(tmp_path / "b" / "head.runlog.jsonl")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.jsonl").write_text("{}\n")
    assert sorted(p.parent.name for p in rl.find_runlogs(tmp_path)) == ["a", "b"]


def test_the_verdicts_are_the_policy_languages() -> None:
    from assay.policy.model import GATE_VERDICTS

    assert rl.VERDICTS == GATE_VERDICTS
