"""Witnessed checkpoints: the C2SP formats checked against the specs' own examples and a real
cosignature from a public witness, the tlog-witness add-checkpoint rules one by one, and witnesses
run as separate processes over HTTP, cosigning a growing log that verify then requires."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trace_helpers import make_decisions

from assay.cli.main import main
from assay.errors import BadInput
from assay.trace import TraceLog, merkle
from assay.trace.checkpoint import Checkpoint, Signer, Verifier
from assay.trace.witness import (
    SIZE_CONTENT_TYPE,
    CosignatureVerifier,
    Witness,
    add_checkpoint_request,
    count_cosignatures,
    parse_request,
    split_note,
)

# c2sp.org/signed-note, "Example": this verifier key verifies this note.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = ("This is an example message.\n\n"
             "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")

# A checkpoint of a public CT log (the transparency.dev "arche2025h1" staging log) as published
# with its cosignatures, and the cosignature key the witness remora.n621.de publishes (key id
# da77ade7, as in transparency-dev/formats' tests): an independent implementation's output.
PUBLIC_BODY = "arche2025h1.staging.ct.transparency.dev\n1432088532\nU7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n"
REMORA_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
REMORA_LINE = ("\u2014 remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/"
               "zZ0WBxtqB0DrAWfBw==")
OTHER_LINES = ("\u2014 transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVk"
               "jZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==\n"
               "\u2014 witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbq"
               "mNWVuE0tgh0XwzdZsDsUAQ==\n")


def test_signed_note_spec_example() -> None:
    verifier = Verifier.parse(SPEC_VKEY)
    assert verifier.public_key.hex() == "e932791ae6e7a840a46164c904786426d5e7821dd8b29a00d61cae72afdd4da4"
    assert verifier.verify_note(SPEC_NOTE) == "This is an example message.\n"
    with pytest.raises(Exception, match="does not verify"):
        verifier.verify_note(SPEC_NOTE.replace("example message", "example massage"))
    body, signatures = split_note(SPEC_NOTE)
    assert body == "This is an example message.\n" and signatures[0][0] == "example.com/foo"
    assert signatures[0][1][:4].hex() == "530d903a"


def test_a_real_public_witness_cosignature_verifies() -> None:
    witness = CosignatureVerifier.parse(REMORA_VKEY)
    assert witness.key_id.hex() == "da77ade7" and witness.vkey() == REMORA_VKEY
    valid, problems = count_cosignatures(PUBLIC_BODY, OTHER_LINES + REMORA_LINE + "\n", [witness])
    assert problems == [] and valid == [("remora.n621.de", 1779573024)]  # other witnesses' lines ignored
    clobbered = PUBLIC_BODY.replace("1432088532", "42")
    valid, problems = count_cosignatures(clobbered, REMORA_LINE, [witness])
    assert valid == [] and "does not verify" in problems[0]
    with pytest.raises(BadInput, match="key id 00000000 does not match"):
        CosignatureVerifier.parse(REMORA_VKEY.replace("da77ade7", "00000000"))
    with pytest.raises(BadInput, match="type byte 0x04"):
        CosignatureVerifier.parse("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")


def test_our_cosignatures_follow_the_format(tmp_path) -> None:
    witness = Witness.init(tmp_path / "w", "witness.example/w1")
    line = witness.cosigner.cosign(PUBLIC_BODY, timestamp=1679315147)
    name, blob = split_note("x\n\n" + line)[1][0]
    assert name == "witness.example/w1" and len(blob) == 4 + 8 + 64
    assert blob[:4] == witness.verifier.key_id and int.from_bytes(blob[4:12], "big") == 1679315147
    # The signed message, as tlog-cosignature spells it, verified with the raw public key.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    message = b"cosignature/v1\ntime 1679315147\n" + PUBLIC_BODY.encode()
    Ed25519PublicKey.from_public_bytes(witness.verifier.public_key).verify(blob[12:], message)
    vkey = witness.verifier.vkey()
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04 and CosignatureVerifier.parse(vkey) == witness.verifier


def test_the_spec_example_request_parses() -> None:
    request = ("old 20852014\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\njrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
               "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\n"
               "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
               "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
               "\u2014 example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n")
    old, proof, note = parse_request(request.encode())
    assert old == 20852014 and len(proof) == 4 and note.startswith("example.com/behind-the-sofa\n20852163\n")
    assert len(split_note(note)[1]) == 2


# ---------------------------------------------------------------- add-checkpoint, rule by rule


@pytest.fixture
def setup(tmp_path):
    with TraceLog.open(tmp_path / "log") as log:
        log.append(make_decisions(10))
        log.append(make_decisions(10, start=10))
        notes = {size: log._read(f"checkpoints/{size:020d}.note").decode() for size in (10, 20)}
        proof = [bytes.fromhex(h) for h in log.prove_consistency(10, 20)["proof"]]
        vkey = log.verifier.vkey()
    witness = Witness.init(tmp_path / "w", "witness.example/w1")
    witness.add_log(vkey)
    return witness, notes, proof


def test_add_checkpoint_rules(setup, tmp_path) -> None:
    witness, notes, proof = setup
    first = witness.add_checkpoint(add_checkpoint_request(0, [], notes[10]))
    assert first.status == 200 and first.body.startswith("\u2014 witness.example/w1 ")
    valid, _ = count_cosignatures(split_note(notes[10])[0], first.body, [witness.verifier])
    assert valid and valid[0][1] >= int(time.time()) - 60
    assert witness.latest("assay.local/trace")[0].size == 10  # persisted

    conflict = witness.add_checkpoint(add_checkpoint_request(0, [], notes[20]))
    assert (conflict.status, conflict.body, conflict.content_type) == (409, "10\n", SIZE_CONTENT_TYPE)
    bad_proof = witness.add_checkpoint(add_checkpoint_request(10, [b"\x00" * 32, *proof[1:]], notes[20]))
    assert bad_proof.status == 422 and "does not verify" in bad_proof.body
    assert witness.add_checkpoint(add_checkpoint_request(10, proof, notes[20])).status == 200
    assert witness.latest("assay.local/trace")[0].size == 20
    # Never back: an older checkpoint, or the old size claimed again.
    assert witness.add_checkpoint(add_checkpoint_request(10, [], notes[10])).status == 409
    assert witness.add_checkpoint(add_checkpoint_request(20, [], notes[10])).status == 400  # old > size
    assert witness.add_checkpoint(add_checkpoint_request(20, [], notes[20])).status == 200  # same tree: re-cosigned

    forger = Signer.load_or_create(tmp_path / "forger.key", "assay.local/trace")
    forged = Checkpoint("assay.local/trace", 30, b"\x07" * 32, 1.0).sign(forger)
    assert witness.add_checkpoint(add_checkpoint_request(20, [], forged)).status == 403
    body, _ = split_note(notes[20])
    altered = notes[20].replace(body.split("\n")[2], base64.b64encode(b"\x01" * 32).decode())
    assert witness.add_checkpoint(add_checkpoint_request(20, [], altered)).status == 403
    stranger = Checkpoint("other.example/log", 5, b"\x07" * 32, 1.0).sign(Signer.load_or_create(tmp_path / "o.key", "other.example/log"))
    assert witness.add_checkpoint(add_checkpoint_request(0, [], stranger)).status == 404
    for request in (b"old 01\n\n" + notes[20].encode(), b"new 0\n\n" + notes[20].encode(), b"old 0\nnot-base64!\n\n",
                    b"old 0\n" + b"AAAA\n" + b"\n" + notes[20].encode(), b"\xff\xfe", b"old 0\n" + b"x" * 70_000,
                    ("old 0\n" + "A" * 43 + "=\n" * 64 + "\n").encode()):
        assert witness.add_checkpoint(request).status == 400, request[:40]
    assert witness.latest("assay.local/trace")[0].size == 20  # nothing above changed the state


def test_size_zero_and_empty_proof_rules(tmp_path) -> None:
    signer = Signer.load_or_create(tmp_path / "k.key", "zero.example/log")
    witness = Witness.init(tmp_path / "w", "witness.example/w1")
    witness.add_log(signer.verifier.vkey())
    empty = Checkpoint("zero.example/log", 0, merkle.EMPTY_ROOT).sign(signer)
    wrong = Checkpoint("zero.example/log", 0, b"\x01" * 32).sign(signer)
    assert witness.add_checkpoint(add_checkpoint_request(0, [], wrong)).status == 422
    assert witness.add_checkpoint(add_checkpoint_request(0, [b"\x01" * 32], empty)).status == 422
    assert witness.add_checkpoint(add_checkpoint_request(0, [], empty)).status == 200


def test_sizes_that_are_not_ascii_decimal_below_2_64_are_a_400_over_http(tmp_path) -> None:
    """A fuzz probe: 'old \u00b2' (str.isdigit is true for a superscript, int refuses it), 5,000
    digits (int refuses over 4,300) and the same in the checkpoint's size line were 500s; digits
    of other scripts ('old \u0665' is 5 to int) were cosigned; a size past 2^64 was accepted."""
    from starlette.testclient import TestClient

    from assay.trace.witness import create_app

    signer = Signer.load_or_create(tmp_path / "k.key", "size.example/log")
    witness = Witness.init(tmp_path / "w", "witness.example/w1")
    witness.add_log(signer.verifier.vkey())

    def note(size: str) -> str:
        return signer.sign_note(f"size.example/log\n{size}\n{base64.b64encode(bytes(32)).decode()}\n")

    client = TestClient(create_app(witness), raise_server_exceptions=False)
    assert client.post("/add-checkpoint", content=f"old 0\n\n{note('5')}".encode()).status_code == 200
    for old, size in (("\u00b2", "5"), ("9" * 5000, "5"), ("\u0665", "5"), (str(1 << 64), "5"),
                      ("5", "\u00b2"), ("5", "9" * 5000), ("5", "\u0667"), ("0", str(1 << 64))):
        answer = client.post("/add-checkpoint", content=f"old {old}\n\n{note(size)}".encode())
        assert answer.status_code == 400, (old[:8], size[:8], answer.status_code)
        assert "size" in answer.text and "Traceback" not in answer.text
    assert witness.latest("size.example/log")[0].size == 5  # nothing above changed the state
    biggest = client.post("/add-checkpoint", content=f"old 5\n\n{note(str((1 << 64) - 1))}".encode())
    assert biggest.status_code == 422  # parsed (the largest uint64); only the empty proof is wrong


# ---------------------------------------------------------------- witnesses as separate processes


def _start(folder: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-m", "assay.cli.main", "trace", "witness", "serve", "--dir", str(folder),
                                "--listen", "127.0.0.1:0", "--prefix", "/w"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise AssertionError(f"the witness did not start: {line}{process.stdout.read()}")
    return process, line.split("listening on ")[1].split()[0]


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_witnesses_in_their_own_processes(tmp_path, capsys) -> None:
    with TraceLog.open(tmp_path / "log") as log:
        log.append(make_decisions(20))
        vkey = log.verifier.vkey()
    root = str(tmp_path / "log")
    keys = []
    for name in ("w1", "w2"):
        assert _cli(capsys, "trace", "witness", "init", "--dir", str(tmp_path / name), "--name", f"witness.test/{name}")[0] == 0
        (tmp_path / f"{name}.vkey").write_text(_cli(capsys, "trace", "witness", "key", "--dir", str(tmp_path / name))[1])
        keys.append(str(tmp_path / f"{name}.vkey"))
        assert _cli(capsys, "trace", "witness", "add-log", "--dir", str(tmp_path / name), "--public-key", vkey)[0] == 0
    (p1, url1), (p2, url2) = _start(tmp_path / "w1"), _start(tmp_path / "w2")
    try:
        code, _, err = _cli(capsys, "trace", "verify", "--path", root, "--witness", keys[0])
        assert code == 1 and "no checkpoint carries 1 valid cosignatures" in err
        code, out, _ = _cli(capsys, "trace", "cosign", "--path", root, "--witness", url1, "--witness-key", keys[0],
                            "--witness-key", keys[1])
        assert code == 0 and "cosigned size 20" in out
        assert _cli(capsys, "trace", "verify", "--path", root, "--witness", keys[0])[0] == 0
        code, _, err = _cli(capsys, "trace", "verify", "--path", root, "--witness", keys[0], "--witness", keys[1], "--quorum", "2")
        assert code == 1 and "no checkpoint carries 2 valid cosignatures" in err

        # The log grows: each witness gets a consistency proof from the size it cosigned.
        with TraceLog.open(root) as log:
            log.append(make_decisions(15, start=20))
        code, out, _ = _cli(capsys, "trace", "cosign", "--path", root, "--witness", url1, "--witness", url2,
                            "--witness-key", keys[0], "--witness-key", keys[1], "--json")
        assert code == 0 and "cosigned" in out
        code, out, _ = _cli(capsys, "trace", "verify", "--path", root, "--witness", keys[0], "--witness", keys[1],
                            "--quorum", "2", "--json")
        assert code == 0 and '"witnessed_size": 35' in out
        # A proof carries the cosignatures: a third party checks the quorum offline.
        proof = tmp_path / "p.json"
        assert _cli(capsys, "trace", "prove", "--index", "30", "--path", root, "--out", str(proof))[0] == 0
        code, out, _ = _cli(capsys, "trace", "check", str(proof), "--public-key", vkey, "--witness", keys[0],
                            "--witness", keys[1], "--quorum", "2")
        assert code == 0 and "witnessed by witness.test/w1, witness.test/w2" in out

        # A forked history (same key, other records) is refused by a witness that saw the real one.
        fork = tmp_path / "fork"
        with TraceLog.open(fork) as forked:
            for start, n in ((500, 20), (600, 15), (700, 10)):  # checkpoints 20, 35, 45
                forked.append(make_decisions(n, start=start))
        code, out, err = _cli(capsys, "trace", "cosign", "--path", str(fork), "--witness", url1, "--witness-key", keys[0])
        assert code == 1 and "HTTP 422" in out and "does not verify" in out
        assert TraceLog.open(fork, read_only=True).cosignatures(45) == ""
        other = tmp_path / "other-fork"  # no checkpoint at the size the witness knows
        with TraceLog.open(other) as forked:
            forked.append(make_decisions(40, start=800))
        code, out, err = _cli(capsys, "trace", "cosign", "--path", str(other), "--witness", url1, "--witness-key", keys[0])
        assert code == 1 and "has cosigned size 35, which this log has no checkpoint of" in out
    finally:
        for process in (p1, p2):
            process.terminate()
            process.wait(timeout=30)


@pytest.mark.parametrize("kind,words", [("large", "larger than 65536 bytes"), ("slow", "did not arrive within 1 s")])
def test_cosign_reads_a_bounded_answer_from_a_witness(tmp_path, kind, words) -> None:
    """A probe: `assay trace cosign` read a witness's answer without a limit (a witness answering
    10 MB, or without end, filled the log's memory; one answering a byte at a time held it for as
    long as it liked). Now at most 64 KiB within the timeout, else an error for that witness."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from assay.trace.witness import collect

    class Endless(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.end_headers()
            try:
                if kind == "large":
                    self.wfile.write(b"x" * (10 << 20))
                else:
                    for _ in range(40):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.1)
            except OSError:  # the log hung up, as it should
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with TraceLog.open(tmp_path / "log") as log:
            log.append(make_decisions(10))
            witness = Witness.init(tmp_path / "w", "witness.example/w1")
            started = time.monotonic()
            [result] = collect(log, [f"http://127.0.0.1:{server.server_address[1]}"], [witness.verifier], timeout=1.0)
            assert words in result["error"] and "cosigned" not in result, result
            assert time.monotonic() - started < 3.5
    finally:
        server.shutdown()
        server.server_close()
