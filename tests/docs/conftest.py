"""Fixtures of the docs tests: the ``assay`` command tree, and a way to run a documented
command in-process (the same ``main`` the console script calls) inside the test's ASSAY_HOME."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def cli():
    """The click command behind ``assay`` (every part's commands registered)."""
    import typer

    from assay.cli.main import app

    return typer.main.get_command(app)
