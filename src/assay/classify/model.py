"""Loading and running the committed classifier heads.

A head is a small feed-forward network on the MiniLM embedding, stored as plain arrays
(``models/<name>.npz``, never a pickle) with a JSON config beside it (``models/<name>.json``:
threshold, calibration, training record). Inference is numpy matrix products; the encoder is the
only heavy part. ``version`` is ``<name>@sha256:<hex>`` where the hash covers the arrays' names,
dtypes, shapes and bytes (not the zip container, whose timestamps change on every save), so a
retrain with the same seed and data reproduces the same version. A head on a fine-tuned encoder
(``hate``) also has ``models/<name>.adapter.npz`` (a LoRA adapter, :mod:`assay.classify.finetune`);
its arrays are part of the version's hash, and a file that does not match its recorded hash is
refused at load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from assay.errors import BadInput

if TYPE_CHECKING:
    from assay.classify.finetune import Adapter

MODELS_DIR = Path(__file__).parent / "models"
HEAD_NAMES = ("toxicity", "hate", "offensive", "harmful_response", "refusal", "prompt_injection")
PAIR_HEAD_NAMES = ("refusal_pair", "harmful_pair")  # heads over (prompt, response): assay.classify.pairs
ALL_NAMES = (*HEAD_NAMES, *PAIR_HEAD_NAMES, "claim_match")
TIE_BREAK = 1e-3  # weight of the raw score mixed into isotonic output, so ranking survives its flat steps


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over (name, dtype, shape, bytes) of each array in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def classifier_sha256(head_arrays: dict[str, np.ndarray], adapter: Adapter | None = None) -> str:
    """The version hash: the head's arrays, and the adapter's (prefixed ``adapter/``) when the
    head sits on a fine-tuned encoder."""
    if adapter is None:
        return arrays_sha256(head_arrays)
    return arrays_sha256({**head_arrays, **{f"adapter/{k}": v for k, v in adapter.arrays.items()}})


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def calibrate(logits: np.ndarray, method: str, cal_x: np.ndarray, cal_y: np.ndarray) -> np.ndarray:
    """Logits to probabilities with a fitted map: Platt (``cal_x`` = [a, b]) or isotonic (knots
    ``cal_x`` -> ``cal_y``, with a little of the raw sigmoid mixed in to keep the ranking)."""
    if method == "platt":
        a, b = float(cal_x[0]), float(cal_x[1])
        return _sigmoid(a * logits + b)
    iso = np.interp(logits, cal_x, cal_y)
    return np.clip((1 - TIE_BREAK) * iso + TIE_BREAK * _sigmoid(logits), 0.0, 1.0)


@dataclass
class Head:
    """Dense layers (ReLU between) ending in one logit, then a calibration map to a probability."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    calibration: str  # "isotonic" | "platt"
    cal_x: np.ndarray  # isotonic knots (logit) or [a, b] for Platt
    cal_y: np.ndarray

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = x.astype(np.float32, copy=False)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0].astype(np.float64)

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        return calibrate(logits, self.calibration, self.cal_x, self.cal_y)

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out[f"layer{i}_weight"] = w.astype(np.float32)
            out[f"layer{i}_bias"] = b.astype(np.float32)
        out["calibration_x"] = np.asarray(self.cal_x, dtype=np.float64)
        out["calibration_y"] = np.asarray(self.cal_y, dtype=np.float64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], calibration: str) -> Head:
        n = sum(1 for k in arrays if k.endswith("_weight"))
        return cls(
            weights=[arrays[f"layer{i}_weight"] for i in range(n)],
            biases=[arrays[f"layer{i}_bias"] for i in range(n)],
            calibration=calibration,
            cal_x=arrays["calibration_x"],
            cal_y=arrays["calibration_y"],
        )


