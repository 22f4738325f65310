"""Claim matching: embed a fact-check base (FEVER claims with SUPPORTS / REFUTES / NOT ENOUGH
INFO verdicts) and return, for a new text, the nearest checked claims with similarity and verdict.

The base index (9,999 x 384 float32, 15 MB) is built from the dataset on first use and cached
in ``encoder.cache_dir()`` (keyed by the dataset file's sha256 and the encoder) rather than committed; only the threshold, metrics and model
card are committed. Search is exact cosine similarity (one matrix product): at ten thousand
claims an approximate index would be slower, not faster.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assay.classify import metrics as M
from assay.classify.model import MODELS_DIR
from assay.classify.tasks import SEED, split_of
from assay.config import settings
from assay.errors import BadInput

NAME = "claim_match"
# Share of FEVER claims (hash sample) used to *evaluate* matching and choose the threshold; the
# served index always holds all of them. Set by compute: embedding all 9,999 twice over (clean and
# obfuscated) did not fit this session on two shared cores.
EVAL_FRACTION = 0.3


@dataclass(frozen=True, slots=True)
class ClaimMatch:
    claim_id: int
    claim: str
    verdict: str  # SUPPORTS | REFUTES | NOT ENOUGH INFO
    similarity: float  # cosine similarity of MiniLM embeddings, in [-1, 1]


class ClaimMatcher:
    """Nearest checked claims. ``score(texts)`` is the top-1 similarity; ``predict`` says whether
    a checked claim on the same subject exists (similarity >= the validated threshold)."""

    name = NAME

    def __init__(self, ids: np.ndarray, claims: list[str], verdicts: list[str], embeddings: np.ndarray, threshold: float, base_sha256: str):
        self.ids = ids
        self.claims = claims
        self.verdicts = verdicts
        self.embeddings = embeddings.astype(np.float32)
        self.threshold = threshold
        self.sha256 = hashlib.sha256(f"{base_sha256}|{threshold}".encode()).hexdigest()
        self.normalise = True

    @property
    def version(self) -> str:
        return f"{NAME}@sha256:{self.sha256}"

    @classmethod
    def from_claims(cls, claims: list[tuple[int, str, str]], threshold: float) -> ClaimMatcher:
        """A matcher over your own fact-check base: ``(id, claim text, verdict)`` triples."""
        from assay.classify import normalise as norm
        from assay.classify.encoder import get_encoder

        if not claims:
            raise BadInput("a claim base needs at least one claim")
        texts = [norm.normalise(c[1]) for c in claims]
        digest = hashlib.sha256(json.dumps([list(c) for c in claims], ensure_ascii=False).encode()).hexdigest()
        return cls(np.asarray([c[0] for c in claims]), [c[1] for c in claims], [c[2] for c in claims], get_encoder(precision="fp32").encode(texts), threshold, digest)

    def _embed(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        from assay.classify import normalise as norm
        from assay.classify.encoder import get_encoder

        prepared = []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise BadInput(f"{NAME}: text {i} is {type(t).__name__}, not str")
            prepared.append(norm.normalise(t) if self.normalise else norm.light(t))
        keep = [i for i, t in enumerate(prepared) if t]
        return get_encoder(precision="fp32").encode([prepared[i] for i in keep]), keep

    def match(self, texts: list[str], k: int = 3) -> list[list[ClaimMatch]]:
        """The ``k`` nearest checked claims for each text (an empty list for an empty text)."""
        if isinstance(texts, str):
            raise BadInput(f"{NAME}.match expects a list of texts, got one str")
        if k < 1:
            raise BadInput(f"k must be at least 1, got {k}")
        out: list[list[ClaimMatch]] = [[] for _ in texts]
        x, keep = self._embed(list(texts))
        if not keep:
            return out
        sims = x @ self.embeddings.T
        k = min(k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, i in enumerate(keep):
            order = top[row][np.argsort(-sims[row, top[row]])]
            out[i] = [ClaimMatch(int(self.ids[j]), self.claims[j], self.verdicts[j], round(float(sims[row, j]), 4)) for j in order]
        return out

    def score(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        out = np.zeros(len(texts))
        x, keep = self._embed(list(texts))
        if keep:
            out[keep] = (x @ self.embeddings.T).max(axis=1)
        return out

    def predict(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        return self.score(texts) >= self.threshold


def _fever_base(data_dir: Path | None = None):  # type: ignore[no-untyped-def]
    from assay.data import dataset_path, fever, sha256_file

    claims = fever.load(data_dir)
    return claims, sha256_file(dataset_path("fever", fever.FILE, data_dir=data_dir))


def _embed_cached(texts: list[str], progress=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    from assay.classify.encoder import EmbeddingCache, get_encoder

    cache = EmbeddingCache(get_encoder(precision="fp32"))
    try:
        return cache.encode(texts, progress=progress)
    finally:
        cache.close()


def load_matcher(models_dir: Path = MODELS_DIR, progress=None) -> ClaimMatcher:  # type: ignore[no-untyped-def]
    """The FEVER claim matcher; builds and caches the base index on first use."""
    from assay.classify import normalise as norm
    from assay.classify.encoder import cache_dir, encoder_id

    config_path = models_dir / f"{NAME}.json"
    if not config_path.is_file():
        raise BadInput(f"classifier {NAME!r} has no committed config at {config_path}", hint=f"assay classify train {NAME}")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    claims, base_sha = _fever_base()
    key = hashlib.sha256(f"{base_sha}|{encoder_id()}".encode()).hexdigest()[:16]
    index_path = cache_dir() / f"claim-index-{key}.npy"
    if index_path.is_file():
        embeddings = np.load(index_path, allow_pickle=False)
    else:
        embeddings = _embed_cached([norm.normalise(c.claim) for c in claims], progress)
        tmp = index_path.with_suffix(".tmp.npy")
        np.save(tmp, embeddings)
        tmp.replace(index_path)
    return ClaimMatcher(
        np.asarray([c.id for c in claims]), [c.claim for c in claims], [c.label for c in claims], embeddings, float(config["threshold"]), base_sha
    )


def _tfidf_similarity(base: list[str], queries: list[str]) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(base)
    return (vec.transform(queries) @ vec.transform(base).T).toarray()


def build_and_evaluate(*, out_dir: Path = MODELS_DIR, limit: int | None = None, seed: int = SEED, progress=None, n_bootstrap: int = M.N_BOOTSTRAP) -> dict:  # type: ignore[no-untyped-def]
    """Evaluate nearest-claim retrieval on FEVER and write the config, metrics and card.

    Base = claims hashed to train (and val, for the test queries); queries = *verifiable* claims of
    the held-out split. A query "has a checked counterpart" when some base claim cites the same
    Wikipedia page; the top-1 similarity is the score for that, and we also report how often the
    top-1 neighbour really is on the same page (precision@1) and shares the verdict.
    """
    from assay.classify import normalise as norm
    from assay.classify.encoder import encoder_id
    from assay.classify.obfuscate import KINDS, obfuscate
    from assay.classify.train import DESCRIPTIONS, _manifest

    started = time.perf_counter()
    from assay.classify.tasks import in_sample

    claims, base_sha = _fever_base()
    claims = [c for c in claims if in_sample(f"fever:{c.id}", EVAL_FRACTION, seed)]
    if limit:
        claims = claims[: max(limit * 3, 30)]
    split = np.asarray([split_of(f"fever:{c.id}", seed) for c in claims])
    x = _embed_cached([norm.normalise(c.claim) for c in claims], (lambda n: progress(f"claims embedded +{n}")) if progress else None)
    pages = [set(c.evidence_pages) for c in claims]

    def run(base_idx: np.ndarray, query_idx: np.ndarray, qx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        sims = qx @ x[base_idx].T
        top = sims.argmax(axis=1)
        page_index: dict[str, set[int]] = {}
        for b in base_idx:
            for p in pages[b]:
                page_index.setdefault(p, set()).add(int(b))
        has = np.asarray([any(p in page_index for p in pages[q]) for q in query_idx])
        hit = np.asarray([bool(pages[q] & pages[base_idx[t]]) for q, t in zip(query_idx, top, strict=True)])
        same_verdict = np.asarray([claims[q].label == claims[base_idx[t]].label for q, t in zip(query_idx, top, strict=True)])
        return sims.max(axis=1), has, hit, same_verdict

    verifiable = np.asarray([c.label != "NOT ENOUGH INFO" for c in claims])
    train_idx = np.flatnonzero(split == "train")
    val_q = np.flatnonzero((split == "val") & verifiable)
    base_test = np.flatnonzero(split != "test")
    test_q = np.flatnonzero((split == "test") & verifiable)
    val_scores, val_has, _, _ = run(train_idx, val_q, x[val_q])
    threshold = M.best_threshold(val_has, val_scores)
    test_scores, test_has, test_hit, test_verdict = run(base_test, test_q, x[test_q])

    base_texts = [claims[i].claim for i in base_test]
    tfidf_val = _tfidf_similarity([claims[i].claim for i in train_idx], [claims[i].claim for i in val_q]).max(axis=1)
    tfidf_sims = _tfidf_similarity(base_texts, [claims[i].claim for i in test_q])
    tfidf_top = tfidf_sims.argmax(axis=1)
    tfidf_hit = np.asarray([bool(pages[q] & pages[base_test[t]]) for q, t in zip(test_q, tfidf_top, strict=True)])
    systems = {"model": (test_scores, threshold), "tfidf-nearest": (tfidf_sims.max(axis=1), M.best_threshold(val_has, tfidf_val))}
    test_metrics = M.evaluate(test_has, systems, n_bootstrap=n_bootstrap)
    with_counterpart = test_has.astype(bool)
    retrieval = {
        "queries_with_counterpart": int(with_counterpart.sum()),
        "precision_at_1_model": round(float(test_hit[with_counterpart].mean()), 4) if with_counterpart.any() else None,
        "precision_at_1_tfidf": round(float(tfidf_hit[with_counterpart].mean()), 4) if with_counterpart.any() else None,
        "top1_same_verdict_when_same_page": round(float(test_verdict[test_hit].mean()), 4) if test_hit.any() else None,
    }
    doc: dict = {
        "classifier": NAME,
        "description": DESCRIPTIONS[NAME],
        "encoder": encoder_id(),
        "head": {"chosen": "exact cosine nearest neighbour"},
        "calibration": "none (cosine similarity)",
        "threshold": round(threshold, 6),
        "seed": seed,
        "split": {
            "base(train)": {"n": len(train_idx), "positives": 0},
            "val queries": {"n": len(val_q), "positives": int(val_has.sum())},
            "test queries": {"n": len(test_q), "positives": int(test_has.sum())},
        },
        "test": test_metrics,
        "retrieval": retrieval,
        "bootstrap": {"resamples": n_bootstrap, "interval": "95% percentile", "seed": M.BOOTSTRAP_SEED},
        "data": _manifest([Path(settings().data_dir) / "fever" / "paper_dev.jsonl"]),
        "limit": limit,
        "eval_fraction": EVAL_FRACTION,
    }
    if not limit:
        rng = np.random.default_rng(seed)
        sample = rng.choice(np.flatnonzero(with_counterpart), size=min(150, int(with_counterpart.sum())), replace=False)
        obf: dict = {"clean": {"precision_at_1": round(float(test_hit[sample].mean()), 4)}}
        for kind in KINDS:
            texts = [obfuscate(claims[test_q[i]].claim, kind, seed) for i in sample]
            row = {}
            for label, prep in (("normalised", norm.normalise), ("raw", norm.light)):
                qx = _embed_cached([prep(t) or " " for t in texts])
                _, _, hit, _ = run(base_test, test_q[sample], qx)
                row[f"precision_at_1_{label}"] = round(float(hit.mean()), 4)
            obf[kind] = row
        obf["sample"] = {"queries": len(sample)}
        doc["obfuscation"] = obf
    sha = hashlib.sha256(f"{base_sha}|{round(threshold, 6)}".encode()).hexdigest()
    doc["version"] = f"{NAME}@sha256:{sha}"
    doc["train_seconds"] = round(time.perf_counter() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"name": NAME, "description": DESCRIPTIONS[NAME], "encoder": doc["encoder"], "threshold": round(threshold, 6), "seed": seed, "data": doc["data"]}
    (out_dir / f"{NAME}.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out_dir / f"{NAME}.metrics.json").write_text(json.dumps(doc, indent=2, sort_keys=True, default=float) + "\n", encoding="utf-8")
    from assay.classify.card import model_card

    (out_dir / f"{NAME}.md").write_text(model_card(doc), encoding="utf-8")
    return doc
