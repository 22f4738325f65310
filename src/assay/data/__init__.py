"""Public datasets: where they live, and a sha256 manifest for lineage.

Each dataset has a loader module here (``assay.data.davidson``, ``assay.data.do_not_answer``, ...)
that reads the layout of the official public download, so the same code works on the files
under ``../shared/datasets`` and on a user's own copy. Folders are found through
``assay.config.settings().data_dir`` (``ASSAY_DATA_DIR``).

Several of these sets contain hateful or dangerous text on purpose: keep them in evaluation
code paths and out of demos, docs and logs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from assay.config import settings
from assay.errors import BadInput

# Dataset name -> folder under the data directory (the folder names of ../shared/datasets).
DATASETS: dict[str, str] = {
    "davidson": "davidson_hate_speech",
    "toxigen": "toxigen",
    "do_not_answer": "do_not_answer",
    "cyberseceval": "cyberseceval_prompt_injection",
    "fever": "fever",
    "jailbreakbench": "jailbreakbench_artifacts",
    "harmbench": "harmbench",
    "advbench": "advbench",
    "bbq": "bbq",
    "bold": "bold",
    "crows_pairs": "crows_pairs",
    "truthfulqa": "truthfulqa",
    "movielens": "movielens_latest_small",
    "recsys_peer_vectors": "recsys_peer_vectors",
}


def available() -> list[str]:
    """Names of the datasets this registry knows (whether or not they are on disk)."""
    return sorted(DATASETS)


def dataset_path(name: str, *parts: str, data_dir: Path | str | None = None) -> Path:
    """The folder of dataset ``name`` (or a file inside it), checked to exist.

    Raises ``BadInput`` naming the dataset and the path looked at when it is missing, with a
    hint to set ``ASSAY_DATA_DIR``.
    """
    if name not in DATASETS:
        raise BadInput(f"unknown dataset {name!r}; known: {', '.join(available())}")
    root = Path(data_dir) if data_dir is not None else settings().data_dir
    folder = root / DATASETS[name]
    if not folder.is_dir():
        raise BadInput(
            f"dataset {name!r} not found: no folder {folder}",
            hint="set ASSAY_DATA_DIR to the folder that holds the public datasets "
            f"(it should contain {DATASETS[name]}/)",
        )
    path = folder.joinpath(*parts)
    if parts and not path.exists() and os.path.lexists(path):
        raise BadInput(f"dataset {name!r}: {path} is a symbolic link to nothing (broken or looping)",
                       hint="point it at the real file, or put the file itself there")
    if parts and not path.exists():
        raise BadInput(
            f"dataset {name!r} is incomplete: {path} is missing",
            hint="download the official files into that folder (see its SOURCE.md)",
        )
    return path


def sha256_file(path: Path | str, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(paths: Iterable[Path | str]) -> dict[str, str]:
    """``{path: sha256}`` for each file (folders expand to every file under them, sorted).

    Used to record exactly which data a model or an evaluation was built from.
    """
    out: dict[str, str] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                out[str(child)] = sha256_file(child)
        elif path.is_file():
            out[str(path)] = sha256_file(path)
        else:
            raise BadInput(f"cannot hash {path}: no such file or folder")
    return out
