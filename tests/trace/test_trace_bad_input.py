"""Bad input to ``assay trace``: one clear line on stderr and exit 2, never a traceback, nothing
created or changed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from trace_helpers import make_decisions

from assay.cli.main import main
from assay.trace import TraceLog


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.fixture
def logged(tmp_path) -> dict[str, str]:
    with TraceLog.open(tmp_path / "log") as log:
        log.append(make_decisions(12))
        vkey = log.verifier.vkey()
        proof = log.prove_inclusion(3)
    binary = tmp_path / "binary.key"
    binary.write_bytes(bytes(range(256)) * 4)
    good = tmp_path / "proof.json"
    good.write_text(json.dumps(proof))
    out = {"log": str(tmp_path / "log"), "vkey": vkey, "binary": str(binary), "proof": str(good), "tmp": str(tmp_path)}
    _fifo(out), _log_with_fifo(out, "manifest"), _log_with_fifo(out, "tree")  # made before the commands run
    return out


def _fifo(logged) -> str:
    path = Path(logged["tmp"]) / "pipe"
    if not path.exists():
        os.mkfifo(path)
    return str(path)


def _log_with_fifo(logged, which: str) -> str:
    """A copy of the log whose newest segment manifest is a FIFO, or whose tree.bin is /dev/zero."""
    copy = Path(logged["tmp"]) / f"log-{which}"
    if not copy.exists():
        shutil.copytree(logged["log"], copy)
        if which == "manifest":
            target = sorted((copy / "checkpoints").glob("*.manifest.json"))[-1]
            target.unlink()
            os.mkfifo(target)
        else:
            (copy / "tree.bin").unlink(missing_ok=True)
            (copy / "tree.bin").symlink_to("/dev/zero")
    return str(copy)


def _proof_variant(logged, change) -> str:
    bundle = json.loads(Path(logged["proof"]).read_text())
    changed = change(bundle)
    path = Path(logged["tmp"]) / "variant.json"
    path.write_text(json.dumps(bundle if changed is None else changed))
    return str(path)


CASES = {
    "binary public key file": (lambda g: ["trace", "verify", "--path", g["log"], "--public-key", g["binary"]],
                               "--public-key", "not a text file"),
    "binary witness key file": (lambda g: ["trace", "verify", "--path", g["log"], "--witness", g["binary"]],
                                "binary.key", "not a readable text file"),
    "witness key of the wrong type": (lambda g: ["trace", "verify", "--path", g["log"], "--witness", g["vkey"]],
                                      "witness key", "0x04"),
    "quorum without witnesses": (lambda g: ["trace", "verify", "--path", g["log"], "--quorum", "1"], "quorum", "witness"),
    "quorum above the witnesses": (lambda g: ["trace", "verify", "--path", g["log"], "--witness",
                                              "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2", "--quorum", "2"],
                                   "quorum", None),
    "prove --out into a missing folder": (lambda g: ["trace", "prove", "--index", "1", "--path", g["log"], "--out",
                                                     str(Path(g["tmp"]) / "no" / "such" / "p.json")], "does not exist", None),
    "prove --out at a folder": (lambda g: ["trace", "prove", "--index", "1", "--path", g["log"], "--out", g["tmp"]],
                                "a folder", None),
    "check a binary file": (lambda g: ["trace", "check", g["binary"], "--public-key", g["vkey"]], "not a text file", None),
    "check a folder": (lambda g: ["trace", "check", g["tmp"], "--public-key", g["vkey"]], "a folder", None),
    "check a missing file": (lambda g: ["trace", "check", g["tmp"] + "/nope.json", "--public-key", g["vkey"]],
                             "cannot be read", None),
    # a probe's FIFO held these commands forever and /dev/zero was read until memory ran out
    "check a FIFO": (lambda g: ["trace", "check", _fifo(g), "--public-key", g["vkey"]], "cannot be read", "a FIFO"),
    "check /dev/zero": (lambda g: ["trace", "check", "/dev/zero", "--public-key", g["vkey"]], "a device", None),
    "a public key file that is a FIFO": (lambda g: ["trace", "verify", "--path", g["log"], "--public-key", _fifo(g)],
                                         "--public-key", "a FIFO"),
    "a manifest in the log that is a FIFO": (lambda g: ["trace", "verify", "--path", _log_with_fifo(g, "manifest"), "--no-state"],
                                             "manifest.json is a FIFO", None),
    "a tree.bin in the log that is /dev/zero": (lambda g: ["trace", "verify", "--path", _log_with_fifo(g, "tree"), "--no-state"],
                                                "tree.bin is a device", None),
    "check a JSON list": (lambda g: ["trace", "check", _proof_variant(g, lambda b: [b]), "--public-key", g["vkey"]],
                          "a proof bundle is a JSON object, got list", None),
    "check a non-hex hash": (lambda g: ["trace", "check", _proof_variant(g, lambda b: b.update(record_hash="zz" * 32)),
                                        "--public-key", g["vkey"]], "'record_hash' must be 64 hex digits", None),
    "check a non-hex proof node": (lambda g: ["trace", "check", _proof_variant(g, lambda b: b.update(proof=["xyz"])),
                                              "--public-key", g["vkey"]], "'proof' item 0 must be 64 hex digits", None),
    "check a non-string record": (lambda g: ["trace", "check", _proof_variant(g, lambda b: b.update(record_json={"a": 1})),
                                             "--public-key", g["vkey"]], "'record_json' must be str", None),
    "check a string index": (lambda g: ["trace", "check", _proof_variant(g, lambda b: b.update(index="3")),
                                        "--public-key", g["vkey"]], "'index' must be int", None),
    "check without a checkpoint": (lambda g: ["trace", "check", _proof_variant(g, lambda b: b.pop("checkpoint") and None),
                                              "--public-key", g["vkey"]], "has no 'checkpoint'", None),
    "erase --path at a file": (lambda g: ["trace", "erase", "--subject", "user1", "--path", g["binary"]],
                               "is a file, not a trace log folder", None),
    "erase on a mistyped path": (lambda g: ["trace", "erase", "--subject", "user1", "--path", g["log"] + "-typo"],
                                 "there is no trace log", None),
    "why --at nan": (lambda g: ["trace", "why", "--item", "item1", "--subject", "user1", "--path", g["log"], "--at", "nan"],
                     "--at 'nan' is not a time", None),
    "why --at 1e400": (lambda g: ["trace", "why", "--item", "item1", "--subject", "user1", "--path", g["log"], "--at", "1e400"],
                       "--at '1e400' is not a time", None),
    "why --at -1": (lambda g: ["trace", "why", "--item", "item1", "--subject", "user1", "--path", g["log"], "--at", "-1"],
                    "--at '-1' is not a time", None),
    "stats --since inf": (lambda g: ["trace", "stats", "--path", g["log"], "--since", "inf"], "--since 'inf'", None),
    "verify --state at a folder": (lambda g: ["trace", "verify", "--path", g["log"], "--state", g["tmp"]], "--state", "folder"),
    "witness serve without a witness": (lambda g: ["trace", "witness", "serve", "--dir", g["tmp"] + "/none"],
                                        "holds no witness", None),
    "witness serve with a bad address": (lambda g: ["trace", "witness", "serve", "--dir", g["tmp"], "--listen", "nowhere"],
                                         "HOST:PORT", None),
    "witness serve on a superscript port": (lambda g: ["trace", "witness", "serve", "--dir", g["tmp"], "--listen", "h:\u00b2"],
                                            "HOST:PORT", None),
    "cosign without witness keys' file": (lambda g: ["trace", "cosign", "--path", g["log"], "--witness", "http://127.0.0.1:9",
                                                     "--witness-key", g["binary"]], "not a readable text file", None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(capsys, logged, case) -> None:
    argv, first, second = CASES[case]
    before = sorted(str(p) for p in Path(logged["tmp"]).rglob("*"))
    code, err = _run(capsys, *argv(logged))
    assert code == 2, (case, err)
    assert err.startswith("error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert first in err and (second is None or second in err), err
    after = sorted(str(p) for p in Path(logged["tmp"]).rglob("*") if "variant.json" not in str(p))
    assert after == [p for p in before if "variant.json" not in p], "bad input must change nothing"


def test_ids_with_nul_are_stored_and_found_unchanged(tmp_path):
    """The guard takes ids with NUL bytes because the trace does (one rule for both parts): such
    a decision is appended, found by why with the same ids, and the log verifies."""
    import dataclasses

    decisions = [dataclasses.replace(d, item_id="it\x00em", subject_id="u\x00ser", request_id="r\x00q")
                 for d in make_decisions(3)]
    with TraceLog.open(tmp_path / "log") as log:
        log.append(decisions)
        found = log.why("it\x00em", "u\x00ser")
        assert found["index"] == 2 and found["request_id"] == "r\x00q"
        assert log.why("it", "u\x00ser") is None or log.why("it", "u\x00ser").get("index") != 2
        assert log.verify().ok
