"""OpenLineage: the official schemas and example documents, malformed events, assay's own
events, and the real openlineage-python client posting to a running assay server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from assay.govern import openlineage as ol
from assay.govern.registry import Actor, register_dataset, register_model
from assay.store.schema import Asset, Run

ENGINEER = Actor("erin", "engineer", "test")


def _event(**overrides):
    event = {
        "eventType": "COMPLETE", "eventTime": "2026-11-29T19:00:00.000Z", "producer": "https://example.com/etl",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": str(uuid.uuid4())}, "job": {"namespace": "etl", "name": "train"},
        "inputs": [{"namespace": "warehouse", "name": "public.ratings"}],
        "outputs": [{"namespace": "models", "name": "ranker", "facets": {"datasetType": {
            "_producer": "https://example.com/etl",
            "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DatasetTypeDatasetFacet.json",
            "datasetType": "MODEL"}}}],
    }
    event.update(overrides)
    return event


def test_spec_example_facets_validate_and_mutations_do_not(specs_dir):
    validator = ol.validator()
    examples = sorted((specs_dir / "openlineage" / "tests").glob("*/*.json"))
    assert len(examples) >= 25
    checked = 0
    for path in examples:
        facets = json.loads(path.read_text())
        known = {k: v for k, v in facets.items() if k in validator.facets}
        if not known:
            continue
        event = _event(outputs=[{"namespace": "n", "name": "x", "facets": known}]) if "Dataset" in path.parent.name else _event(
            run={"runId": str(uuid.uuid4()), "facets": known}) if "Run" in path.parent.name else _event(
            job={"namespace": "n", "name": "j", "facets": known})
        if path.parent.name.endswith("InputDatasetFacet"):
            event = _event(inputs=[{"namespace": "n", "name": "x", "inputFacets": known}])
        if path.parent.name.endswith("OutputDatasetFacet"):
            event = _event(outputs=[{"namespace": "n", "name": "x", "outputFacets": known}])
        assert validator.errors(event) == [], path
        checked += 1
    assert checked >= 20
    broken = _event(outputs=[{"namespace": "n", "name": "x", "facets": {"datasetType": {
        "_producer": "https://x", "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DatasetTypeDatasetFacet.json"}}}])
    assert any("datasetType" in e and "required" in e for e in validator.errors(broken))


@pytest.mark.parametrize(("mutate", "where"), [
    (lambda e: e.pop("run"), "'run' is a required property"),
    (lambda e: e.update(eventType="EXPLODED"), ".eventType"),
    (lambda e: e["run"].update(runId="not-a-uuid"), ".run.runId"),
    (lambda e: e.update(eventTime="yesterday"), ".eventTime"),
    (lambda e: e["inputs"][0].pop("name"), ".inputs[0]"),
    (lambda e: e["outputs"][0]["facets"].update(assay_governance={
        "_producer": "https://x", "_schemaURL": "https://x/s.json", "version": "1-0-0",
        "purposes": ["Not A Term"], "restrictions": []}), "assay_governance.purposes[0]"),
])
def test_malformed_events_are_refused_with_the_place(sqlite_store, mutate, where):
    event = _event()
    mutate(event)
    with pytest.raises(ol.InvalidEvent) as e:
        ol.ingest(sqlite_store, ENGINEER, event)
    assert any(where in err for err in e.value.errors), e.value.errors
    with sqlite_store.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Asset)) == 0


def test_ingest_makes_versions_and_reuses_them_within_a_run(sqlite_store):
    start = _event(eventType="START")
    complete = dict(start, eventType="COMPLETE")
    ol.ingest(sqlite_store, ENGINEER, start)
    run = ol.ingest(sqlite_store, ENGINEER, complete)
    assert run["outputs"] == ["model:models/ranker@1"] and run["state"] == "COMPLETE"
    second = ol.ingest(sqlite_store, ENGINEER, _event())
    assert second["outputs"] == ["model:models/ranker@2"]
    assert second["inputs"] == ["dataset:warehouse/public.ratings@1"]  # inputs resolve to the latest version


def test_assay_events_validate_and_carry_custom_facets(sqlite_store, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("x\n")
    w = tmp_path / "m.bin"
    w.write_bytes(b"m")
    ds = register_dataset(sqlite_store, ENGINEER, name="d", uri=str(data), purposes=["research"], restrictions=["research_only"])
    register_model(sqlite_store, ENGINEER, name="m", weights=[w], trained_on=[ds["id"]])
    with sqlite_store.session() as s:
        run_id = s.scalar(sa.select(Run.id))
    event = ol.run_event(sqlite_store, run_id)
    ol.validate(event)
    out = event["outputs"][0]["facets"]
    assert out["datasetType"]["datasetType"] == "MODEL"
    assert out["assay_governance"]["effectiveRestrictions"] == ["research_only"]
    assert out["assay_governance"]["_schemaURL"].endswith("AssayGovernanceDatasetFacet.json#/$defs/AssayGovernanceDatasetFacet")
    path = ol.emit([event])
    assert json.loads(Path(path).read_text().splitlines()[-1])["run"]["runId"] == event["run"]["runId"]


def test_custom_facet_schemas_are_valid_json_schema():
    from jsonschema import Draft202012Validator

    for key in ol.CUSTOM_FACETS:
        schema = ol.custom_facet_schema(key)
        Draft202012Validator.check_schema(schema)
        assert key in schema["properties"] and "1-0-0" in json.dumps(schema)


def test_the_real_openlineage_client_posts_to_assay(sqlite_store, serve_asgi):
    from openlineage.client import OpenLineageClient
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, RunEvent, RunState
    from openlineage.client.event_v2 import Run as OLRun
    from openlineage.client.facet_v2 import dataset_type_dataset
    from openlineage.client.transport.http import (
        ApiKeyTokenProvider,
        HttpCompression,
        HttpConfig,
        HttpTransport,
    )

    from assay.server.app import create_app
    from assay.server.auth import create_token

    token = create_token(sqlite_store, Actor("root", "admin"), name="pipeline", role="engineer")["token"]
    with serve_asgi(create_app(sqlite_store)) as port:
        for compression in (None, HttpCompression.GZIP):
            client = OpenLineageClient(transport=HttpTransport(HttpConfig(
                url=f"http://127.0.0.1:{port}", auth=ApiKeyTokenProvider({"apiKey": token}), compression=compression)))
            client.emit(RunEvent(
                eventType=RunState.COMPLETE, eventTime="2026-11-29T19:00:00+00:00",
                run=OLRun(runId=str(uuid.uuid4())), job=Job(namespace="spark", name="train-ranker"),
                inputs=[InputDataset(namespace="s3://lake", name="ratings")],
                outputs=[OutputDataset(namespace="s3://models", name="ranker", facets={
                    "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(datasetType="MODEL")})],
                producer="https://github.com/OpenLineage/OpenLineage/tree/1.54.0/client/python"))
        bad = OpenLineageClient(transport=HttpTransport(HttpConfig(
            url=f"http://127.0.0.1:{port}", auth=ApiKeyTokenProvider({"apiKey": "assay_wrong"}))))
        with pytest.raises(Exception, match="401"):
            bad.emit(RunEvent(eventType=RunState.START, eventTime="2026-11-29T19:00:00+00:00",
                              run=OLRun(runId=str(uuid.uuid4())), job=Job(namespace="x", name="y"),
                              producer="https://example.com"))
    with sqlite_store.session() as s:
        models = s.scalars(sa.select(Asset.id).where(Asset.kind == "model").order_by(Asset.id)).all()
        runs = s.scalars(sa.select(Run).where(Run.job_name == "train-ranker")).all()
    assert models == ["model:s3://models/ranker@1", "model:s3://models/ranker@2"]
    assert len(runs) == 2 and all(r.created_by == "pipeline" for r in runs)
