"""Where assay keeps state and finds data. Every location is a setting with an embedded default.

- ``ASSAY_HOME``: state directory (SQLite file, trace segments, caches, reports). Default ``./.assay``.
- ``ASSAY_DB_URL``: SQLAlchemy URL of the metadata store. Default: SQLite file under ``ASSAY_HOME``.
- ``ASSAY_DATA_DIR``: public datasets (the layout of ``../shared/datasets``). Default ``../shared/datasets``.
- ``ASSAY_DATA_ROOTS``: the folders (separated by ``:``) whose files the registry may hash for a
  request that came over the network. Default: ``ASSAY_DATA_DIR`` and ``ASSAY_HOME``. When set, it
  binds the command line too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    data_dir: Path
    data_roots: tuple[Path, ...] = ()
    data_roots_configured: bool = False

    def path(self, *parts: str) -> Path:
        """A path under ``ASSAY_HOME``, with its parent created."""
        p = self.home.joinpath(*parts)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # ASSAY_HOME is a file, under a file, or not writable
            from assay.errors import BadInput

            raise BadInput(f"ASSAY_HOME={self.home}: cannot create the folder {p.parent}: {e.strerror}",
                           hint="point ASSAY_HOME at a folder this user may write") from None
        return p


def settings() -> Settings:
    """Read the settings from the environment now (tests change it between calls)."""
    home = Path(os.environ.get("ASSAY_HOME", ".assay")).expanduser().resolve()
    db_url = os.environ.get("ASSAY_DB_URL") or f"sqlite:///{home / 'assay.db'}"
    data_dir = Path(os.environ.get("ASSAY_DATA_DIR", "../shared/datasets")).expanduser().resolve()
    configured = os.environ.get("ASSAY_DATA_ROOTS", "").strip()
    roots = tuple(Path(p).expanduser().resolve() for p in configured.split(os.pathsep) if p.strip()) \
        if configured else (data_dir, home)
    return Settings(home=home, db_url=db_url, data_dir=data_dir, data_roots=roots, data_roots_configured=bool(configured))


def int_setting(name: str, default: int, low: int = 1, high: int | None = None) -> int:
    """A whole-number setting from the environment (``default`` when unset), or bad input naming it."""
    from assay.errors import BadInput

    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"{name}={raw[:40]!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        raise BadInput(f"{name}={value} must be {f'between {low} and {high}' if high is not None else f'at least {low}'}")
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def flag_setting(name: str, default: bool = False) -> bool:
    """A yes/no setting from the environment (``default`` when unset or empty): 1/true/yes/on or
    0/false/no/off, any case; anything else is bad input naming it, never quietly "no" (a
    ``ASSAY_POLICY_REQUIRE_SIGNED=true`` read as "no" would serve unsigned bundles)."""
    from assay.errors import BadInput

    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise BadInput(f"{name}={raw[:40]!r} is neither yes nor no", hint=f"set {name}=1 or {name}=0")


def choice_setting(name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    """One of ``choices`` from the environment (``default`` when unset or empty, any case); any
    other value is bad input naming the setting and its choices."""
    from assay.errors import BadInput

    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise BadInput(f"{name}={raw[:40]!r} is not one of {', '.join(choices)}")
    return raw
