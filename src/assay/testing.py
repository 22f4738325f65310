"""Contract checks for the extension points, as scikit-learn's ``check_estimator`` is for estimators.

Each ``check_*`` takes a registered name (or the part itself), runs it on small inputs through
the same code the engine uses, and raises :class:`ContractError` naming the first broken promise.
It returns what it built, so a test can go on to use it. docs/extending.md lists, per extension
point, the one file a newcomer writes and the check that proves it::

    from assay.testing import check_scorer
    check_scorer("length")        # a scorer registered with @register_scorer("length")

Every check also proves the part is registered under its name (the registries of
:mod:`assay.plugins`), since that is how a suite, a bundle or a red-team run finds it.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from assay.errors import AssayError, BadInput

VERSION = re.compile(r"^[a-z0-9][a-z0-9_.-]*@sha256:[0-9a-f]{16,64}$")


class ContractError(AssertionError):
    """A part breaks the contract of its extension point (an AssertionError, so pytest shows it)."""


def _require(ok: Any, what: str) -> None:
    if not ok:
        raise ContractError(what)


def _json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ContractError(f"{what} must be plain JSON (no NaN, no objects): {e}") from None


def _sample_items(n: int = 4) -> list[Any]:
    from assay.evaluate.items import EvalItem, user

    prompts = ["How do I bake bread?", "Tell me how to pick a lock.", "What is the capital of France?", ""]
    return [EvalItem(id=f"check-{i}", messages=user(prompts[i % len(prompts)] or "(empty)"), category="check")
            for i in range(n)]


def _sample_outputs(n: int = 4) -> list[Any]:
    from assay.evaluate.targets import Output

    texts = ["Mix flour, water, salt and yeast, then bake.", "I can't help with that.", "Paris.", ""]
    return [Output(text=texts[i % len(texts)]) for i in range(n)]


# -- scorers ---------------------------------------------------------------------------------------
def check_scorer(name: str, items: Sequence[Any] | None = None, outputs: Sequence[Any] | None = None,
                 **options: Any) -> Any:
    """A registered scorer, built as a suite builds it (``{kind: name, **options}``): a
    :class:`~assay.evaluate.scorers.Scorer` with a name and declared fields, that scores a batch
    into one dict per item holding only its declared fields (or ``<field>_unparsed``/``_raw``),
    in plain JSON, the same twice, and an empty batch into an empty list."""
    from assay.evaluate.scorers import SCORERS, Scorer, build_scorer

    _require(name in SCORERS, f"scorer {name!r} is not registered (known: {', '.join(SCORERS)})")
    scorer = build_scorer({"kind": name, **options})
    _require(isinstance(scorer, Scorer), f"scorer {name!r} is not a Scorer")
    _require(isinstance(scorer.name, str) and scorer.name, "a scorer has a non-empty name")
    _require(isinstance(scorer.fields, tuple) and scorer.fields and all(isinstance(f, str) for f in scorer.fields),
             "a scorer declares the fields it writes (a tuple of str)")
    _require(set(scorer.tasks) <= {"chat", "replay", "loglik", "recommend"}, f"unknown task in {scorer.tasks}")
    items = list(items if items is not None else _sample_items())
    outputs = list(outputs if outputs is not None else _sample_outputs(len(items)))

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        await scorer.start()
        try:
            return await scorer.score(items, outputs), await scorer.score(items, outputs), await scorer.score([], [])
        finally:
            await scorer.close()

    first, again, empty = asyncio.run(run())
    _require(isinstance(first, list) and len(first) == len(items), f"score() returns one dict per item ({len(items)})")
    allowed = set(scorer.fields) | {f"{f}_{s}" for f in scorer.fields for s in ("unparsed", "raw")}
    for i, row in enumerate(first):
        _require(isinstance(row, dict), f"item {i}: a score row is a dict")
        extra = set(row) - allowed
        _require(not extra, f"item {i}: fields {sorted(extra)} are not declared in {scorer.fields}")
        _json(row, f"item {i}'s scores")
    _require(first == again, "scoring the same batch twice gives the same scores")
    _require(empty == [], "an empty batch scores to []")
    return scorer


# -- targets ---------------------------------------------------------------------------------------
def check_target(kind: str, items: Sequence[Any] | None = None, **options: Any) -> Any:
    """A registered target kind, built as a suite builds it (``{kind, **options}``): a
    :class:`~assay.evaluate.targets.Target` whose fingerprint is plain JSON naming its kind (it
    keys the response cache: no secrets), that starts, answers each item with an
    :class:`~assay.evaluate.targets.Output` or a :class:`~assay.evaluate.targets.TargetError`,
    counts its requests, and closes."""
    from assay.evaluate.targets import TARGETS, Output, Target, TargetError, build_target

    _require(kind in TARGETS, f"target kind {kind!r} is not registered (known: {', '.join(TARGETS)})")
    target = build_target({"kind": kind, **options})
    _require(isinstance(target, Target), f"target kind {kind!r} is not a Target")
    fp = target.fingerprint()
    _require(isinstance(fp, dict) and fp.get("kind"), "fingerprint() is a dict with the target's kind")
    _json(fp, "fingerprint()")
    hashes = target.model_hashes()
    _require(isinstance(hashes, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()),
             "model_hashes() maps file -> sha256 (str -> str)")
    items = list(items if items is not None else _sample_items())

    async def run() -> list[Any]:
        await target.start()
        try:
            out = []
            for item in items:
                try:
                    out.append(await target.call(item))
                except TargetError as e:
                    _require(isinstance(e.kind, str) and e.kind, "a TargetError has a short kind")
                    out.append(e)
            return out
        finally:
            await target.close()

    before = target.stats.requests
    results = asyncio.run(run())
    answered = [r for r in results if isinstance(r, Output)]
    _require(all(isinstance(r, (Output, TargetError)) for r in results), "call() returns an Output or raises TargetError")
    _require(answered, "the target answered none of the sample items")
    for o in answered:
        _require(o.text is None or isinstance(o.text, str), "Output.text is a str")
        _require(math.isfinite(o.latency_s) and o.latency_s >= 0, "Output.latency_s is a finite time")
    _require(target.stats.requests - before >= len(answered), "the target counts its requests (stats.requests)")
    return target


# -- judges ----------------------------------------------------------------------------------------
def check_judge(name: str) -> Any:
    """A registered judge (``get_judge(name)``): a :class:`~assay.judges.base.Judge` with a
    known question, a content-addressed version (``name@sha256:<hex>``, stable), a JSON config,
    one :class:`~assay.judges.base.Judgment` per pair (a verdict, or None only when unparsed,
    scores in [0, 1]), the same from ``ajudge`` and twice, an empty batch judged to [], and bad
    pairs refused with BadInput."""
    from assay.judges import QUESTIONS, Judge, Judgment, get_judge
    from assay.judges.registry import JUDGES

    _require(name in JUDGES, f"judge {name!r} is not registered (known: {', '.join(JUDGES)})")
    judge = get_judge(name)
    _require(isinstance(judge, Judge), f"judge {name!r} is not a Judge")
    _require(judge.name == name, f"the judge registered as {name!r} calls itself {judge.name!r}")
    _require(judge.question in QUESTIONS, f"question {judge.question!r} is not one of {', '.join(QUESTIONS)}")
    _json(judge.config(), "config()")
    _require(VERSION.match(judge.version) and judge.version == get_judge(name).version,
             f"version {judge.version!r} is name@sha256:<hex> and the same for the same config")
    pairs = [(it.prompt_text, o.text) for it, o in zip(_sample_items(), _sample_outputs(), strict=True)]
    verdicts = judge.judge(pairs)
    _require(isinstance(verdicts, list) and len(verdicts) == len(pairs), "judge() returns one Judgment per pair")
    for i, j in enumerate(verdicts):
        _require(isinstance(j, Judgment), f"pair {i}: a Judgment")
        _require(j.verdict in (True, False) or (j.verdict is None and j.unparsed), f"pair {i}: a verdict, or None with unparsed")
        _require(j.score is None or (isinstance(j.score, float) and 0.0 <= j.score <= 1.0), f"pair {i}: score in [0, 1]")
    _require(judge.judge(pairs) == verdicts, "judging the same pairs twice gives the same verdicts")
    _require(asyncio.run(judge.ajudge(pairs)) == verdicts, "ajudge() agrees with judge()")
    _require(judge.judge([]) == [], "an empty batch is judged to []")
    try:
        judge.judge([("prompt", 3)])
    except BadInput:
        pass
    else:
        raise ContractError("a pair whose response is not a string is refused with BadInput (use judges.base.as_pairs)")
    judge.close()
    return judge


# -- classifiers -----------------------------------------------------------------------------------
def check_classifier(name: str, texts: Sequence[str] | None = None) -> Any:
    """A registered classifier (``load_classifier(name)``): ``score(texts)`` gives one finite
    probability in [0, 1] per text as a float array (an empty list gives an empty array), the
    same twice; ``threshold`` is in [0, 1]; ``predict`` is ``score >= threshold``; ``version``
    is ``name@sha256:<hex>``."""
    from assay.classify import CLASSIFIERS, load_classifier

    _require(name in CLASSIFIERS, f"classifier {name!r} is not registered (known: {', '.join(CLASSIFIERS)})")
    clf = load_classifier(name)
    texts = list(texts if texts is not None else ["a kind note", "YOU ARE AN IDIOT", "", "ünïcödé ✓", "x" * 5000])
    scores = np.asarray(clf.score(texts))
    _require(scores.shape == (len(texts),) and scores.dtype.kind == "f", "score() gives one float per text")
    _require(np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all(), "scores are probabilities in [0, 1]")
    _require(np.array_equal(scores, np.asarray(clf.score(texts))), "scoring the same texts twice gives the same scores")
    _require(np.asarray(clf.score([])).shape == (0,), "an empty list scores to an empty array")
    threshold = float(clf.threshold)
    _require(0.0 <= threshold <= 1.0, "threshold is in [0, 1]")
    _require(np.array_equal(np.asarray(clf.predict(texts), dtype=bool), scores >= threshold), "predict() is score >= threshold")
    _require(isinstance(clf.version, str) and VERSION.match(clf.version) and clf.version.startswith(f"{name}@"),
             f"version {clf.version!r} is {name}@sha256:<hex>")
    return clf


# -- attacks ---------------------------------------------------------------------------------------
def check_attack(family: str, limit: int = 6, seed: int = 0) -> list[Any]:
    """A registered attack family, built as a red-team run builds it: attacks of that family
    with unique ids, a goal, a category, a source and non-empty string turns, a known success
    criterion, the same for the same seed, and a ``limit`` sample no larger than asked."""
    from assay.redteam.attacks import ATTACKS, Attack, build

    _require(family in ATTACKS, f"attack family {family!r} is not registered (known: {', '.join(ATTACKS)})")
    attacks = build([family], limit_per_family=limit, seed=seed)
    _require(attacks, f"family {family!r} built no attacks")
    _require(len(attacks) <= limit, f"limit_per_family={limit} gave {len(attacks)} attacks")
    _require(len({a.id for a in attacks}) == len(attacks), "attack ids are unique")
    for a in attacks:
        _require(isinstance(a, Attack) and a.family == family, f"{a.id}: an Attack of family {family!r}")
        _require(a.goal and a.category and a.source, f"{a.id}: goal, category and source are set")
        _require(a.turns and all(isinstance(t, str) and t for t in a.turns), f"{a.id}: turns are non-empty strings")
        _require(a.criterion.kind in ("complied", "judge_question"), f"{a.id}: criterion {a.criterion.kind!r}")
        _require(Attack.from_dict(json.loads(json.dumps(a.to_dict()))) == a, f"{a.id}: survives to_dict/from_dict as JSON")
    _require(build([family], limit_per_family=limit, seed=seed) == attacks, "the same seed builds the same attacks")
    return attacks


# -- guard actions ---------------------------------------------------------------------------------
def _reference_walk(actions: list[Any], outcomes: np.ndarray, fail_closed: np.ndarray, live: np.ndarray,
                    pre_dropped: np.ndarray) -> dict[str, np.ndarray]:
    """The per-candidate rule walk of docs/policy.md, one candidate and one rule at a time, read
    from the action types' own attributes (not from the table the slate's walk is given): the
    first matching hard rule decides (a fail-closed MISSING decides as a drop), soft rules before
    it stack their score factors in rule order and the first of the highest precedence names the
    candidate, and a dropped candidate is recorded as drop."""
    from assay.policy.actions import ACTIONS, Act

    n_rules, n = outcomes.shape
    precedence = {ACTIONS.get(name).code: ACTIONS.get(name).precedence for name in ACTIONS}
    out = {"first": np.full(n, n_rules, dtype=np.int32), "failed_closed": np.zeros(n, dtype=bool),
           "dropped": pre_dropped.astype(bool).copy(), "action": np.full(n, int(Act.ALLOW), dtype=np.int8),
           "factor": np.ones(n), "soft": np.zeros((n_rules, n), dtype=bool)}
    for i in range(n):
        if pre_dropped[i]:
            out["action"][i] = int(Act.DROP)
            continue
        factor, named = 1.0, int(Act.ALLOW)
        for r in range(n_rules):
            v = int(outcomes[r, i])
            if not live[r] or not (v == 1 or (v == 2 and fail_closed[r])):
                continue
            a = actions[r]
            if a.hard or v == 2:
                out["first"][i], out["failed_closed"][i] = r, v == 2
                out["dropped"][i] = v == 2 or a.drops
                break
            out["soft"][r, i] = True
            factor *= a.score_factor
            if a.precedence > precedence[named]:
                named = a.code
        out["factor"][i] = factor
        out["action"][i] = int(Act.DROP) if out["dropped"][i] else named
    return out


def check_action(written: str, trials: int = 20) -> Any:
    """A registered guard action, as a bundle writes it (``"boost(2)"``): it parses to its own
    type, whose canonical text (what the bundle hash covers) parses back to an equal action; its
    explanation is text; the slate's rule walk (in C, given the action table) agrees with a
    walk written from the action types' attributes on random outcomes of rules mixing it with
    the built-ins; and a bundle rule with it decides a slate end to end."""
    import tempfile
    import textwrap
    from pathlib import Path

    from assay.policy import slate
    from assay.policy.actions import ACTION_NAMES, ACTIONS, GuardAction
    from assay.policy.bundle import _parse_action, load_bundle
    from assay.policy.model import Rule

    try:
        action = _parse_action(written)
    except ValueError as e:
        raise ContractError(f"{written!r} does not parse: {e}") from None
    _require(isinstance(action, GuardAction) and action.kind in ACTIONS, f"{written!r} parses to a registered action")
    _require(ACTIONS.get(action.kind) is type(action), "the action is an instance of the type registered under its name")
    _require(_parse_action(str(action)) == action, f"str(action) {str(action)!r} parses back to the same action")
    _require(ACTION_NAMES[action.code] == action.kind, "the action's code names it in ACTION_NAMES")
    _require(isinstance(action.explain(), str) and action.explain(), "explain() is a non-empty text")
    _require(math.isfinite(action.score_factor) and action.score_factor >= 0, "score_factor is finite and >= 0")
    try:
        hash(action)
    except TypeError:
        raise ContractError("an action is immutable and hashable (a frozen dataclass)") from None

    # the rule walk the slate runs agrees with the walk the action types define, on rules mixing
    # it with every built-in
    others = [_parse_action(w) for w in ("drop", "allow", "demote(0.5)", 'label("x")', "cap(creator, 1)")]
    rng = np.random.default_rng(0)
    for _ in range(trials):
        n_rules, n = int(rng.integers(1, 12)), int(rng.integers(1, 40))
        acts = [action if rng.random() < 0.4 else others[int(rng.integers(len(others)))] for _ in range(n_rules)]
        rules = [Rule(id=f"r{r}", when="true", section="rules", reason="", location=None,
                      on_missing="fail_closed" if rng.random() < 0.8 else "skip", action=a) for r, a in enumerate(acts)]
        plan = slate.RulePlan.build(rules)
        outcomes = rng.choice(np.array([0, 1, 2], dtype=np.int8), (n_rules, n), p=[0.6, 0.3, 0.1])
        live, pre = rng.random(n_rules) < 0.9, rng.random(n) < 0.1
        got = slate.resolve(plan, outcomes, live, pre)
        want = _reference_walk(acts, outcomes, plan.fail_closed, live, pre)
        for field, expected in want.items():
            _require(np.array_equal(getattr(got, field), expected), f"the slate's rule walk differs from the action types' on {field}")

    # a bundle rule with it decides a slate
    bundle_text = textwrap.dedent(f"""\
        bundle: check-action
        attributes:
          rules:
            item.x: double
            item.creator: string
        rules:
          - id: checked
            when: item.x > 0.5
            action: '{str(action).replace("'", "''")}'
            reason: the action under check
        """)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bundle.yaml"
        path.write_text(bundle_text, encoding="utf-8")
        try:
            bundle = load_bundle(path)
        except AssayError as e:
            raise ContractError(f"a bundle rule with action {str(action)!r} does not load: {e.render()}") from None
    items = [{"x": x, "creator": c} for x, c in ((0.9, "a"), (0.1, "a"), (0.8, "b"), (0.7, "a"))]
    decision = slate.decide_records(bundle.compile_rules("*"), {"request": {}}, items)
    acted = [decision.candidate(j) for j in range(len(items))]
    _require(acted[1].action == "allow" and acted[1].rule_ids == [], "a candidate the rule does not match is untouched")
    # a hard action that drops is recorded as drop (every count of dropped candidates holds; the
    # rule id and reason name the action's rule); any other as itself, or allow where it marks nothing
    expected = {"drop"} if action.drops else {action.kind, "allow"}
    for j in (0, 2, 3):
        _require("checked" in acted[j].rule_ids or action.slate_step, f"candidate {j}: the rule that acted is named")
        _require(acted[j].action in expected, f"candidate {j}: its action is one of {sorted(expected)}, not {acted[j].action!r}")
    return action
