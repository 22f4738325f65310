"""The reference recommender the demo and the tests audit: ALS retrieval and a LightGBM
LambdaMART ranker on MovieLens, with hash-checked model files and registry lineage. See
docs/recsys.md.

    from assay.recsys import load_served, train_and_save
    rec = load_served()                     # refuses files whose hashes the registry does not know
    rec.recommend(user_id=1, k=10)

Names are imported lazily so that ``assay.recsys.cli`` (and ``assay --help``) stay cheap.
"""

from __future__ import annotations

from assay import lazy_exports

_EXPORTS = {
    "ModelIntegrityError": "assay.recsys.model",
    "Recommender": "assay.recsys.model",
    "Slate": "assay.recsys.model",
    "TrainConfig": "assay.recsys.model",
    "train": "assay.recsys.model",
    "Evaluation": "assay.recsys.evaluation",
    "evaluate": "assay.recsys.evaluation",
    "registered_hashes": "assay.recsys.governance",
    "safety_labels": "assay.recsys.labels",
    "write_labels": "assay.recsys.labels",
    "load_dataset": "assay.recsys.pipeline",
    "load_served": "assay.recsys.pipeline",
    "train_and_save": "assay.recsys.pipeline",
    "temporal_split": "assay.recsys.split",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
