"""The one enumeration of what a serving rule does to a candidate, and the reasons a candidate
can leave a slate before any rule decides.

The C extension (``_native.c``) numbers actions in its own enum for its resolution loop; it
exports them as ``ACTIONS`` and this module refuses to import when the two differ, so the
compiled resolution and the Python semantics can never disagree on what a code means.
"""

from __future__ import annotations

from enum import IntEnum


class Act(IntEnum):
    """A candidate's action, as the slate arrays hold it (int8)."""

    DROP = 0
    ALLOW = 1
    DEMOTE = 2
    LABEL = 3
    CAP = 4

    @property
    def label(self) -> str:
        return self.name.lower()


ACTION_NAMES = tuple(a.label for a in Act)  # code -> name, e.g. ACTION_NAMES[Act.CAP] == "cap"
ACTION_CODES = {a.label: int(a) for a in Act}  # name -> code

# what a slate's hard_rule holds where no rule index does: no rule decided, or why the candidate
# left the slate before any rule ran
NO_RULE = -1
UNLABELED = -2  # none of the labels the surface's rules read (a fail-closed surface)
BREAKER = -3  # a circuit breaker of its source, or of the whole request, is open
DEADLINE = -4  # the deadline budget ran out before the rules ran
GUARD_REASONS = {
    UNLABELED: ("guard:unlabeled", "no labels for this item on a fail-closed surface"),
    DEADLINE: ("guard:deadline", "deadline budget exhausted before the rules ran (fail-closed)"),
}


def _check_native() -> None:
    try:
        from assay.policy import _native
    except ImportError:  # pragma: no cover - built without a C compiler: nothing to agree with
        return
    native = tuple(tuple(pair) for pair in getattr(_native, "ACTIONS", ()))
    ours = tuple((a.label, int(a)) for a in Act)
    if native != ours:
        raise ImportError(f"assay.policy._native numbers actions {native}, but assay.policy.actions.Act is {ours}: "
                          "rebuild the extension from this source (pip install -e . or setup.py build_ext)")


_check_native()
