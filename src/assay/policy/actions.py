"""What a serving rule does to a candidate: each action is one small type (rule -> action ->
reason, as visibility filtering libraries shape it) that owns its parsing from a bundle, its
vectorised application and its explanation text; and the reasons a candidate can leave a slate
before any rule decides.

An action type says how the rule walk treats it (class attributes, read into the table the C
resolution and its numpy twin run on, so the C code knows no action by name):

- ``hard``: the first matching hard rule decides the candidate (``drops``: by removing it);
- otherwise it is soft and stacks with the other soft rules matching before the deciding one:
  ``score_factor`` multiplies the candidate's score, ``interstitial`` is shown with it, and
  ``precedence`` decides which soft action names the candidate when several act (highest wins);
- ``slate_step``: it acts once more after ranking (``after_ranking``), as ``cap`` does.

A new action is one file: a frozen dataclass subclass of :class:`GuardAction` decorated with
``@register_action("name")``; ``assay.testing.check_action`` checks it (docs/extending.md).
The built-ins keep the codes :class:`Act` numbers them with; others get the next free code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

import numpy as np

from assay.plugins import Registry, RegistryError


class Act(IntEnum):
    """The built-in actions' codes, as the slate arrays hold them (int8)."""

    DROP = 0
    ALLOW = 1
    DEMOTE = 2
    LABEL = 3
    CAP = 4

    @property
    def label(self) -> str:
        return self.name.lower()


MAX_CODES = 128  # int8 codes


class _ActionType(type):
    """``Action("demote", factor=0.5)`` (on the base class) builds the registered type of that
    name from its fields, so code that names an action by kind needs no import of its type."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is GuardAction and args and isinstance(args[0], str):
            kind, *rest = args
            return ACTIONS.get(kind)(*rest, **{k: v for k, v in kwargs.items() if v is not None})
        if cls is GuardAction:
            raise TypeError("GuardAction is the base of the action types: name one (GuardAction('drop')) or use its type")
        return super().__call__(*args, **kwargs)


class GuardAction(metaclass=_ActionType):
    """Base of every guard action. Subclasses are frozen dataclasses whose fields are the
    action's arguments; the class attributes below say how the rule walk treats it."""

    name: ClassVar[str] = ""  # set at registration
    code: ClassVar[int] = -1  # set at registration: the int8 code slate arrays hold
    hard: ClassVar[bool] = False
    drops: ClassVar[bool] = False
    precedence: ClassVar[int] = 0
    slate_step: ClassVar[bool] = False
    verb: ClassVar[str] = "acted on"  # past participle for explanations: "dropped", "demoted"
    usage: ClassVar[str] = ""  # how it is written in a bundle, for error hints: "demote(f)"
    # what the built-ins' fields are called, so code reading ``rule.action.factor`` etc. works on any action
    factor: Any = None
    text: Any = None
    key: Any = None
    limit: Any = None

    @classmethod
    def parse(cls, args: list[str]) -> GuardAction:
        """The action from the arguments written in a bundle (``demote(0.5)`` -> ``["0.5"]``);
        raises ValueError saying what is wrong. The default takes no arguments."""
        if args:
            raise ValueError(f"{cls.name} takes no arguments")
        return cls()

    @property
    def kind(self) -> str:
        return self.name

    @property
    def score_factor(self) -> float:
        """What a candidate's score is multiplied by where this (soft) action acts."""
        return 1.0

    @property
    def interstitial(self) -> str | None:
        """The text shown with a served candidate this (soft) action acted on, if any."""
        return None

    def after_ranking(self, positions: np.ndarray, key_column: Any) -> np.ndarray:
        """For a ``slate_step`` action: of the served candidates it acted on (``positions``, best
        ranked first), those it removes. ``key_column`` is the candidates' ``key`` field."""
        raise NotImplementedError(f"{self.name} is not a slate step")

    def explain(self) -> str:
        """What the action did, for a person: "demoted to 0.5 of its score"."""
        return self.verb

    def __str__(self) -> str:
        """The action as written in a bundle (what the bundle's canonical form and hash hold)."""
        return self.name


