"""The real-time guard: policy rules applied to live candidate batches in milliseconds, with
fail-closed defaults, circuit breakers and fallbacks. See docs/guard.md."""

from assay.guard.breakers import (
    BreakerConfig,
    BreakerRegistry,
    CallOutcome,
    CircuitBreaker,
    Fallback,
    IllegalTransition,
    ScopePolicy,
    State,
    WindowType,
    default_registry,
    drop_rate_above,
)
from assay.guard.core import CompiledBundle, Guard, GuardConfig, Slate, compile_bundle
from assay.guard.sink import DecisionQueue

__all__ = [
    "BreakerConfig",
    "BreakerRegistry",
    "CallOutcome",
    "CircuitBreaker",
    "CompiledBundle",
    "DecisionQueue",
    "Fallback",
    "Guard",
    "GuardConfig",
    "IllegalTransition",
    "ScopePolicy",
    "Slate",
    "State",
    "WindowType",
    "compile_bundle",
    "default_registry",
    "drop_rate_above",
]
