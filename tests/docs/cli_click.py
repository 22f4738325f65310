"""The click that typer uses: typer >= 0.20 vendors its own copy (``typer._click``), whose classes
are not the installed click's, so the docs tests take the classes from the command tree's side."""

from __future__ import annotations

import importlib
import importlib.util

# an older typer runs on the installed click
click = importlib.import_module("typer._click" if importlib.util.find_spec("typer._click") else "click")


def is_group(cmd) -> bool:
    """A command with subcommands (typer's groups are not ``click.Group`` subclasses)."""
    return hasattr(cmd, "list_commands") and hasattr(cmd, "commands")
