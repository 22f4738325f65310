"""``assay label``: batch files into a Parquet label store (resumable), and a Redis Streams
consumer into the real Redis label store, with the classifier version recorded."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assay.classify import load_classifier
from assay.classify.labeling import label_batch, label_stream, labeler_version
from assay.cli.main import main
from assay.store.labels import InMemoryLabelStore, RedisLabelStore

TEXTS = [
    "Thanks for the recommendation, I loved this film!",
    "You are a complete idiot and nobody wants you here.",
    "The meeting is moved to Tuesday.",
    "What a wonderful performance by the lead actor.",
]


def test_batch_parquet_into_parquet_store_is_resumable(tmp_path, capsys):
    src = tmp_path / "items.parquet"
    ids = [f"item-{i}" for i in range(len(TEXTS))] + ["item-bad", None]
    pq.write_table(pa.table({"id": ids, "text": [*TEXTS, "", "orphan text"]}), src)
    store_path = tmp_path / "labels.parquet"
    code = main(["label", "--input", str(src), "--store", str(store_path), "--classifiers", "toxicity,hate", "--json"])
    assert code == 0
    first = json.loads(capsys.readouterr().out)
    assert first["labelled"] == len(TEXTS) and first["errors"] == 2
    version = labeler_version({"toxicity": load_classifier("toxicity"), "hate": load_classifier("hate")})
    assert first["version"] == version
    store = InMemoryLabelStore.from_parquet(store_path)
    batch = store.get([f"item-{i}" for i in range(len(TEXTS))], ["toxicity", "hate"])
    assert batch.present["toxicity"].all() and batch.present["hate"].all()
    assert set(batch.versions) == {version}
    assert batch.values["toxicity"][1] > batch.values["toxicity"][0]

    again = label_batch(["toxicity", "hate"], src, str(store_path))
    assert again.labelled == 0 and again.skipped_done == len(TEXTS)


def test_batch_jsonl_skips_only_what_is_done(tmp_path):
    src = tmp_path / "items.jsonl"
    src.write_text("".join(json.dumps({"id": f"i{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    store_path = tmp_path / "labels.parquet"
    half = tmp_path / "half.jsonl"
    half.write_text("".join(json.dumps({"id": f"i{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS[:2])))
    assert label_batch(["toxicity"], half, str(store_path)).labelled == 2
    rest = label_batch(["toxicity"], src, str(store_path))
    assert rest.skipped_done == 2 and rest.labelled == len(TEXTS) - 2


@pytest.mark.redis
def test_stream_consumer_labels_into_redis_and_acks(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    stream = "assay-test-items"
    for i, text in enumerate(TEXTS):
        client.xadd(stream, {"id": f"s{i}", "text": text})
    client.xadd(stream, {"id": "s-bad", "text": b"\xff\xfe not utf-8"})
    # A consumer that died after reading two messages leaves them pending; the restart re-reads them.
    client.xgroup_create(stream, "assay-label", id="0", mkstream=True)
    client.xreadgroup("assay-label", "worker-1", {stream: ">"}, count=2)
    summary = label_stream(["toxicity"], redis_url, stream, redis_url, consumer="worker-1", idle_exit_s=1.0, block_ms=200)
    assert summary.seen == len(TEXTS) + 1
    assert summary.labelled == len(TEXTS) and summary.errors == 1
    store = RedisLabelStore(redis_url, timeout_s=2, connect_timeout_s=2)
    batch = store.get([f"s{i}" for i in range(len(TEXTS))], ["toxicity"])
    assert batch.present["toxicity"].all()
    assert set(batch.versions) == {labeler_version({"toxicity": load_classifier("toxicity")})}
    pending = client.xpending(stream, "assay-label")
    assert pending["pending"] == 0
    store.close()
    client.close()


def test_label_needs_exactly_one_source(tmp_path):
    assert main(["label", "--store", str(tmp_path / "l.parquet")]) == 2
    assert main(["label", "--store", str(tmp_path / "l.parquet"), "--input", str(tmp_path / "missing.jsonl")]) == 2
