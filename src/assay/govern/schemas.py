"""The one schema layer for what people send the registry: API bodies and CLI/library input alike.

The API routes declare these models as their request bodies (so the OpenAPI schema documents the
limits), and the registry's entry points validate their arguments with the same models
(``parse``), so a value refused over HTTP is refused from the command line with the same
one-line reason naming the field. Every string, number and JSON document is held to what the
store can give back (``assay.store.values``); sizes are bounded everywhere.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from assay.errors import BadInput
from assay.store.values import INPUT_DEPTH, check_json, text_problem

MAX_LIST = 1000  # purposes, inputs, metrics, manifest entries per request
MAX_MANIFEST = 100_000  # files in one dataset manifest
MAX_BUNDLE_FILES = 64
BUNDLE_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
BUNDLE_SUFFIXES = (".yaml", ".yml", ".sig", ".pub")


class InvalidFields(BadInput):
    """Input that fails the schema: ``message`` names the first field, ``errors`` every one."""

    def __init__(self, errors: list[str], *, hint: str | None = None):
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(errors[0] + more, hint=hint)
        self.errors = errors


def describe_errors(errors: list[dict[str, Any]], *, drop: tuple[str, ...] = ("body",)) -> list[str]:
    """pydantic/FastAPI errors as ``field.path: message`` lines (the input itself is not echoed)."""
    out = []
    for e in errors[:50]:
        if e.get("type") == "json_invalid":  # FastAPI: loc is ("body", character offset)
            detail = (e.get("ctx") or {}).get("error", "")
            out.append(f"body: not valid JSON at character {e.get('loc', ('', '?'))[-1]}{': ' + str(detail) if detail else ''}")
            continue
        loc = [str(x) for x in e.get("loc", ()) if str(x) not in drop]
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        out.append(f"{'.'.join(loc) or 'body'}: {msg}")
    return out or ["body: invalid"]


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any) -> M:
    """``data`` validated as ``model``, or ``InvalidFields`` naming each field that is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidFields(describe_errors(e.errors(include_input=False), drop=()),
                            hint="see the request schema at /docs or `--help`") from None


def read_json_file(path: Any, what: str, *, limit: int = 16 << 20, lines: bool = False) -> Any:
    """A JSON document (or, with ``lines``, JSON Lines) from a regular file of at most ``limit``
    bytes (``assay.files.read_json``: a FIFO or a device is refused at once, never read); the
    documents are held to what the store can give back (``check_json``)."""
    from assay.files import read_json
    from assay.store.values import Unstorable

    docs = read_json(path, what, limit=limit, lines=lines)
    try:
        for i, doc in enumerate(docs if lines else [docs]):
            check_json(doc, f"{what} {i + 1}" if lines else what, max_depth=INPUT_DEPTH)
    except Unstorable as e:
        raise BadInput(f"{path}: {e.message}") from None
    return docs


# ---------------------------------------------------------------- field types


def _line(value: str) -> str:
    problem = text_problem(value, single_line=True)
    if problem:
        raise ValueError(problem)
    return value


