"""The real-time guard: policy rules applied to live candidate batches in milliseconds, with
fail-closed defaults, circuit breakers and fallbacks. See docs/guard.md."""

from assay.guard.breakers import (
    BreakerConfig,
    BreakerRegistry,
    CallOutcome,
    CircuitBreaker,
    Fallback,
    ScopePolicy,
    State,
    WindowType,
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
    "ScopePolicy",
    "Slate",
    "State",
    "WindowType",
    "compile_bundle",
]