def _check_action(name: str, obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, GuardAction)) or obj is GuardAction:
        raise TypeError("a guard action is a subclass of assay.policy.actions.GuardAction")
    if obj.hard and obj.slate_step:
        raise TypeError("a hard action decides the candidate; it cannot also be a slate step")
    if not -128 <= int(obj.precedence) <= 127:
        raise TypeError("precedence must fit an int8")
    if obj.name and obj.name != name:
        raise TypeError(f"{obj.__qualname__} is already registered as {obj.name!r}")


class ActionRegistry(Registry[type]):
    """The guard actions by name; registering one gives it its code and a row of the table."""

    def _add(self, name: str, obj: Any) -> None:
        with self._lock:
            used = {cls.code for cls in self._items.values() if cls is not obj}
            code = {a.label: int(a) for a in Act}.get(name)  # the built-ins keep their codes
            if code is None:
                own = obj.__dict__.get("code", -1)  # registered before (and taken away): the same code if free
                code = own if own >= len(Act) and own not in used else \
                    next((c for c in range(len(Act), MAX_CODES) if c not in used), None)
                if code is None:
                    raise RegistryError(f"guard action {name!r}: no code left ({MAX_CODES} actions at most)")
            super()._add(name, obj)
            obj.name, obj.code = name, code
            _sync()

    def unregister(self, name: str) -> type:
        with self._lock:
            cls = super().unregister(name)
            _sync()
            return cls

    def by_code(self, code: int) -> type[GuardAction]:
        for cls in self._items.values():
            if cls.code == code:
                return cls
        raise RegistryError(f"no guard action has code {code}")


ACTIONS = ActionRegistry("guard action", "assay.actions", _check_action)
register_action = ACTIONS.register  # @register_action("name") on a GuardAction subclass
Action = GuardAction  # the name the policy model has always used


ACTION_NAMES: list[str] = []  # code -> name, e.g. ACTION_NAMES[Act.CAP] == "cap"; kept in step with ACTIONS


def _sync() -> None:
    """Bring ``ACTION_NAMES`` in step with the registry (in place: modules hold it by reference)."""
    classes = list(ACTIONS._items.values())
    names = ["unregistered"] * (max(c.code for c in classes) + 1 if classes else 0)
    for c in classes:
        names[c.code] = c.name
    ACTION_NAMES[:] = names


def action_table() -> np.ndarray:
    """int8 (codes, 3): (hard, drops, precedence) per action code, what the rule walk reads;
    made from the registered types each time (once per compiled rule list), so it cannot drift
    from them."""
    ACTIONS._load_entry_points()
    with ACTIONS._lock:
        classes = list(ACTIONS._items.values())
    table = np.zeros((max(c.code for c in classes) + 1, 3), dtype=np.int8)
    for c in classes:
        table[c.code] = (c.hard, c.drops, c.precedence)
    table.setflags(write=False)
    return table


def action_names() -> list[str]:
    """Every registered action's name, in registration order (the built-ins first)."""
    return ACTIONS.names()


def explain(name: str) -> str:
    """The past participle of the action ``name`` ("dropped"), for explanations; an unknown
    name (an old record) is explained as what it is."""
    return ACTIONS.get(name).verb if name in ACTIONS else name


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


# -- the built-in actions --------------------------------------------------------------------------
@register_action("drop")
@dataclass(frozen=True)
class Drop(GuardAction):
    """Remove the candidate (hard: the first matching hard rule decides)."""

    hard: ClassVar[bool] = True
    drops: ClassVar[bool] = True
    verb: ClassVar[str] = "dropped"
    usage: ClassVar[str] = "drop"


@register_action("allow")
@dataclass(frozen=True)
class Allow(GuardAction):
    """Serve the candidate; later rules do not act on it (hard)."""

    hard: ClassVar[bool] = True
    verb: ClassVar[str] = "allowed"
    usage: ClassVar[str] = "allow"