def _text(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    from assay.store.values import Unstorable

    try:
        check_json(value, "value", max_depth=INPUT_DEPTH)
    except Unstorable as e:
        raise ValueError(e.message.removeprefix("value").lstrip(".: ") or e.message) from None
    return value


def _relative_path(value: str) -> str:
    """A manifest path: relative, '/'-separated, no '..' or '.' parts, nothing that escapes its folder."""
    _line(value)
    if "\\" in value:
        raise ValueError("use '/' to separate folders")
    if value.startswith("/") or posixpath.normpath(value) != value or ".." in value.split("/") or value == ".":
        raise ValueError("must be a relative path inside its folder, without '..', '.' or empty parts")
    return value


def _bundle_file_name(value: str) -> str:
    parts = value.split("/")
    if len(parts) > 4 or not all(BUNDLE_PART_RE.match(p) for p in parts):
        raise ValueError("must be a relative path of at most 4 parts, each letters, digits and ._- "
                         "(at most 100 characters, not starting with '.')")
    if not value.endswith(BUNDLE_SUFFIXES):
        raise ValueError("must end in .yaml, .yml, .sig or .pub")
    return value


def _finite_pair(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError("an interval is [low, high] with low <= high")
    return value


# The patterns are part of the OpenAPI schema, so clients (and the fuzzers) know them too.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:+-]{0,254}$"  # assets, surfaces, purposes of a deployment, principals
TERM_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}(=[A-Za-z0-9_.:/-]{1,128})?$"  # purposes and restrictions
VALUE_PATTERN = r"^[A-Za-z0-9_.:/-]{1,128}$"  # the value of a structured restriction (region=eu)
LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"  # one line of printable text



def _matching(pattern: str, explain: str) -> AfterValidator:
    """The pattern checked with a message a person understands (and documented in the schema)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value):
            shown = repr(value[:60]) + ("…" if len(value) > 60 else "")
            raise ValueError(f"{shown} is not valid: {explain}")
        return value

    return AfterValidator(check)


def _field(max_length: int, pattern: str) -> Any:
    return Field(min_length=1, max_length=max_length, json_schema_extra={"pattern": pattern})


Name = Annotated[str, _field(255, NAME_PATTERN), AfterValidator(_line),
                 _matching(NAME_PATTERN, "a name is letters, digits and ._/:+- (at most 255)")]
Label = Annotated[str, _field(255, LINE_PATTERN), AfterValidator(_line)]
Ref = Annotated[str, _field(512, LINE_PATTERN), AfterValidator(_line)]
Term = Annotated[str, _field(200, TERM_PATTERN), AfterValidator(_line),
                 _matching(TERM_PATTERN, "terms are lower-case words like 'research' or 'region=eu'")]
TermValue = Annotated[str, _field(128, VALUE_PATTERN), AfterValidator(_line),
                      _matching(VALUE_PATTERN, "letters, digits and _.:/- only (at most 128)")]
Uri = Annotated[str, _field(4096, LINE_PATTERN), AfterValidator(_line)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
ManifestPath = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_relative_path)]
BundleFileName = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_bundle_file_name)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
Count = Annotated[int, Field(ge=0, le=2**53)]
Interval = Annotated[tuple[float, float], AfterValidator(_finite_pair)]


def Text(max_length: int) -> Any:
    return Annotated[str, Field(max_length=max_length), AfterValidator(_text)]


class Strict(BaseModel):
    """Unknown fields are errors; numbers must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)


# ---------------------------------------------------------------- registry input


class FileEntry(Strict):
    path: ManifestPath
    sha256: Sha256
    size: Count = 0


class DatasetSpec(Strict):
    """What ``registry.register_dataset`` takes."""

    name: Name
    uri: Uri
    purposes: list[Term] = Field(default_factory=list, max_length=MAX_LIST)
    restrictions: list[Term] = Field(default_factory=list, max_length=MAX_LIST)
    owner: Label | None = None
    licence: Label | None = None
    data_schema: JsonObject = Field(default_factory=dict, alias="schema")
    files: list[FileEntry] | None = Field(None, max_length=MAX_MANIFEST,
                                          description="The manifest; omit to hash a path on the server.")
    withdrawal: Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_text)] | None = Field(
        None, description="This version withdraws consent (the reason): its terms also bind every earlier version.")

    @model_validator(mode="after")
    def _unique_paths(self) -> DatasetSpec:
        _unique_manifest(self.files)
        return self


class DatasetIn(DatasetSpec):
    """The API body: the dataset plus its structured restrictions."""

    contains_minors: bool = False
    consent_scope: TermValue | None = None
    region: TermValue | None = None
    retention_days: Annotated[int, Field(ge=0, le=100000)] | None = None


class ModelSpec(Strict):
    """What ``registry.register_model`` takes."""

    name: Name
    files: list[FileEntry] | None = Field(None, min_length=1, max_length=MAX_MANIFEST)
    weights: list[Uri] | None = Field(None, min_length=1, max_length=MAX_LIST)
    uri: Uri | None = None
    framework: Text(255) = ""
    trained_on: list[Ref] = Field(default_factory=list, max_length=MAX_LIST)
    training_run: Label | None = None
    purposes: list[Term] = Field(default_factory=list, max_length=MAX_LIST)
    restrictions: list[Term] = Field(default_factory=list, max_length=MAX_LIST)
    owner: Label | None = None
    licence: Label | None = None
    transformation: Ref | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if self.files is None and not self.weights:
            raise ValueError("give the weights files (paths) or their manifest (files with uri)")
        if self.files is not None and not self.uri:
            raise ValueError("a model given by its file manifest needs the uri (folder) the files are relative to")
        _unique_manifest(self.files)
        return self


