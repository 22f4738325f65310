"""Item safety labels for the demo, derived from MovieLens metadata (genres and user tags).

These are *heuristic metadata labels*, not human content ratings: MovieLens has no MPAA rating.
Each label is a number in [0, 1] combined as a noisy-OR of evidence weights,
``1 - prod(1 - w)``, over the film's genres and the tags users applied to it. They exist so the
guard has realistic labels to apply rules to (e.g. ``item.labels.mature >= 0.7`` for minors) and
are documented as such in docs/recsys.md. The weights are in :data:`GENRE_WEIGHTS` and
:data:`TAG_WEIGHTS`; a tag counts once per film however many users applied it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from assay.data.movielens import MovieLens
from assay.errors import BadInput

LABELS = ("mature", "violence", "drugs", "sexual", "horror")

# label -> genre -> evidence weight
GENRE_WEIGHTS: dict[str, dict[str, float]] = {
    "mature": {"Horror": 0.55, "Thriller": 0.25, "Crime": 0.25, "War": 0.2, "Film-Noir": 0.15},
    "violence": {
        "War": 0.45,
        "Horror": 0.4,
        "Action": 0.25,
        "Crime": 0.3,
        "Thriller": 0.2,
        "Western": 0.2,
    },
    "drugs": {},
    "sexual": {"Romance": 0.05},
    "horror": {"Horror": 0.9, "Thriller": 0.15},
}
# label -> tag substring -> evidence weight (tags are lower-cased; matched as substrings)
TAG_WEIGHTS: dict[str, dict[str, float]] = {
    "mature": {"violence": 0.5, "violent": 0.5, "gore": 0.6, "gory": 0.6, "drugs": 0.45, "drug": 0.4,
               "sexual": 0.55, "sex": 0.45, "nudity": 0.6, "disturbing": 0.4, "brutal": 0.4, "serial killer": 0.4,
               "rape": 0.7, "torture": 0.6, "dark": 0.15, "mafia": 0.2, "suicide": 0.4, "addiction": 0.35},
    "violence": {"violence": 0.7, "violent": 0.7, "gore": 0.6, "gory": 0.6, "brutal": 0.5, "torture": 0.6,
                 "serial killer": 0.5, "war": 0.2, "gangster": 0.3, "mafia": 0.3, "bloody": 0.5, "murder": 0.3},
    "drugs": {"drugs": 0.8, "drug": 0.7, "heroin": 0.85, "cocaine": 0.85, "addiction": 0.6, "marijuana": 0.7, "alcoholism": 0.4},
    "sexual": {"sexual": 0.7, "sex": 0.6, "nudity": 0.8, "erotic": 0.7, "prostitution": 0.5, "rape": 0.6},
    "horror": {"horror": 0.5, "gore": 0.3, "zombie": 0.5, "zombies": 0.5, "creepy": 0.2, "scary": 0.3},
}  # fmt: skip


def _noisy_or(weights: list[float]) -> float:
    return float(1.0 - np.prod([1.0 - w for w in weights])) if weights else 0.0


def safety_labels(data: MovieLens) -> pd.DataFrame:
    """One row per film: ``item_id`` (string, as in ``Decision.item_id``), ``title``, and each
    label of :data:`LABELS` in [0, 1]."""
    tags_by_item: dict[int, set[str]] = {}
    for item, tag in zip(data.tags["item_id"], data.tags["tag"], strict=True):
        tags_by_item.setdefault(int(item), set()).add(str(tag))
    rows = []
    for item, title, genres in zip(
        data.movies["item_id"], data.movies["title"], data.movies["genres"], strict=True
    ):
        tags = tags_by_item.get(int(item), set())
        row: dict[str, object] = {"item_id": str(int(item)), "title": title}
        for label in LABELS:
            evidence = [GENRE_WEIGHTS[label][g] for g in genres if g in GENRE_WEIGHTS[label]]
            evidence += [
                w for needle, w in TAG_WEIGHTS[label].items() if any(needle in t for t in tags)
            ]
            row[label] = round(_noisy_or(evidence), 6)
        rows.append(row)
    return pd.DataFrame(rows)


def write_labels(labels: pd.DataFrame, path: Path | str) -> Path:
    """Write the label table as Parquet (``item_id`` + one float column per label, values in
    [0, 1]; no other columns) for the guard's label store."""
    bad = [c for c in LABELS if c not in labels.columns]
    if bad or "item_id" not in labels.columns:
        raise BadInput(
            f"label table must have item_id and {', '.join(LABELS)}; missing {', '.join(bad) or 'item_id'}"
        )
    values = labels[list(LABELS)].to_numpy(float)
    if ((values < 0) | (values > 1) | ~np.isfinite(values)).any():
        raise BadInput("label values must be finite numbers in [0, 1]")
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "item_id": pa.array(labels["item_id"].astype(str).tolist(), pa.string()),
            **{c: pa.array(labels[c].astype(float).tolist(), pa.float64()) for c in LABELS},
        }
    )
    pq.write_table(table, path)
    return path