@register_action("demote")
@dataclass(frozen=True)
class Demote(GuardAction):
    """Multiply the candidate's score by ``factor`` in [0, 1) before ranking (soft: stacks)."""

    factor: float = 0.5
    precedence: ClassVar[int] = 2
    verb: ClassVar[str] = "demoted"
    usage: ClassVar[str] = "demote(f)"

    @classmethod
    def parse(cls, args: list[str]) -> GuardAction:
        if len(args) != 1:
            raise ValueError("demote takes one factor, e.g. demote(0.5)")
        try:
            factor = float(args[0])
        except ValueError:
            raise ValueError(f"demote factor must be a number, not {args[0]!r}") from None
        if not 0 <= factor < 1:
            raise ValueError("demote factor must be in [0, 1)")
        return cls(factor)

    @property
    def score_factor(self) -> float:
        return float(self.factor)

    def explain(self) -> str:
        return f"demoted to {self.factor:g} of its score"

    def __str__(self) -> str:
        return f"demote({self.factor:g})"


@register_action("label")
@dataclass(frozen=True)
class Label(GuardAction):
    """Serve the candidate with an interstitial ``text`` (soft)."""

    text: str = ""
    precedence: ClassVar[int] = 1
    verb: ClassVar[str] = "labelled"
    usage: ClassVar[str] = "label(text)"

    @classmethod
    def parse(cls, args: list[str]) -> GuardAction:
        if len(args) != 1 or not args[0] or not args[0].strip("\"'").strip():
            raise ValueError('label takes one non-empty text, e.g. label("graphic content")')
        return cls(args[0].strip("\"'"))

    @property
    def interstitial(self) -> str | None:
        return self.text or ""

    def explain(self) -> str:
        return f"labelled {self.text!r}"

    def __str__(self) -> str:
        return f"label({self.text!r})"


@register_action("cap")
@dataclass(frozen=True)
class Cap(GuardAction):
    """After ranking, keep at most ``limit`` of the candidates it acted on per value of the
    candidate field ``key``, best ranked first (soft, a slate step)."""

    key: str = ""
    limit: int = 0
    slate_step: ClassVar[bool] = True
    verb: ClassVar[str] = "capped"
    usage: ClassVar[str] = "cap(key, n)"

    @classmethod
    def parse(cls, args: list[str]) -> GuardAction:
        if len(args) != 2:
            raise ValueError("cap takes a key and a limit, e.g. cap(creator, 2)")
        key = args[0].strip("\"'")
        try:
            limit = int(args[1])
        except ValueError:
            raise ValueError(f"cap limit must be an integer, not {args[1]!r}") from None
        if limit < 0 or not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise ValueError("cap needs a field name and a limit >= 0")
        return cls(key, limit)

    def after_ranking(self, positions: np.ndarray, key_column: Any) -> np.ndarray:
        from assay.policy.slate import cap_ordinals, group_ordinals, hashable

        if key_column is None:
            ordinal = np.arange(len(positions))  # no such field: one group
        elif not isinstance(key_column, np.ndarray):  # an Arrow list column: lists grouped as tuples
            ordinal = group_ordinals(hashable(key_column, positions))
        else:
            ordinal = cap_ordinals(key_column, positions)
        return positions[ordinal >= self.limit]

    def explain(self) -> str:
        return f"capped: more than {self.limit} per {self.key}"

    def __str__(self) -> str:
        return f"cap({self.key}, {self.limit})"


ACTION_CODES = {a.label: int(a) for a in Act}  # the built-ins' name -> code
# the built-ins' names, in code order: what has a fixed meaning everywhere (the monitor's
# ``window.<action>_rate`` attributes); a registered action is counted beside them by name
BUILTIN_ACTIONS = tuple(a.label for a in Act)


def _check_builtins() -> None:
    """The built-ins hold the codes :class:`Act` gives them (what arrays and old traces mean)."""
    for a in Act:
        if ACTIONS.get(a.label).code != int(a):  # pragma: no cover - a broken edit of this file
            raise ImportError(f"guard action {a.label!r} has code {ACTIONS.get(a.label).code}, not {int(a)}")


_check_builtins()