class ModelIn(ModelSpec):
    """The API body (the same fields)."""


def _unique_manifest(files: list[FileEntry] | None) -> None:
    if files is not None and len({f.path for f in files}) != len(files):
        raise ValueError("files: each path may appear only once in a manifest")


class EvaluationSpec(Strict):
    """An ``assay.records.EvaluationResult`` as ``registry.register_evaluation`` takes it."""

    run_id: Label
    suite: Label
    target: Label
    metrics: dict[Label, float] = Field(max_length=MAX_LIST)
    intervals: dict[Label, Interval] = Field(default_factory=dict, max_length=MAX_LIST)
    n: dict[Label, Count] = Field(default_factory=dict, max_length=MAX_LIST)
    gate_verdicts: dict[Label, bool] = Field(default_factory=dict, max_length=MAX_LIST)
    dataset_hashes: dict[Label, Sha256] = Field(default_factory=dict, max_length=MAX_LIST)
    model_hashes: dict[Uri, Sha256] = Field(min_length=1, max_length=MAX_LIST)  # weights file -> sha256
    report_path: Text(4096) = ""
    gate_outcomes: dict[Label, Literal["pass", "fail", "inconclusive"]] = Field(default_factory=dict, max_length=MAX_LIST)
    judges: dict[Label, JsonObject] = Field(default_factory=dict, max_length=MAX_LIST,
                                            description="judged metric -> the judge (name@version) and its validation")


class EvaluationIn(EvaluationSpec):
    """The API body: the result and the model it evaluated."""

    model: Ref


class TransformationIn(Strict):
    name: Name
    lifts: list[Term] = Field(min_length=1, max_length=MAX_LIST)
    description: Text(4000) = ""


class RunIn(Strict):
    job_name: Label
    inputs: list[Ref] = Field(default_factory=list, max_length=MAX_LIST)
    outputs: list[Ref] = Field(min_length=1, max_length=MAX_LIST)
    kind: Annotated[str, Field(pattern=r"^(train|transform|evaluate|ingest|other)$")] = "other"
    transformation: Ref | None = None


class DeploymentIn(Strict):
    model: Ref
    surface: Name
    purpose: Name
    region: Name = "global"
    environment: Name = "production"
    name: Name | None = None
    bundle_files: dict[BundleFileName, Text(1_000_000)] | None = Field(
        None, max_length=MAX_BUNDLE_FILES, description="The bundle's YAML files by relative name")
    bundle_hash: Sha256 | None = None

    @model_validator(mode="after")
    def _bundle(self) -> DeploymentIn:
        if (self.bundle_files is None) == (self.bundle_hash is None):
            raise ValueError("give exactly one of bundle_files or bundle_hash")
        if self.bundle_files is not None:
            check_bundle_names(list(self.bundle_files))
        return self


def check_bundle_names(names: list[str]) -> None:
    """Bundle file names that can all be written into one folder: none is also another's folder."""
    if not names:
        raise ValueError("bundle_files is empty: a bundle needs at least one .yaml file")
    if not any(n.endswith((".yaml", ".yml")) for n in names):
        raise ValueError("bundle_files has no .yaml file")
    folders = {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
    clash = sorted(set(names) & folders)
    if clash:
        raise ValueError(f"bundle file {clash[0]!r} is also used as a folder by another file")
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        raise ValueError("bundle file names must differ by more than upper/lower case")


class ApprovalIn(Strict):
    comment: Text(4000) = ""


class TokenIn(Strict):
    name: Name
    role: Annotated[str, Field(pattern=r"^(viewer|engineer|approver|admin)$")]
    kind: Annotated[str, Field(pattern=r"^(person|service)$")] = "person"
    expires_in_days: Annotated[int, Field(ge=1, le=365)] | None = None
