"""Registry side of a mitigation: check the base model's registration, register the source
datasets, the mitigation dataset, the fine-tuned weights (by sha256) with lineage to the base
model and the data, the before/after evaluation, and submit the model to the deployment gate.

Everything goes through ``assay.govern`` (registry and gate), so purposes and restrictions of
the data propagate to the model the way they do for any other asset: a model trained on
research-only or non-commercial data inherits that restriction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assay.errors import BadInput
from assay.mitigate.dataset import SOURCE_TERMS
from assay.mitigate.model import ModelSource

# Purposes given to a public source dataset that is not registered yet (what its licence and
# its authors intend it for); registering it yourself first overrides these.
DEFAULT_SOURCE_PURPOSES = ("research", "safety_evaluation", "safety_finetuning")
DEFAULT_DATA_PURPOSES = ("research", "safety_finetuning")
DEFAULT_BASE_PURPOSES = ("research", "safety_evaluation", "safety_finetuning")


def _store() -> Any:
    from assay.store import open_store

    return open_store()


def _actor() -> Any:
    from assay.govern.registry import local_actor

    return local_actor()


def _files_of(store: Any, ref: str, kind: str) -> tuple[str, dict[str, str]]:
    from assay.govern.registry import asset_view, resolve

    with store.session() as s:
        view = asset_view(s, resolve(s, ref, kind))
    return view["id"], {Path(f["path"]).name: f["sha256"] for f in view["files"]}


def check_base_registration(source: ModelSource, base_id: str | None = None, purposes: list[str] | None = None) -> str:
    """The registry id of the base model, registering it when it is not there yet (with
    ``purposes``: a lineage root's purposes bound everything derived from it; register the base
    model yourself first to decide them).

    With ``base_id`` (or an existing registration under the model's own name) the weights on disk
    must hash exactly to the registered ones; a mismatch is a ``BadInput`` naming both hashes."""
    from assay.govern.registry import NotFound, register_model

    store = _store()
    name = source.display_name
    ref = base_id or f"model:{name}"
    try:
        asset_id, registered = _files_of(store, ref, "model")
    except NotFound:
        if base_id:
            raise
        view = register_model(
            store,
            _actor(),
            name=name,
            weights=source.weight_files,
            framework="gguf" if source.kind == "gguf" else "transformers",
            purposes=purposes or list(DEFAULT_BASE_PURPOSES),
        )
        return view["id"]
    actual = source.hashes()
    if set(actual.values()) != set(registered.values()):
        detail = "; ".join(f"{n}: on disk {actual.get(n, 'missing')[:16]}…, registered {h[:16]}…" for n, h in sorted(registered.items()))
        raise BadInput(
            f"base model {source.path} does not match its registration {asset_id}: hash mismatch ({detail})",
            hint="use the registered weights, or register these weights as a new model version first",
        )
    return asset_id


def ensure_source_datasets(sources: list[str]) -> list[str]:
    """Registry ids of the public datasets the mitigation data came from (registered if needed)."""
    from assay.data import dataset_path
    from assay.govern.registry import NotFound, register_dataset

    store = _store()
    ids = []
    for name in sources:
        try:
            asset_id, _ = _files_of(store, f"dataset:{name}", "dataset")
        except NotFound:
            terms = SOURCE_TERMS.get(name, {"license": None, "restrictions": []})
            asset_id = register_dataset(
                store,
                _actor(),
                name=name,
                uri=str(dataset_path(name)),
                purposes=DEFAULT_SOURCE_PURPOSES,
                restrictions=terms["restrictions"],
                licence=terms["license"],
            )["id"]
        ids.append(asset_id)
    return ids


def register_mitigation(
    *,
    run_id: str,
    base_id: str,
    data_dir: Path,
    manifest: dict[str, Any],
    merged_dir: Path,
    model_name: str,
    purposes: list[str] | None = None,
    restrictions: list[str] | None = None,
) -> dict[str, Any]:
    """Register the mitigation dataset (derived from its sources) and the merged weights (trained
    on it and on the base model). Returns the ids and the model's effective terms."""
    from assay.govern.lineage import show
    from assay.govern.registry import record_run, register_dataset, register_model

    store = _store()
    actor = _actor()
    source_ids = ensure_source_datasets(sorted(manifest.get("sources", {})))
    data_restrictions = sorted(set(manifest.get("restrictions", [])) | set(restrictions or []))
    dataset = register_dataset(
        store,
        actor,
        name=f"mitigation-data-{run_id}",
        uri=str(data_dir),
        purposes=purposes or list(DEFAULT_DATA_PURPOSES),
        restrictions=data_restrictions,
    )
    if source_ids:
        record_run(store, actor, job_name=f"mitigate-build-data-{run_id}", inputs=source_ids, outputs=[dataset["id"]])
    weights = sorted(p for p in merged_dir.iterdir() if p.suffix == ".safetensors")
    if not weights:
        raise BadInput(f"no safetensors weights in {merged_dir}; export the merged model first")
    model = register_model(
        store,
        actor,
        name=model_name,
        weights=weights,
        uri=str(merged_dir),
        framework="transformers (LoRA merged, safetensors)",
        trained_on=[dataset["id"], base_id],
        training_run=f"mitigate-{run_id}",
    )
    effective = show(store, model["id"])["effective"]
    return {
        "model": model["id"],
        "model_files": {f["path"]: f["sha256"] for f in model["files"]},
        "dataset": dataset["id"],
        "dataset_hash": dataset["content_hash"],
        "sources": source_ids,
        "base": base_id,
        "effective": effective,
    }


def register_evaluation_and_submit(
    *,
    run_id: str,
    model_id: str,
    model_hashes: dict[str, str],
    dataset_name: str,
    dataset_hash: str,
    metrics: dict[str, float],
    intervals: dict[str, tuple[float, float]],
    n: dict[str, int],
    gate_verdicts: dict[str, bool],
    bundle_path: Path,
    surface: str,
    purpose: str,
    environment: str,
    report_path: str = "",
) -> dict[str, Any]:
    """Record the before/after evaluation against the registered weights, request a deployment
    under ``bundle_path`` and run the deployment gate on it (the verdict is recorded)."""
    from assay.govern.gate import check_deployment, request_deployment
    from assay.govern.registry import register_evaluation
    from assay.records import EvaluationResult

    store = _store()
    actor = _actor()
    result = EvaluationResult(
        run_id=f"mitigation-{run_id}",
        suite="mitigation-heldout",
        target=model_id,
        metrics=metrics,
        intervals=intervals,
        n=n,
        gate_verdicts=gate_verdicts,
        dataset_hashes={dataset_name: dataset_hash},
        model_hashes=model_hashes,
        report_path=report_path,
    )
    evaluation = register_evaluation(store, actor, result, model=model_id)
    deployment = request_deployment(
        store, actor, model=model_id, surface=surface, purpose=purpose, bundle=bundle_path, environment=environment
    )
    verdict = check_deployment(store, actor, deployment["id"])
    return {"evaluation": evaluation["id"], "deployment": deployment["id"], "verdict": verdict}