@dataclass
class Classifier:
    """A calibrated binary classifier: ``score(texts)`` -> probabilities, ``predict`` -> labels."""

    name: str
    head: Head
    threshold: float
    social: bool
    description: str
    sha256: str
    config: dict = field(default_factory=dict)
    max_tokens: int = 128  # word pieces the encoder reads
    normalise: bool = True  # switch off only to measure what normalisation buys
    features: tuple[str, ...] = ()  # extra input features beside the embedding (see FEATURES)
    adapter: Adapter | None = None  # LoRA adapter of a fine-tuned encoder (None: the packaged MiniLM)

    @property
    def version(self) -> str:
        return f"{self.name}@sha256:{self.sha256}"

    def prepare(self, texts: list[str]) -> list[str]:
        """The texts as the encoder sees them (normalised, or only lightly cleaned)."""
        from assay.classify import normalise as norm

        out = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise BadInput(f"{self.name}: text {i} is {type(text).__name__}, not str")
            out.append(norm.normalise(text, social=self.social) if self.normalise else norm.light(text, social=self.social))
        return out

    @property
    def encoder_key(self) -> tuple[int, str]:
        """What makes this head's embeddings: the cut and the adapter (heads with equal keys can
        share one encoding of a text; heads with different keys must not)."""
        return (self.max_tokens, self.adapter.sha256 if self.adapter is not None else "")

    def embed(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        from assay.classify.encoder import get_encoder

        return get_encoder(max_tokens=self.max_tokens, adapter=self.adapter).encode(texts, batch_size=batch_size)

    def inputs(self, embeddings: np.ndarray, prepared: list[str]) -> np.ndarray:
        """The head's input: the embedding, then this head's extra features of the same texts."""
        if not self.features:
            return embeddings
        return np.hstack([embeddings, feature_matrix(self.features, prepared)]).astype(np.float32)

    def score_embeddings(self, embeddings: np.ndarray, prepared: list[str] | None = None) -> np.ndarray:
        if self.features:
            if prepared is None:
                raise ValueError(f"{self.name} reads features {self.features} of the texts: pass the prepared texts")
            embeddings = self.inputs(embeddings, prepared)
        return self.head.calibrate(self.head.logits(embeddings))

    def score(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        """Calibrated probability per text. A text with nothing left after normalisation (empty,
        whitespace, only invisible or control characters) scores 0.0: there is nothing to flag."""
        if isinstance(texts, str):
            raise BadInput(f"{self.name}.score expects a list of texts, got one str")
        prepared = self.prepare(list(texts))
        out = np.zeros(len(prepared), dtype=np.float64)
        keep = [i for i, t in enumerate(prepared) if t]
        if keep:
            kept = [prepared[i] for i in keep]
            out[keep] = self.score_embeddings(self.embed(kept, batch_size=batch_size), kept)
        return out

    def predict(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        """``score >= threshold`` (the threshold with the best F1 on the validation split)."""
        return self.score(texts, batch_size=batch_size) >= self.threshold


def _refusal_phrase(texts: list[str]) -> np.ndarray:
    from assay.classify.baselines import has_refusal_phrase

    return np.asarray([1.0 if has_refusal_phrase(t) else 0.0 for t in texts])


def _refusal_opening(texts: list[str]) -> np.ndarray:
    """A refusal phrase in the first 60 characters (an opening apology or refusal)."""
    from assay.classify.baselines import has_refusal_phrase

    return np.asarray([1.0 if has_refusal_phrase(t[:60]) else 0.0 for t in texts])


def _short(texts: list[str]) -> np.ndarray:
    """Answers of under six words (a terse "No." gives nothing)."""
    return np.asarray([1.0 if len(t.split()) < 6 else 0.0 for t in texts])


# Extra input features a head may read beside its embedding (named in its JSON config). They
# are computed on the same prepared (normalised) text the encoder reads.
FEATURES = {"refusal_phrase": _refusal_phrase, "refusal_opening": _refusal_opening, "short": _short}


def feature_matrix(names: tuple[str, ...] | list[str], prepared: list[str]) -> np.ndarray:
    try:
        return np.stack([FEATURES[n](prepared) for n in names], axis=1).astype(np.float32)
    except KeyError as e:
        raise BadInput(f"unknown classifier feature {e.args[0]!r}; known: {', '.join(FEATURES)}") from None


def score_many(classifiers: dict[str, Classifier], texts: list[str], batch_size: int = 128) -> dict[str, np.ndarray]:
    """Every classifier's calibrated scores for the same texts, encoding each text once per
    distinct (normalisation, encoder) rather than once per classifier, where the encoder is the
    cut and the adapter (``Classifier.encoder_key``): toxicity and offensive share one encoding,
    refusal and harmful_response another, hate (fine-tuned encoder) has its own. Equal to calling
    each ``clf.score(texts)`` (tested)."""
    if isinstance(texts, str):
        raise BadInput("score_many expects a list of texts, got one str")
    texts = list(texts)
    groups: dict[tuple[bool, bool, tuple[int, str]], list[str]] = {}
    for name, clf in classifiers.items():
        groups.setdefault((clf.social, clf.normalise, clf.encoder_key), []).append(name)
    prepared_by: dict[tuple[bool, bool], list[str]] = {}
    out: dict[str, np.ndarray] = {}
    for (social, normalise, _encoder), names in groups.items():
        first = classifiers[names[0]]
        if (social, normalise) not in prepared_by:
            prepared_by[(social, normalise)] = first.prepare(texts)
        prepared = prepared_by[(social, normalise)]
        keep = [i for i, t in enumerate(prepared) if t]
        kept = [prepared[i] for i in keep]
        embeddings = first.embed(kept, batch_size=batch_size) if keep else None
        for name in names:
            scores = np.zeros(len(texts), dtype=np.float64)
            if embeddings is not None:
                scores[keep] = classifiers[name].score_embeddings(embeddings, kept)
            out[name] = scores
    return out


def _read_config(name: str, models_dir: Path) -> dict:
    path = models_dir / f"{name}.json"
    if not path.is_file():
        raise BadInput(
            f"classifier {name!r} has no committed head at {path}",
            hint=f"train it with: assay classify train {name}",
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_head_classifier(name: str, models_dir: Path = MODELS_DIR) -> Classifier:
    config = _read_config(name, models_dir)
    weights_path = models_dir / f"{name}.npz"
    with np.load(weights_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    head_sha = arrays_sha256(arrays)
    if config.get("weights_sha256") and config["weights_sha256"] != head_sha:
        raise BadInput(f"{weights_path}: weights do not match the sha256 in {name}.json (file changed or corrupt)")
    adapter = None
    if config.get("adapter"):
        from assay.classify.finetune import load_adapter

        if not config.get("adapter_sha256"):
            raise BadInput(f"{models_dir / (name + '.json')}: names an adapter but records no adapter_sha256")
        adapter = load_adapter(models_dir / config["adapter"], config["adapter_sha256"])
    sha = classifier_sha256(arrays, adapter)
    return Classifier(
        name=name,
        head=Head.from_arrays(arrays, config["calibration"]),
        threshold=float(config["threshold"]),
        social=bool(config.get("social", False)),
        description=config.get("description", ""),
        sha256=sha,
        config=config,
        max_tokens=int(config.get("max_tokens", 128)),
        features=tuple(config.get("features", ())),
        adapter=adapter,
    )
