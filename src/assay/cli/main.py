"""The ``assay`` command: one Typer app; each part adds its own commands.

Each part that has commands provides ``assay/<part>/cli.py`` with a function
``register(app: typer.Typer) -> None``. Those modules must import cheaply: heavy libraries
(PyTorch, LightGBM, transformers) are imported inside the command functions, so that
``assay --help`` and the guard stay fast on a machine without the ML extras.
"""

from __future__ import annotations

import importlib
import sys

import typer

from assay import __version__
from assay.errors import EXIT_BAD_INPUT, AssayError, dependency_down

# The parts that contribute commands, in the order they appear in --help.
PART_CLIS = [
    "assay.policy.cli",
    "assay.store.cli",
    "assay.govern.cli",
    "assay.guard.cli",
    "assay.trace.cli",
    "assay.cli.why",  # trace why: joins the trace with govern's lineage, so above both
    "assay.classify.cli",
    "assay.judges.cli",
    "assay.evaluate.cli",
    "assay.redteam.cli",
    "assay.monitor.cli",
    "assay.cli.watch",  # monitor run: the watch loop drives guard, redteam, evaluate, govern
    "assay.explain.cli",
    "assay.recsys.cli",
    "assay.mitigate.cli",
    "assay.server.cli",
    "assay.cli.bench",
    "assay.cli.demo",
]

app = typer.Typer(
    name="assay",
    help="assay: the safety operating system for recommender systems and LLM deployments.\n\n"
    "Evaluate and red-team models, govern data and weights by purpose, guard live slates in "
    "milliseconds, and keep a tamper-evident trace of every decision.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"assay {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """assay: the safety operating system for recommender systems and LLM deployments."""


def _load_parts() -> None:
    for name in PART_CLIS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that part has no commands yet
                continue
            raise
        module.register(app)


_load_parts()


def _click_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """Click's exception classes, from click itself and from the copy that typer vendors."""
    usage, errors = [], []
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        usage.append(mod.UsageError)
        errors.append(mod.ClickException)
    return tuple(usage), tuple(errors)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; an ``AssayError`` becomes a message on stderr and its exit code, and a
    dependency's own connection error (Redis, Kafka, a server) one line and exit 3."""
    from rich.console import Console
    from rich.markup import escape

    err = Console(stderr=True)
    try:
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int):  # click returns typer.Exit's code in non-standalone mode
            return rv
    except AssayError as e:
        err.print(f"[bold red]error:[/] {escape(e.render())}", highlight=False, markup=True, soft_wrap=True)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        err.print("aborted")
        return 130
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as e:
        usage, click_error = _click_errors()
        if isinstance(e, click_error):  # bad arguments, unknown commands: a message, not a traceback
            e.show()
            return EXIT_BAD_INPUT if isinstance(e, usage) else e.exit_code
        down = dependency_down(e)
        if down is None:
            raise
        err.print(f"[bold red]error:[/] {escape(down.render())}", highlight=False, markup=True, soft_wrap=True)
        return down.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
