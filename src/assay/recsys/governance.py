"""Registering the reference recommender in the governance registry, with lineage:
dataset (file manifest) -> training run -> model (sha256 of every model file) -> evaluation.

Re-registering identical content reuses the existing assets (same content hash), so the demo can
run again without piling up versions. ``registered_hashes`` gives the loader the hashes to check
the model files against, so a file swapped after registration is refused at load time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assay.errors import BadInput, Unavailable
from assay.recsys.model import DEFAULT_NAME, MODEL_FILES, Recommender

DATASET_NAME = "movielens-latest-small"
PURPOSES = ("recommendation", "research")
RESTRICTIONS = ("non-commercial",)
LICENCE = "GroupLens MovieLens usage licence (research, non-commercial; cite Harper & Konstan 2015)"


def _govern() -> tuple[Any, Any]:
    try:
        from assay.govern import registry
        from assay.store import open_store
    except ImportError as e:  # pragma: no cover - only on trees without the governance part
        raise Unavailable(f"the governance registry is not available ({e})") from e
    return registry, open_store


def register(
    rec: Recommender,
    folder: Path | str,
    *,
    dataset_folder: Path | str | None = None,
    evaluation: Any | None = None,
    name: str = DEFAULT_NAME,
    store: Any | None = None,
) -> dict[str, Any]:
    """Register the training data, the model files and (optionally) an offline evaluation.
    Returns ``{"dataset": id, "model": id, "evaluation": id | None}``."""
    registry, open_store = _govern()
    store = store or open_store()
    actor = registry.local_actor()
    folder = Path(folder)
    manifest = rec.meta.get("dataset", {}).get("manifest", {})
    if dataset_folder is None:
        if not manifest:
            raise BadInput("the model records no dataset manifest; pass dataset_folder")
        dataset_folder = Path(next(iter(manifest))).parent
    ds_files = registry.file_manifest(Path(dataset_folder))
    ds = registry.latest(store, f"dataset:{DATASET_NAME}")
    if ds is None or ds["content_hash"] != registry.manifest_hash(ds_files):
        ds = registry.register_dataset(
            store,
            actor,
            name=DATASET_NAME,
            uri=str(dataset_folder),
            purposes=list(PURPOSES),
            restrictions=list(RESTRICTIONS),
            licence=LICENCE,
            files=ds_files,
        )
    model_files = registry.file_manifest(folder, list(MODEL_FILES))
    model = registry.latest(store, f"model:{name}")
    if model is None or model["content_hash"] != registry.manifest_hash(model_files):
        model = registry.register_model(
            store,
            actor,
            name=name,
            files=model_files,
            uri=str(folder.resolve()),
            framework="implicit ALS + LightGBM LambdaMART",
            trained_on=[ds["id"]],
            training_run=f"train-{name}",
            purposes=["recommendation"],
            restrictions=list(RESTRICTIONS),
            licence=LICENCE,
        )
    out: dict[str, Any] = {"dataset": ds["id"], "model": model["id"], "evaluation": None}
    if evaluation is not None:
        result = evaluation.result(rec, {f["path"]: f["sha256"] for f in model_files})
        result = type(result)(
            **{**result.to_dict(), "dataset_hashes": {DATASET_NAME: ds["content_hash"]}}
        )
        out["evaluation"] = registry.register_evaluation(store, actor, result, model=model["id"])[
            "id"
        ]
    return out


def registered_hashes(name: str = DEFAULT_NAME, store: Any | None = None) -> dict[str, str] | None:
    """``{file name: sha256}`` of the latest registered version of the model, or None when the
    model is not registered (or the registry is not available)."""
    try:
        registry, open_store = _govern()
    except Unavailable:
        return None
    store = store or open_store()
    model = registry.latest(store, f"model:{name}")
    if model is None:
        return None
    return {Path(f["path"]).name: f["sha256"] for f in model.get("files", [])}
