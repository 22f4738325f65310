"""Mitigations an alert can trigger, each recorded as an ``Event(kind="mitigation")`` that names
the alert event that caused it.

The bundle's ``alerts`` section names them as calls, parsed by the policy language::

    then: ['trip_breaker("for_you")', 'use_rules("for_you", "for_you_strict")', 'rollback("dep-7")']

=========================================  ===================================================
call                                       effect
=========================================  ===================================================
``trip_breaker(scope)``                    force the guard breaker of ``scope`` open
                                           (``FORCED_OPEN``: the fallback serves until an
                                           operator closes it). A bare name means
                                           ``surface:<name>``.
``use_rules(surface, stricter_surface)``   decide ``surface`` with the rules of
                                           ``stricter_surface``: its breaker is reconfigured
                                           with a ``stricter_rules`` fallback and forced open.
                                           Aliases: ``switch_rules``, ``tighten``.
``rollback(deployment_id[, to_version])``  roll a deployment back in the governance registry.
``notify(text)``                           record only (a page goes through the alert event).
=========================================  ===================================================

The effects reach other parts through what they expose: the guard's
:class:`~assay.guard.breakers.BreakerRegistry` and a rollback callable (the governance
registry's). A mitigation whose target is not wired raises :class:`assay.errors.Unavailable`
and is recorded as failed — never silently skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from assay.errors import AssayError, BadInput, Unavailable
from assay.records import Event

KNOWN = {
    "trip_breaker": (1, 1),
    "use_rules": (2, 2),
    "switch_rules": (2, 2),
    "tighten": (2, 2),
    "rollback": (1, 2),
    "notify": (1, 1),
}


def scope_of(name: str) -> str:
    return name if ":" in name else f"surface:{name}"


def check_call(name: str, args: tuple[Any, ...], where: str) -> None:
    """Refuse an unknown mitigation or wrong arity before the monitor starts, not mid-incident."""
    if name not in KNOWN:
        raise BadInput(f"{where}: unknown mitigation {name}(); known: {', '.join(sorted(KNOWN))}")
    lo, hi = KNOWN[name]
    if not lo <= len(args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise BadInput(f"{where}: {name}() takes {want} argument(s), got {len(args)}")
    for a in args[:2]:
        if name != "notify" and not isinstance(a, str):
            raise BadInput(f"{where}: {name}() arguments must be quoted strings, got {a!r}")


@dataclass
class Mitigator:
    """Carries out mitigation calls against the parts it is wired to."""

    breakers: Any = None  # assay.guard.breakers.BreakerRegistry
    rollback_fn: Callable[[str, str | None, str], Any] | None = None  # (deployment_id, to_version, reason)
    clock: Callable[[], float] = time.time
    applied: list[Event] = field(default_factory=list)

    def _breaker(self, scope: str) -> Any:
        if self.breakers is None:
            raise Unavailable(f"no guard breaker registry is wired to the monitor (needed for {scope})")
        b = self.breakers.get(scope)
        if b is None:
            raise Unavailable(f"the guard has no breaker policy covering scope {scope!r}",
                              hint="configure a ScopePolicy for that scope kind in the guard's BreakerRegistry")
        return b

    def apply(self, name: str, args: tuple[Any, ...], *, alert_id: str, alert_event_key: str, reason: str,
              bundle_hash: str = "") -> Event:
        """Run one call; return the mitigation event (``ok`` false with the error when it failed)."""
        payload: dict[str, Any] = {"call": f"{name}({', '.join(repr(a) for a in args)})", "name": name,
                                   "args": list(args), "alert": alert_id, "caused_by": alert_event_key,
                                   "reason": reason}
        try:
            payload.update(self._do(name, args, reason))
            payload["ok"] = True
        except AssayError as e:
            payload.update(ok=False, error=e.render())
        event = Event(kind="mitigation", ts=self.clock(), subject=payload.get("target", name), payload=payload,
                      bundle_hash=bundle_hash)
        self.applied.append(event)
        return event

    def _do(self, name: str, args: tuple[Any, ...], reason: str) -> dict[str, Any]:
        if name == "trip_breaker":
            scope = scope_of(args[0])
            b = self._breaker(scope)
            before = b.state.value
            b.force_open(f"monitor: {reason}")
            return {"target": scope, "from": before, "to": b.state.value}
        if name in ("use_rules", "switch_rules", "tighten"):
            from assay.guard.breakers import Fallback

            scope = scope_of(args[0])
            b = self._breaker(scope)
            policy = self.breakers.policy(scope)
            self.breakers.configure(scope, policy.config, Fallback("stricter_rules", surface=args[1]))
            b = self._breaker(scope)
            b.force_open(f"monitor: {reason}; serving with the rules of {args[1]}")
            return {"target": scope, "rules_of": args[1], "to": b.state.value}
        if name == "rollback":
            if self.rollback_fn is None:
                raise Unavailable("no governance registry is wired to the monitor (needed for rollback)")
            to_version = args[1] if len(args) > 1 else None
            result = self.rollback_fn(args[0], to_version, f"monitor: {reason}")
            return {"target": f"deployment:{args[0]}", "result": _plain(result)}
        if name == "notify":
            return {"target": "notify", "text": str(args[0])}
        raise BadInput(f"unknown mitigation {name}()")


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    to_dict = getattr(value, "to_dict", None)
    return _plain(to_dict()) if callable(to_dict) else str(value)
