"""The standing attack on the control plane: schemathesis over its own OpenAPI schema.

Two phases, both bounded: every operation with generated requests that fit the schema and
requests that do not (``examples`` of each per operation), then stateful scenarios in which
schemathesis follows the links it infers between operations (a registered dataset's id into a
model's ``trained_on``, a deployment's id into its approvals, ...) for ``scenarios`` runs of up
to ``steps`` calls. Every response is checked: never a 5xx, only documented status codes and
content types, bodies that match the documented schema. The calls go through the ASGI app in
process, with an admin token so they reach the handlers, against a store seeded with a dataset,
a model, a transformation and a deployment (``seed``).

Used by ``tests/server/test_server_attack.py`` (both stores) and ``assay bench govern``
(``schemathesis_5xx`` and the number of calls per store). Needs the ``dev`` extra.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.errors import require_extra

BUNDLE = Path(__file__).resolve().parents[1] / "govern" / "default_bundle.yaml"


@dataclass
class AttackResult:
    """What one attack run saw: calls made, responses by status class, and every failed check."""

    calls: int = 0
    stateless_calls: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seen: Counter = field(default_factory=Counter)  # (operation, status) -> calls

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def record(self, status: int, label: str = "") -> None:
        self.calls += 1
        self.statuses[status] += 1
        self.seen[(label, status)] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "stateful_calls": self.calls - self.stateless_calls, "5xx": self.server_errors, "failures": len(self.failures),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}, "first_failures": self.failures[:5]}


def seed(store: Any, folder: Path) -> str:
    """A dataset, a model trained on it, a transformation and a deployment under the default
    bundle, written into ``store`` (files in ``folder``); returns an admin token for the fuzzer."""
    from assay.govern.gate import request_deployment
    from assay.govern.registry import (
        Actor,
        register_dataset,
        register_model,
        register_transformation,
    )
    from assay.server.auth import create_token

    engineer = Actor("erin", "engineer")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data" / "ratings.csv").write_text("user,item,rating\n1,2,5\n")
    (folder / "weights").mkdir(exist_ok=True)
    (folder / "weights" / "ranker.txt").write_text("tree 1\n")
    ds = register_dataset(store, engineer, name="ratings", uri=str(folder / "data"), purposes=["recommendation"])
    model = register_model(store, engineer, name="ranker", weights=[folder / "weights" / "ranker.txt"],
                           trained_on=[ds["id"]])
    register_transformation(store, engineer, name="k-anonymise", lifts=["pii"])
    request_deployment(store, engineer, model=model["id"], surface="for_you", purpose="recommendation", bundle=BUNDLE)
    return create_token(store, Actor("root", "admin"), name="fuzzer", role="admin")["token"]


def _checks():
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    return [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _failure(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip()[:1500]}"


def _call(case: Any, headers: dict[str, str], result: AttackResult, label: str) -> Any:
    """One request; an exception escaping the app (the in-process transport re-raises it) is a 500."""
    try:
        response = case.call(headers=headers)
    except Exception:
        result.record(500, label)
        raise
    result.record(response.status_code, label)
    return response


def attack(app: Any, token: str, *, examples: int = 5, scenarios: int = 20, steps: int = 6) -> AttackResult:
    """Run both phases against ``app``; deterministic (hypothesis derandomised) and bounded."""
    schemathesis = require_extra("schemathesis", "dev")
    import hypothesis
    from hypothesis import HealthCheck, given
    from schemathesis.generation.modes import GenerationMode

    result = AttackResult()
    headers = {"Authorization": f"Bearer {token}"}
    checks = _checks()
    settings = hypothesis.settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                                   suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    for operation in [r.ok() for r in schema.get_all_operations()]:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings
            def one(case) -> None:
                response = _call(case, headers, result, case.operation.label)
                case.validate_response(response, checks=checks, headers=headers)

            try:
                one()
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing to get wrong (no parameters, no body): the positive run covers it
            except (Exception, BaseExceptionGroup) as e:  # failed checks (a group): recorded, the run goes on
                result.failures.append(f"{operation.label} ({mode.value}): {_failure(e)}")

    result.stateless_calls = result.calls
    machine = schema.as_state_machine()

    class Scenario(machine):  # type: ignore[misc, valid-type]
        def call(self, case, **kwargs) -> Any:
            return _call(case, headers, result, "stateful " + case.operation.label)

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            case.validate_response(response, checks=checks, headers=headers)

    try:
        Scenario.run(settings=hypothesis.settings(settings, max_examples=scenarios, stateful_step_count=steps))
    except (Exception, BaseExceptionGroup) as e:
        result.failures.append(f"stateful: {_failure(e)}")
    return result


def attack_store(db_url: str | None, **limits: Any) -> AttackResult:
    """Seed a store at ``db_url`` (a fresh SQLite file when None) and attack an app on it. The
    data roots are the seed folder, so the attack also probes the confinement of file paths."""
    import os

    from assay.server.app import create_app
    from assay.store import open_store

    with tempfile.TemporaryDirectory(prefix="assay-attack-") as tmp:
        saved = os.environ.get("ASSAY_DATA_ROOTS")
        os.environ["ASSAY_DATA_ROOTS"] = tmp
        store = open_store(db_url or f"sqlite:///{tmp}/attack.db")
        try:
            token = seed(store, Path(tmp))
            return attack(create_app(store), token, **limits)
        finally:
            store.close()
            if saved is None:
                os.environ.pop("ASSAY_DATA_ROOTS", None)
            else:
                os.environ["ASSAY_DATA_ROOTS"] = saved
