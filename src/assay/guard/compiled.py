"""A bundle compiled for serving: per surface, the rules compiled once (the vectorised
evaluator, the C rule programs), what the label store is asked for, and which candidate and
request fields the rules read. A ``Guard`` holds one immutable :class:`CompiledBundle` and
swaps it atomically on reload. Split out of ``core.py`` (issue 22).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from assay.errors import BadInput
from assay.guard.candidates import LABEL_PREFIX
from assay.policy.slate import RulePlan


@dataclass(frozen=True)
class CompiledSurface:
    surface: str
    compiled: Any  # assay.policy CompiledRules
    plan: RulePlan
    label_names: tuple[str, ...]  # the X of item.labels.X read by the rules
    # what building a request's batch needs, sorted out once: (attribute, label) for item.labels.X,
    # (attribute, candidate field) for the other item.* attributes, (attribute, path under the
    # request) for request.*
    label_attrs: tuple[tuple[str, str], ...]
    field_attrs: tuple[tuple[str, str], ...]
    request_paths: tuple[tuple[str, tuple[str, ...]], ...]
    label_columns: tuple[str, ...]  # labels.X per label_names
    recorded_fields: tuple[str, ...] = ()  # candidate fields a re-decision needs: those the rules read, the cap keys

    @property
    def specs(self) -> tuple[Any, ...]:
        return self.plan.rules


@dataclass(frozen=True)
class CompiledBundle:
    """An immutable, compiled bundle: what one request is decided by."""

    bundle: Any
    version: str
    hash: str
    surfaces: dict[str, CompiledSurface]

    def surface(self, name: str) -> CompiledSurface:
        s = self.surfaces.get(name)
        if s is None:
            known = ", ".join(sorted(self.surfaces)) or "(none)"
            raise BadInput(f"unknown surface {name!r}; bundle {self.bundle.name} {self.version} has rules for: {known}")
        return s


def compile_bundle(bundle: Any, extra_surfaces: tuple[str, ...] = ()) -> CompiledBundle:
    """Compile every surface the bundle names (plus ``extra_surfaces``) before it serves."""
    surfaces: dict[str, CompiledSurface] = {}
    for name in sorted(set(bundle.surfaces()) | set(extra_surfaces)):
        compiled = bundle.compile_rules(name)
        plan = RulePlan.of(compiled)
        reads = compiled.reads
        labels = tuple(sorted(a[len("item.labels."):] for a in reads if a.startswith("item.labels.")))
        surfaces[name] = CompiledSurface(
            name, compiled, plan, labels,
            label_attrs=tuple(("item.labels." + x, x) for x in labels),
            field_attrs=tuple((a, a[len("item."):]) for a in reads if a.startswith("item.") and not a.startswith("item.labels.")),
            request_paths=tuple((a, tuple(a.split(".")[1:])) for a in reads if a.startswith("request.")),
            label_columns=tuple(LABEL_PREFIX + x for x in labels),
            recorded_fields=tuple(sorted(({a[len("item."):] for a in reads if a.startswith("item.") and not a.startswith("item.labels.")}
                                          | {plan.rules[r].action.key for r in plan.cap_rows.tolist()}) - {"id", "score"})),
        )
    return CompiledBundle(bundle, str(bundle.version), str(bundle.hash), surfaces)


def _warm_imports() -> None:
    """Import what the first request would otherwise import inside its deadline budget."""
    import pandas
    import pandas.api.types  # noqa: F401
    import pyarrow
    import pyarrow.compute  # noqa: F401  (list columns are converted by Arrow)


def freeze_startup_heap() -> None:
    """Put everything allocated while starting (the compiled bundle, the label tables, imported
    libraries) out of the cyclic garbage collector's reach (``gc.freeze``). A full collection
    then scans only what serving allocates, instead of pausing one request in a few hundred for
    the whole heap: the guard's server and stream worker call this once they are built."""
    import gc

    gc.collect()
    gc.freeze()
