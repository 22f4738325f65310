"""Errors that reach a person. Each carries the exit code the CLI uses and, where it has one,
the place (file:line:column) that caused it."""

from __future__ import annotations

from dataclasses import dataclass

# Exit codes that mean something (documented in the README's command reference).
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and the answer is "no": a gate failed, a deploy was denied, a check found tampering
EXIT_BAD_INPUT = 2  # the input is wrong: malformed policy, unknown id, bad arguments
EXIT_UNAVAILABLE = 3  # a dependency is missing or down: optional extra not installed, server unreachable


class AssayError(Exception):
    """Base of every error assay reports to a person instead of a traceback."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        return self.message + (f"\n  hint: {self.hint}" if self.hint else "")


class BadInput(AssayError):
    exit_code = EXIT_BAD_INPUT


class Unavailable(AssayError):
    exit_code = EXIT_UNAVAILABLE


@dataclass(frozen=True)
class Location:
    """A place in a source file; line and column are 1-based."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    @classmethod
    def of_offset(cls, file: str, text: str | bytes, offset: int) -> Location:
        """The place of ``offset`` in ``text`` (of bytes, a byte offset; of text, a character's)."""
        newline = b"\n" if isinstance(text, bytes) else "\n"
        return cls(str(file), text.count(newline, 0, offset) + 1, offset - (text.rfind(newline, 0, offset) + 1) + 1)


class LocatedError(BadInput):
    """Bad input with a place: prints ``file:line:column: message`` and the offending line marked."""

    def __init__(self, message: str, location: Location, source_line: str | None = None, *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.location = location
        self.source_line = source_line

    def render(self) -> str:
        out = f"{self.location}: {self.message}"
        if self.source_line is not None:
            caret = " " * max(self.location.column - 1, 0) + "^"
            out += f"\n  | {self.source_line}\n  | {caret}"
        if self.hint:
            out += f"\n  hint: {self.hint}"
        return out

    def __str__(self) -> str:
        return self.render()


# A library's own "cannot reach it" exceptions, by (top-level package, class name), and what to
# call the dependency in the one line the CLI prints. Matched by name along the class's MRO so
# that nothing here imports the libraries (the CLI must start fast without them).
_DEPENDENCY_ERRORS: dict[tuple[str, str], str] = {
    ("redis", "ConnectionError"): "Redis",
    ("redis", "TimeoutError"): "Redis",
    ("httpx", "ConnectError"): "the server",
    ("httpx", "ConnectTimeout"): "the server",
    ("openai", "APIConnectionError"): "the model server",
    ("requests", "ConnectionError"): "the server",
    ("confluent_kafka", "KafkaException"): "Kafka",
    ("cimpl", "KafkaException"): "Kafka",
    ("builtins", "ConnectionError"): "a service",
}


def dependency_down(exc: BaseException) -> Unavailable | None:
    """``exc`` (or what caused it) as one ``Unavailable`` line naming the dependency that is down,
    or None when it is not a dependency's connection error.

    This is the one place the CLI maps a dependency that is down to exit 3 (README, "Exit codes"):
    a part that meets one of these errors may let it propagate instead of wrapping it itself."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, Unavailable):
            return exc
        if isinstance(exc, BrokenPipeError):  # our own stdout closed (`| head`), not a dependency
            return None
        for cls in type(exc).__mro__:
            what = _DEPENDENCY_ERRORS.get((cls.__module__.split(".")[0], cls.__name__))
            if what is not None:
                return Unavailable(f"{what} is unreachable: {_first_line(exc) or type(exc).__name__}")
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    try:  # httpx: name the address that did not answer (``request`` raises when it was never set)
        url = exc.request.url  # type: ignore[attr-defined]
    except Exception:
        url = None
    first = text.splitlines()[0].strip() if text else ""
    if url is not None and str(url) not in first:
        first = f"{url}: {first}" if first else str(url)
    return first[:500]


def require_extra(module: str, extra: str):
    """Import an optional dependency or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - exercised on machines without the extra
        raise Unavailable(
            f"this needs the optional dependency {module!r}, which is not installed",
            hint=f"pip install 'assay[{extra}]'",
        ) from e
