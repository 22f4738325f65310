"""Registering a trained classifier in the governance registry, with lineage:
public source datasets (whole-folder file manifests) -> training run -> head (sha256 of its
weights and config files) -> evaluation (the held-out test metrics with their intervals).
The response heads (``classify.train``) and the pair heads (``classify.pairs``) go through the
same :func:`register`: both write ``<name>.npz`` and ``<name>.json`` and return a document with
``version``, ``data``, ``split`` and ``test.model`` in the same form.

The same pattern as ``assay.recsys.governance``, through ``govern.registry``'s own functions:
re-registering identical content reuses the existing assets (same content hash), so training
again with the same seed and data adds nothing; a source dataset already registered (say by
``assay register dataset`` or a mitigation run) keeps the terms it was given there.

``classify`` is a foundation and imports the ``govern`` engine only here, lazily, when asked to
register (as ``recsys`` does): without the governance part the classifiers still load and train.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assay.errors import BadInput, Unavailable

# Licence and restriction terms of each public dataset a classifier learns from, as
# ../shared/datasets/README.md states them (used only when the dataset is not registered yet).
SOURCE_TERMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "davidson": ("MIT", ()),
    "toxigen": ("MIT + CDLA-Permissive-2.0 (README: research purposes)", ("research_only",)),
    "do_not_answer": ("CC BY-NC-SA 4.0", ("non_commercial", "share_alike")),
    "jailbreakbench": ("MIT (responses also under the generating models' terms)", ()),
    "cyberseceval": ("MIT", ()),
    "fever": ("CC BY-SA 3.0", ("share_alike",)),
}
SOURCE_PURPOSES = ("research", "safety_evaluation", "safety_classification")
MODEL_PURPOSES = ("safety_classification", "safety_evaluation")
MODEL_FILES = ("{name}.npz", "{name}.json")


def _govern() -> tuple[Any, Any]:
    try:
        from assay.govern import registry
        from assay.store import open_store
    except ImportError as e:  # pragma: no cover - only on trees without the governance part
        raise Unavailable(f"the governance registry is not available ({e})") from e
    return registry, open_store


def source_datasets(doc: dict[str, Any]) -> list[str]:
    """The registry names (``assay.data.DATASETS`` keys) of the folders a metrics document's data
    manifest lists, in name order."""
    from assay.data import DATASETS

    folder_to_name = {folder: name for name, folder in DATASETS.items()}
    names = {folder_to_name.get(Path(path).parts[0]) for path in doc.get("data", {})}
    return sorted(n for n in names if n)


def _dataset(store: Any, registry: Any, actor: Any, name: str) -> dict[str, Any]:
    from assay.data import dataset_path

    folder = dataset_path(name)
    files = registry.file_manifest(folder)
    current = registry.latest(store, f"dataset:{name}")
    if current is not None and current["content_hash"] == registry.manifest_hash(files):
        return current
    licence, restrictions = SOURCE_TERMS.get(name, (None, ()))
    return registry.register_dataset(
        store,
        actor,
        name=name,
        uri=str(folder),
        purposes=list(SOURCE_PURPOSES),
        restrictions=list(restrictions),
        licence=licence,
        files=files,
    )


def head_name(doc: dict[str, Any]) -> str:
    """The trained head's name: ``classifier`` in a response head's metrics document, ``name`` in
    a pair head's."""
    return str(doc.get("classifier") or doc["name"])


def _framework(doc: dict[str, Any]) -> str:
    if doc.get("kind") == "pair":
        return f"pair head (PyTorch-trained, numpy inference) on {doc['encoder']}, {doc['calibration']} calibration"
    return (f"scikit-learn head on {doc['encoder']}{' (LoRA fine-tuned)' if doc.get('finetune') else ''}, "
            f"{doc['calibration']} calibration")


def evaluation_result(doc: dict[str, Any], model_hashes: dict[str, str], dataset_hashes: dict[str, str]) -> dict[str, Any]:
    """The test-split metrics as an ``EvaluationResult`` mapping: the model's precision, recall,
    F1, AUROC with their 95% bootstrap intervals, each baseline's AUROC, and one gate per
    baseline (the model's AUROC is above it)."""
    test = doc["test"]
    model = test["model"]
    metrics: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}
    for key in ("precision", "recall", "f1", "auroc"):
        if isinstance(model.get(key), dict) and model[key].get("value") is not None:
            metrics[key] = float(model[key]["value"])
            intervals[key] = tuple(float(v) for v in model[key]["ci95"])  # type: ignore[assignment]
    if "ece" in model:
        metrics["ece"] = float(model["ece"])
    gates: dict[str, bool] = {}
    for system, values in test.items():
        if system == "model" or not isinstance(values.get("auroc"), dict):
            continue
        metrics[f"baseline_auroc:{system}"] = float(values["auroc"]["value"])
        gates[f"auroc_above:{system}"] = bool(metrics.get("auroc", 0.0) > float(values["auroc"]["value"]))
    n_test = int(doc["split"]["test"]["n"])
    return {
        "run_id": doc["version"].split("sha256:")[-1][:16] + (f"-limit{doc['limit']}" if doc.get("limit") else ""),
        "suite": f"classify-{head_name(doc)}",
        "target": doc["version"],
        "metrics": metrics,
        "intervals": intervals,
        "n": {key: n_test for key in metrics},
        "gate_verdicts": gates,
        "dataset_hashes": dataset_hashes,
        "model_hashes": model_hashes,
        "report_path": "",
    }


def register(doc: dict[str, Any], out_dir: Path | str, *, store: Any | None = None) -> dict[str, Any]:
    """Register a trained head's (response or pair) source datasets, its files (by sha256) with
    the training run from those datasets, and its test evaluation. ``doc`` is the metrics
    document ``train`` returned; ``out_dir`` holds the files it wrote. Returns the asset ids."""
    registry, open_store = _govern()
    store = store or open_store()
    actor = registry.local_actor()
    name = head_name(doc)
    out_dir = Path(out_dir)
    datasets = [_dataset(store, registry, actor, ds) for ds in source_datasets(doc)]
    if not datasets:
        raise BadInput(f"{name}: the metrics document lists no data files from known datasets; nothing to trace lineage to")
    model_files = [f.format(name=name) for f in MODEL_FILES]
    if doc.get("finetune"):  # a head on a fine-tuned encoder: its LoRA adapter is part of the model
        model_files.append(f"{name}.adapter.npz")
    files = registry.file_manifest(out_dir, model_files)
    model_name = f"classifier-{name}"
    model = registry.latest(store, f"model:{model_name}")
    if model is None or model["content_hash"] != registry.manifest_hash(files):
        model = registry.register_model(
            store,
            actor,
            name=model_name,
            files=files,
            uri=str(out_dir.resolve()),
            framework=_framework(doc),
            trained_on=[d["id"] for d in datasets],
            training_run=f"classify-train-{name}",
            purposes=list(MODEL_PURPOSES),
        )
    result = evaluation_result(doc, {f["path"]: f["sha256"] for f in files}, {d["name"]: d["content_hash"] for d in datasets})
    evaluation = registry.latest(store, f"evaluation:{result['suite']}:{result['run_id']}")
    if evaluation is None or evaluation["subject_id"] != model["id"]:
        evaluation = registry.register_evaluation(store, actor, result, model=model["id"])
    return {"datasets": [d["id"] for d in datasets], "model": model["id"], "evaluation": evaluation["id"]}
