"""``assay trace ...`` through the real CLI entry point: exit codes, JSON output, messages."""

from __future__ import annotations

import json
from pathlib import Path

from trace_helpers import make_decisions

from assay.cli.main import main
from assay.trace import TraceLog


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_round_trip(capsys, tmp_path) -> None:
    with TraceLog.open() as log:
        log.append(make_decisions(40))
    code, out, _ = _run(capsys, "trace", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] and json.loads(out)["records"] == 40

    code, out, _ = _run(capsys, "trace", "why", "--item", "item9", "--subject", "user2", "--json")
    answer = json.loads(out)
    assert code == 0 and answer["action"] == "drop" and answer["rules"][0]["id"] == "teen-mature-drop"
    code, _, err = _run(capsys, "trace", "why", "--item", "item9", "--subject", "user3")
    assert code == 1 and "no decision" in err
    code, _, err = _run(capsys, "trace", "why", "--item", "item9", "--subject", "user2", "--at", "yesterday")
    assert code == 2 and "--at 'yesterday'" in err

    code, out, _ = _run(capsys, "trace", "key")
    vkey = out.strip()
    (tmp_path / "key.vkey").write_text(vkey)
    proof = tmp_path / "p.json"
    assert _run(capsys, "trace", "prove", "--index", "7", "--out", str(proof))[0] == 0
    code, out, _ = _run(capsys, "trace", "check", str(proof), "--public-key", str(tmp_path / "key.vkey"))
    assert code == 0 and out.startswith("included: record 7")
    bundle = json.loads(proof.read_text())
    bundle["index"] = 8
    proof.write_text(json.dumps(bundle))
    code, _, err = _run(capsys, "trace", "check", str(proof), "--public-key", vkey)
    assert code == 1 and "proof does not check" in err

    code, out, _ = _run(capsys, "trace", "stats", "--by", "action", "--json")
    assert code == 0 and {g["action"]: g["decisions"] for g in json.loads(out)["groups"]} == {"allow": 26, "drop": 14}
    code, _, err = _run(capsys, "trace", "stats", "--by", "colour")
    assert code == 2 and "colour" in err

    code, out, _ = _run(capsys, "trace", "erase", "--subject", "user2", "--json")
    assert code == 0 and json.loads(out)["erased"] == 6
    assert _run(capsys, "trace", "verify")[0] == 0


def test_cli_verify_fails_on_tampering(capsys) -> None:
    with TraceLog.open() as log:
        log.append(make_decisions(10))
        segment = Path(log.root) / "segments" / log.segment_names()[0]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x40
    segment.write_bytes(bytes(data))
    code, _, err = _run(capsys, "trace", "verify")
    assert code == 1 and segment.name in err
