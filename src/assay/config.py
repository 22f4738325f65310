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
        p.parent.mkdir(parents=True, exist_ok=True)
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
        raise BadInput(f"{name}={raw!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        raise BadInput(f"{name}={value} must be {f'between {low} and {high}' if high is not None else f'at least {low}'}")
    return value
