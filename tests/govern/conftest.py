"""Governance tests: a store on SQLite and on the machine's real PostgreSQL, a policy bundle,
and small real files to register."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.govern.registry import Actor
from assay.store import open_store

BUNDLE = Path(__file__).resolve().parents[2] / "src" / "assay" / "govern" / "default_bundle.yaml"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, assay_home):
    url = f"sqlite:///{assay_home / 'assay.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(assay_home):
    s = open_store()
    yield s
    s.close()


@pytest.fixture
def bundle_path() -> Path:
    return BUNDLE


@pytest.fixture
def engineer() -> Actor:
    return Actor("erin", "engineer", "test")


@pytest.fixture
def files(tmp_path):
    def make(name: str, content: bytes) -> Path:
        p = tmp_path / "files" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        return p

    return make


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory):
    """Train the real flow's two models once per session (quick size); tests copy them."""
    import os
    from pathlib import Path as P

    from assay.govern.realflow import _trained_once, train_classifier, train_ranker

    data = P(os.environ["ASSAY_DATA_DIR"])
    root = tmp_path_factory.mktemp("trained")
    _trained_once(root / "ranker-quick", ["ranker.txt"], lambda d: train_ranker(
        data / "movielens_latest_small" / "ml-latest-small" / "ratings.csv", d, 200))  # as realflow quick: 40 held-out users
    _trained_once(root / "classifier-quick", ["classifier.npz", "vocabulary.json"], lambda d: train_classifier(
        data / "davidson_hate_speech" / "data" / "labeled_data.csv", d, 3000))
    return root


@pytest.fixture
def models_dir(trained_models, tmp_path):
    """A private copy of the trained models (tests change weights on disk)."""
    import shutil

    def into(dest: Path) -> Path:
        shutil.copytree(trained_models, dest, dirs_exist_ok=True)
        return dest

    return into
