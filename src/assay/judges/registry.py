"""The judge registry: every judge by name, built from a spec, with its validations.

Built-in judges (``assay judge list``):

==========================  ==========================================================================
``refusal-phrase``          refusal phrase match (the baseline)
``refusal``                 the ``refusal_pair`` head: prompt and response, sentence by sentence (default)
``refusal-head``            the ``refusal`` head on the response alone (text-only callers; a baseline)
``refusal-llm``             the refusal rubric put to an LLM endpoint (``ASSAY_JUDGE_URL``/``_MODEL``)
``refusal-cascade``         phrase and head first; where they disagree the LLM (when configured),
                            else the head
``harmful-no-refusal``      "harmful unless it refuses" by phrase (garak's MitigationBypass style)
``harmful``                 the ``harmful_response`` head (default)
``harmful-pair``            the ``harmful_pair`` head: prompt and response, sentence by sentence
``harmful-llm``             the harmful rubric (HarmBench-classifier style) on an LLM endpoint
``harmful-cascade``         no-refusal phrase and head first, the LLM (or the head) where they disagree
``hate``, ``toxicity``      the ``hate`` / ``toxicity`` heads
``hate-llm``                the hate rubric on an LLM endpoint
==========================  ==========================================================================

A spec is a registry name, a path to a YAML/JSON file, or a mapping::

    {name: my-judge, kind: llm, question: harmful, rubric: harmful,
     endpoint: {base_url: http://127.0.0.1:8000/v1, model: my-guard, api_key_env: MY_KEY}}
    {name: my-cascade, kind: cascade, question: refusal, first: [refusal-phrase, refusal], then: refusal-llm}

Kinds: ``phrase``, ``head``, ``pair``, ``llm``, ``cascade``, ``vote``; parts of a cascade or vote are specs.

Both are registries of :mod:`assay.plugins`: :data:`JUDGES` holds every judge by name (a
built-in's spec mapping, or a factory that takes no arguments and returns a :class:`Judge`:
``@register_judge("my-judge")`` on a Judge subclass whose constructor needs none), and
:data:`JUDGE_KINDS` holds what builds each ``kind`` of a spec (``@register_judge_kind("mine")`` on
``builder(name, question, options, endpoint) -> Judge``). ``assay.testing.check_judge`` checks
a new judge against the contract of :mod:`assay.judges.base` (docs/extending.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from assay.errors import BadInput
from assay.judges.base import Judge
from assay.plugins import Registry, check_factory

ENDPOINT_ENV = {"base_url": "ASSAY_JUDGE_URL", "model": "ASSAY_JUDGE_MODEL", "api_key_env": "ASSAY_JUDGE_API_KEY_ENV"}

BUILTINS: dict[str, dict[str, Any]] = {
    "refusal-phrase": {"kind": "phrase", "question": "refusal"},
    "refusal": {"kind": "pair", "classifier": "refusal_pair"},
    "refusal-head": {"kind": "head", "classifier": "refusal"},
    "refusal-llm": {"kind": "llm", "question": "refusal", "rubric": "refusal"},
    "refusal-cascade": {"kind": "cascade", "question": "refusal", "first": ["refusal-phrase", "refusal"],
                        "then": "refusal-llm?", "fallback": "refusal"},
    "harmful-no-refusal": {"kind": "phrase", "question": "harmful", "negate": True},
    "harmful": {"kind": "head", "classifier": "harmful_response"},
    "harmful-pair": {"kind": "pair", "classifier": "harmful_pair"},
    "harmful-llm": {"kind": "llm", "question": "harmful", "rubric": "harmful"},
    "harmful-cascade": {"kind": "cascade", "question": "harmful", "first": ["harmful-no-refusal", "harmful"],
                        "then": "harmful-llm?", "fallback": "harmful"},
    "hate": {"kind": "head", "classifier": "hate"},
    "hate-llm": {"kind": "llm", "question": "hate", "rubric": "hate"},
    "toxicity": {"kind": "head", "classifier": "toxicity"},
}
# The judge each question uses when a caller asks for "the best validated judge" by default.
DEFAULTS = {"refusal": "refusal", "harmful": "harmful", "hate": "hate", "toxicity": "toxicity"}
DESCRIPTIONS = {
    "refusal-phrase": "refusal phrase match anywhere in the response (GCG/HarmBench list); empty = refusal",
    "refusal": "refusal pair head: prompt and response sentence by sentence on MiniLM, trained on several sources",
    "refusal-head": "refusal head on the response alone: MiniLM embedding of its opening + refusal-phrase features",
    "refusal-llm": "refusal rubric put to an OpenAI-compatible endpoint, parsed strictly",
    "refusal-cascade": "phrase + head; the LLM decides where they disagree (the head when no endpoint is set)",
    "harmful-no-refusal": "harmful unless a refusal phrase appears (garak MitigationBypass style)",
    "harmful": "harmful_response head: MiniLM response embedding + refusal-phrase features",
    "harmful-pair": "harmful pair head: prompt and response sentence by sentence on MiniLM (not the default: no better held out)",
    "harmful-llm": "HarmBench-classifier-style rubric put to an OpenAI-compatible endpoint, parsed strictly",
    "harmful-cascade": "no-refusal phrase + head; the LLM decides where they disagree (the head when no endpoint is set)",
    "hate": "hate head (Davidson, ToxiGen and contrast cases: negation, counter-speech, reclaimed terms)",
    "hate-llm": "hate rubric put to an OpenAI-compatible endpoint, parsed strictly",
    "toxicity": "toxicity head (hateful or offensive)",
}


def _check_judge(name: str, obj: Any) -> None:
    if isinstance(obj, dict):
        if "kind" not in obj:
            raise TypeError("a judge spec needs a kind")
        return
    check_factory(obj, Judge, "a judge is a spec mapping or a factory returning a Judge")


def _check_kind(name: str, obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"a judge kind is a builder(name, question, options, endpoint) -> Judge, not {type(obj).__name__}")


JUDGES: Registry[Any] = Registry("judge", "assay.judges", _check_judge)
JUDGE_KINDS: Registry[Any] = Registry("judge kind", "assay.judge_kinds", _check_kind)
register_judge = JUDGES.register  # @register_judge("name") on a Judge subclass (or factory) that needs no arguments
register_judge_kind = JUDGE_KINDS.register  # @register_judge_kind("kind") on builder(name, question, options, endpoint)
for _name, _spec in BUILTINS.items():
    JUDGES.register(_name, _spec)


def available() -> list[str]:
    return JUDGES.names()


def env_endpoint() -> dict[str, Any] | None:
    """The LLM judge endpoint from ``ASSAY_JUDGE_URL`` and ``ASSAY_JUDGE_MODEL`` (and optionally
    ``ASSAY_JUDGE_API_KEY_ENV``, the name of the variable that holds the key), or None."""
    url, model = os.environ.get(ENDPOINT_ENV["base_url"]), os.environ.get(ENDPOINT_ENV["model"])
    if not url or not model:
        return None
    out: dict[str, Any] = {"base_url": url, "model": model}
    if os.environ.get(ENDPOINT_ENV["api_key_env"]):
        out["api_key_env"] = os.environ[ENDPOINT_ENV["api_key_env"]]
    return out


def _load_file(path: Path) -> dict[str, Any]:
    import json

    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            doc = json.loads(text)
        else:
            from ruamel.yaml import YAML

            doc = YAML(typ="safe").load(text)
    except Exception as e:  # a parse error names the file
        raise BadInput(f"{path}: not a judge spec ({e})") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{path}: a judge spec must be a mapping with kind and question")
    doc.setdefault("name", path.stem)
    return doc


def get_judge(spec: str | dict[str, Any] | Judge, *, endpoint: dict[str, Any] | None = None) -> Judge:
    """The judge a spec names (see the module doc). ``endpoint`` overrides the LLM endpoint of
    built-in LLM judges (default: ``ASSAY_JUDGE_URL``/``ASSAY_JUDGE_MODEL``)."""
    if isinstance(spec, Judge):
        return spec
    if isinstance(spec, str):
        optional = spec.endswith("?")
        name = spec.rstrip("?")
        registered = JUDGES.get(name) if name in JUDGES else None
        if registered is not None and not isinstance(registered, dict):
            return _made(name, registered)
        if registered is not None:
            doc = {**registered, "name": name}
            if doc["kind"] == "llm":
                ep = endpoint or env_endpoint()
                if ep is None:
                    if optional:
                        return None  # type: ignore[return-value]
                    raise BadInput(f"judge {name!r} needs an LLM endpoint",
                                   hint="set ASSAY_JUDGE_URL and ASSAY_JUDGE_MODEL (an OpenAI-compatible /v1 server), "
                                        "or pass --judge-url/--judge-model")
                doc["endpoint"] = ep
            return _build(doc, endpoint)
        path = Path(name)
        if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
            return _build(_load_file(path), endpoint)
        raise BadInput(f"unknown judge {spec!r}; known: {', '.join(JUDGES)} (or a .yaml/.json judge spec file)")
    if isinstance(spec, dict):
        return _build(dict(spec), endpoint)
    raise BadInput(f"a judge spec is a name, a file or a mapping, not {type(spec).__name__}")


def _made(name: str, factory: Any) -> Judge:
    """A registered judge factory called, and what it returns checked."""
    judge = factory()
    if not isinstance(judge, Judge):
        raise BadInput(f"judge {name!r} built a {type(judge).__name__}, not an assay.judges.base.Judge")
    return judge


def _build(doc: dict[str, Any], endpoint: dict[str, Any] | None) -> Judge:
    kind = doc.pop("kind", None)
    name = doc.pop("name", None) or kind
    if not isinstance(name, str) or not name:
        raise BadInput("a judge spec needs a name")
    question = doc.pop("question", None)
    if kind not in JUDGE_KINDS:
        raise BadInput(f"judge {name!r}: unknown kind {kind!r}; known: {', '.join(JUDGE_KINDS)}")
    try:
        judge = JUDGE_KINDS.get(kind)(name, question, doc, endpoint)
    except TypeError as e:
        raise BadInput(f"judge {name!r} ({kind}): {e}") from None
    if not isinstance(judge, Judge):
        raise BadInput(f"judge kind {kind!r} built a {type(judge).__name__}, not an assay.judges.base.Judge")
    return judge


# -- the built-in kinds: each builds its judge from a spec's options ----------------------------------
@register_judge_kind("phrase")
def _phrase(name: str, question: str | None, options: dict[str, Any], endpoint: dict[str, Any] | None) -> Judge:
    from assay.judges.phrase import PhraseJudge

    return PhraseJudge(name, question or "refusal", **options)


@register_judge_kind("head")
def _head(name: str, question: str | None, options: dict[str, Any], endpoint: dict[str, Any] | None) -> Judge:
    from assay.judges.heads import HeadJudge

    classifier = options.pop("classifier", None)
    if not classifier:
        raise BadInput(f"judge {name!r}: a head judge needs classifier")
    return HeadJudge(name, classifier, question=question, **options)


@register_judge_kind("pair")
def _pair(name: str, question: str | None, options: dict[str, Any], endpoint: dict[str, Any] | None) -> Judge:
    from assay.judges.heads import PairJudge

    classifier = options.pop("classifier", None)
    if not classifier:
        raise BadInput(f"judge {name!r}: a pair judge needs classifier (refusal_pair or harmful_pair)")
    return PairJudge(name, classifier, question=question, **options)


@register_judge_kind("llm")
def _llm(name: str, question: str | None, options: dict[str, Any], endpoint: dict[str, Any] | None) -> Judge:
    from assay.judges.llm import LLMJudge

    return LLMJudge(name, question or "harmful", **options)


@register_judge_kind("cascade")
def _cascade(name: str, question: str | None, options: dict[str, Any], endpoint: dict[str, Any] | None) -> Judge:
    from assay.judges.combine import Cascade

    first = [get_judge(s, endpoint=endpoint) for s in options.pop("first", [])]
    then_spec = options.pop("then", None)
    then = get_judge(then_spec, endpoint=endpoint) if then_spec else None
    q = question or (first[0].question if first else "refusal")
    return Cascade(name, q, first, then, **options)


@register_judge_kind("vote")
def _vote(name: str, question: str | None, options: dict[str, Any], endpoint: dict[str, Any] | None) -> Judge:
    from assay.judges.combine import Vote

    parts = [get_judge(s, endpoint=endpoint) for s in options.pop("judges", [])]
    return Vote(name, question or (parts[0].question if parts else "refusal"), parts, **options)


def best_validated(question: str) -> str:
    """The built-in judge of ``question`` whose current version validated best (highest lower
    bound of F1 on its latest validation); the question's default judge when none validated.
    LLM judges count only when an endpoint is configured."""
    from assay.judges.heads import question_of
    from assay.judges.validate import summary

    best, best_low = DEFAULTS.get(question), -1.0
    for name, spec in BUILTINS.items():
        q = spec.get("question") or question_of(spec.get("classifier", ""))
        if q != question:
            continue
        try:
            judge = get_judge(name)
        except Exception:  # an LLM judge without an endpoint, an untrained head
            continue
        if judge is None:
            continue
        s = summary(judge)
        low = (s.get("f1") or {}).get("ci_low") if s.get("validated") else None
        if low is not None and low > best_low:
            best, best_low = name, low
    if best is None:
        raise BadInput(f"no judge for question {question!r}")
    return best
