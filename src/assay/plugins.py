"""Named extension points: one small registry type behind every place a newcomer adds a part.

Scorers, targets, judges (and judge kinds), classifiers, attack families and guard actions are
each a :class:`Registry` that maps a name to what builds the part (a class or a factory). The
built-ins register where they are defined, with the registry's decorator; a third-party package
registers through a Python entry point in the registry's group (``assay.scorers``,
``assay.targets``, ``assay.judges``, ``assay.judge_kinds``, ``assay.classifiers``,
``assay.attacks``, ``assay.actions``), loaded on the first lookup, as Inspect loads tasks,
solvers and scorers::

    [project.entry-points."assay.scorers"]
    length = "my_package.scorers:LengthScorer"

docs/extending.md says, per extension point, which one file to write and which contract check
(:mod:`assay.testing`) proves it. Hand-written rather than a plugin library (pluggy, stevedore)
because what is needed is small and specific: names checked at registration, duplicates
refused, and a lookup error that names the key and lists the known ones.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from assay.errors import BadInput

T = TypeVar("T")

# Lower-case words joined by "-" or "_" (``refusal-phrase``, ``crows_pairs``): a name is written
# in suites, bundles and on the command line, so it has one spelling and no surprises.
NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
MAX_NAME = 64


class RegistryError(BadInput):
    """A name that cannot be registered or is not registered (exit 2, like any bad input)."""


class Registry(Generic[T]):
    """Name -> part, for one extension point.

    ``what`` names the part in errors ("scorer", "guard action"); ``group`` is the entry-point
    group third-party packages register under; ``check(name, obj)`` validates what is registered
    (it raises :class:`RegistryError` or :class:`TypeError` with a message that says what is
    wrong), so a bad part is refused when it is added, never when it is first used."""

    def __init__(self, what: str, group: str | None = None, check: Callable[[str, T], None] | None = None) -> None:
        self.what = what
        self.group = group
        self._check = check
        self._items: dict[str, T] = {}
        self._lock = threading.RLock()
        self._entry_points_loaded = group is None

    # -- adding --------------------------------------------------------------------------------
    def register(self, name: str, obj: T | None = None) -> T | Callable[[T], T]:
        """``registry.register("name", obj)``, or as a decorator ``@registry.register("name")``."""
        if obj is None:
            def decorate(o: T) -> T:
                self._add(name, o)
                return o

            return decorate
        self._add(name, obj)
        return obj

    def _add(self, name: str, obj: T) -> None:
        if not isinstance(name, str) or len(name) > MAX_NAME or not NAME.fullmatch(name):
            raise RegistryError(f"{self.what} name {name!r} is not valid: lower-case letters and digits, words joined by "
                                f"'-' or '_', starting with a letter, at most {MAX_NAME} characters")
        if self._check is not None:
            try:
                self._check(name, obj)
            except TypeError as e:
                raise RegistryError(f"{self.what} {name!r}: {e}") from None
        with self._lock:
            if name in self._items:
                if self._items[name] is obj:  # the same module imported twice (an entry point's own import)
                    return
                raise RegistryError(f"{self.what} {name!r} is already registered (by {_origin(self._items[name])}); "
                                    f"choose another name for {_origin(obj)}")
            self._items[name] = obj

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return what it held (tests that add a part take it away again)."""
        with self._lock:
            if name not in self._items:
                raise self._unknown(name)
            return self._items.pop(name)

    # -- reading -------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """What ``name`` is registered as; an unknown name raises :class:`RegistryError` naming it
        and listing the known ones."""
        self._load_entry_points()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise self._unknown(name) from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return isinstance(name, str) and name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"<Registry {self.what}: {', '.join(self._items)}>"

    def _unknown(self, name: object) -> RegistryError:
        known = ", ".join(self._items) or "none"
        return RegistryError(f"unknown {self.what} {name!r}; known: {known}",
                             hint=f"register one with the {self.what} decorator, or through the entry-point group "
                                  f"{self.group!r} (docs/extending.md)" if self.group else None)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        with self._lock:
            if self._entry_points_loaded:
                return
            self._entry_points_loaded = True  # first: a plugin that looks itself up while loading does not recurse
            from importlib.metadata import entry_points

            for ep in entry_points(group=self.group):
                try:
                    obj = ep.load()
                except Exception as e:  # a broken plugin is named, not skipped: its parts would vanish silently
                    self._entry_points_loaded = False  # and named again at every lookup, never half-loaded in silence
                    raise RegistryError(f"{self.what} entry point {ep.name!r} ({ep.value}) in group {self.group!r} "
                                        f"failed to load: {type(e).__name__}: {e}") from None
                if self._items.get(ep.name) is not obj:
                    self._add(ep.name, obj)


def check_factory(obj: object, base: type, what: str) -> None:
    """The registration check of a registry of ``base`` builders: ``obj`` is callable and, when it
    is a class, a subclass of ``base``. ``what`` says what may be registered, for the error."""
    if not callable(obj):
        raise TypeError(f"{what}, not {type(obj).__name__}")
    if isinstance(obj, type) and not issubclass(obj, base):
        raise TypeError(f"{obj.__qualname__} is a class but not a subclass of {base.__module__}.{base.__qualname__}")


def _origin(obj: object) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{qualname}"
