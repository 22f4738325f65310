"""``--engine ray`` in the default suite: a local Ray instance runs a small suite against the
stub server and gives the same per-item results and the same report as the asyncio engine; an
address where no Ray cluster answers is exit 3, naming it."""

from __future__ import annotations

import socket

import ray
from test_evaluate_engine import write_suite

from assay.cli.main import main as cli_main
from assay.evaluate.engine import read_results, run_suite

TIMING = ("latency_s", "attempts", "cached")


def per_item(outcome) -> list[dict]:
    records = read_results(outcome.path / "results.jsonl")
    for r in records:
        if r["output"]:
            r["output"] = {k: v for k, v in r["output"].items() if k not in TIMING}
    return sorted(records, key=lambda r: r["id"])


def test_ray_engine_gives_the_same_items_and_report_as_local(tmp_path, stub_server):
    suite = write_suite(tmp_path, stub_server.base_url, "ok", n=40, bad_rows=True)
    try:
        on_ray = run_suite(suite, engine="ray", use_cache=False)
    finally:
        ray.shutdown()
    local = run_suite(suite, use_cache=False)
    strip = lambda r: {k: v for k, v in r.items() if k != "run_id"}  # noqa: E731
    assert on_ray.stats["engine"] == "ray" and local.stats["engine"] == "local"
    assert on_ray.report["counts"]["ok"] == 40 and on_ray.report["counts"]["errors"] == {"invalid": 2}
    assert per_item(on_ray) == per_item(local)
    assert strip(on_ray.report) == strip(local.report)


def test_an_unreachable_ray_cluster_is_exit_3_naming_the_address(tmp_path, stub_server, monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there
    monkeypatch.setenv("ASSAY_RAY_ADDRESS", address)
    suite = write_suite(tmp_path, stub_server.base_url, "ok", n=4)
    assert cli_main(["eval", "run", str(suite), "--engine", "ray", "--no-cache"]) == 3
    err = capsys.readouterr().err
    assert f"Ray cluster at {address} is unreachable" in err, err
    assert not ray.is_initialized()
    monkeypatch.setenv("ASSAY_RAY_ADDRESS", "no-port-here")
    assert cli_main(["eval", "run", str(suite), "--engine", "ray", "--no-cache"]) == 2
    assert "expected host:port" in capsys.readouterr().err
