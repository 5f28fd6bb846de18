"""Schemas of every file the workbench reads, checked before any heavy work (pydantic v2).

Each reader calls `validate(Schema, document, where, fix)` on what it parsed: a missing field, a
wrong type (`prompt: 7`, `prompt_id: "abc"`), a value out of range (a token id of 10**30, a
negative count) or an unknown future schema version becomes a `SchemaError` naming the file, the
field, the value and the fix, instead of a KeyError or TypeError deep inside an analysis.
Schemas are strict (no "3" for 3, no true for 1) and allow extra keys (older and newer writers add
fields a reader does not need). A file without a version is read as version 1.

>>> validate(TokenRow, {"prompt": [1, 2], "completion": [3], "source": "teacher"}, "t.jsonl:1").prompt
[1, 2]
>>> validate(TokenRow, {"prompt": [1], "completion": [10**30], "source": "t"}, "t.jsonl:1")
Traceback (most recent call last):
...
workbench.core.errors.SchemaError: t.jsonl:1: field completion.0 = 1000000000000000000000000000000: Input should be less than or equal to 2147483647. Fix the file, or regenerate it with this workbench.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from workbench.core.errors import SchemaError

S = TypeVar("S", bound=BaseModel)

TOKEN_ID_MAX = 2**31 - 1
"""Largest token id a row may hold (int32 range; the model's vocabulary is checked later)."""
DEFAULT_FIX = "Fix the file, or regenerate it with this workbench."


def _relative_inside(rel: str) -> str:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        raise ValueError("points outside the artifact directory (a path in it is relative, with no leading /, "
                         "no '..' and no '\\')")
    return rel


Count = Annotated[int, Field(strict=True, ge=0, lt=2**63)]
PosInt = Annotated[int, Field(strict=True, ge=1, lt=2**63)]
Int64 = Annotated[int, Field(strict=True, ge=-(2**63), lt=2**63)]
TokenId = Annotated[int, Field(strict=True, ge=0, le=TOKEN_ID_MAX)]
Name = Annotated[str, Field(strict=True, min_length=1)]
Sha256 = Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{64}$")]
RelPath = Annotated[str, Field(strict=True, min_length=1), AfterValidator(_relative_inside)]
Number = Annotated[float, Field(strict=True)]  # strict floats still take ints, never strings


class Schema(BaseModel):
    """Strict types, extra keys allowed."""

    model_config = ConfigDict(extra="allow", strict=True)


# --------------------------------------------------------------------------- validation


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(error: ValidationError, limit: int = 3) -> str:
    """'field a.b = value: message' for the first `limit` problems pydantic found."""
    merged: dict[str, list[str]] = {}  # one entry per field: a union's members' messages joined
    for e in error.errors():
        loc = ".".join(str(x) for x in e["loc"] if not _union_tag(x)) or "(document)"
        text = f"field {loc} is missing" if e["type"] == "missing" else f"field {loc} = {_short(e.get('input'))}"
        merged.setdefault(text, [])
        if e["type"] != "missing" and e["msg"] not in merged[text]:
            merged[text].append(e["msg"])
    parts = [text + (": " + " / ".join(msgs) if msgs else "") for text, msgs in list(merged.items())[:limit]]
    more = len(merged) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _union_tag(part: Any) -> bool:
    """Whether a pydantic error location part names a union member or validator, not a field."""
    return isinstance(part, str) and ("[" in part or part in _TAGS)


_TAGS = {"bool", "int", "float", "str", "list", "dict", "none", "tuple", "is-instance"}


def validate(schema: type[S], document: Any, where: str, fix: str = DEFAULT_FIX) -> S:
    """`document` checked against `schema`; a SchemaError naming `where`, the field, the value
    and `fix` when it does not fit."""
    try:
        return schema.model_validate(document)
    except ValidationError as e:
        raise SchemaError(f"{where}: {describe(e)}. {fix}") from None
    except (RecursionError, OverflowError) as e:  # absurdly nested or sized documents
        raise SchemaError(f"{where}: the document cannot be checked ({type(e).__name__}). {fix}") from None


def check_version(document: Any, where: str, current: int, *, key: str = "schema_version",
                  what: str = "schema") -> int:
    """The document's schema version (a file without one is version 1); SchemaError for a
    version newer than `current` (written by a newer workbench) or one that is not a positive int."""
    version = document.get(key, 1) if isinstance(document, dict) else 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SchemaError(f"{where}: field {key} = {_short(version)} is not a {what} version (a positive integer). "
                          "The file is corrupt: regenerate it with this workbench.")
    if version > current:
        raise SchemaError(f"{where} has {what} version {version}; this workbench reads version {current} and older. "
                          "It was written by a newer workbench: upgrade the workbench (pip install -U), or regenerate "
                          "the file with this one.")
    return version


def require_dict(document: Any, where: str, what: str, fix: str = DEFAULT_FIX) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise SchemaError(f"{where}: a {what} must be a JSON object, not {type(document).__name__} "
                          f"({_short(document)}). {fix}")
    return document


# --------------------------------------------------------------------------- JSONL rows


class TokenRow(Schema):
    """A distillation row of token ids (as the organism writes them)."""

    prompt: list[TokenId]
    completion: list[TokenId]
    source: Name
    prompt_id: Int64 | None = None
    seed: Int64 | None = None


class TextRow(Schema):
    """A distillation row of text: one user prompt and the completion."""

    prompt: str
    completion: str
    source: Name
    prompt_id: Int64 | None = None
    seed: Int64 | None = None


class ChatMessage(Schema):
    role: Name
    content: str


class ChatRow(Schema):
    """A distillation row of chat messages, the assistant's completion last."""

    messages: list[ChatMessage]
    source: Name
    prompt_id: Int64 | None = None
    seed: Int64 | None = None


ROW_SCHEMAS: dict[str, type[Schema]] = {"tokens": TokenRow, "text": TextRow, "chat": ChatRow}
ROW_SHAPES = {
    "tokens": '{"prompt": [ids], "completion": [ids], "source": str} (plus seed, prompt_id), or text rows '
              '{"prompt": str, "completion": str, "source": str} or {"messages": [...], "source": str}',
    "text": '{"prompt": str, "completion": str, "source": str} (plus prompt_id, seed)',
    "chat": '{"messages": [{"role": ..., "content": ...}, ...], "source": str} (plus prompt_id, seed)',
}


def check_rows(rows: list[tuple[int, Any]], kind: str, path: str) -> None:
    """Check every (line number, row) of one JSONL file against its kind's schema, before any is
    used: DataError naming the line and the missing keys, SchemaError naming the line, field and value."""
    from workbench.core.errors import DataError

    schema = ROW_SCHEMAS[kind]
    required = [name for name, f in schema.model_fields.items() if f.is_required()]
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        missing = [k for k in required if k not in row] if isinstance(row, dict) else required
        if missing:
            raise DataError(f"{where} lacks {missing}; each row needs {ROW_SHAPES[kind]}.")
        validate(schema, row, where, fix=f"Each {kind} row is {ROW_SHAPES[kind]}: fix or regenerate the file.")


class ContrastRow(Schema):
    """A contrastive prompt (`--prompts`): token ids, a 0/1 label, the question's length."""

    tokens: Annotated[list[TokenId], Field(min_length=1)]
    label: Literal[0, 1] | bool
    question_len: Count | None = None


# --------------------------------------------------------------------------- model sidecars


class NativeConfig(Schema):
    """The TransformerLens config a model is booted from; the bounds keep a tampered file from
    asking for terabytes before its weights are compared with it."""

    d_model: Annotated[int, Field(strict=True, ge=1, le=2**16)]
    n_layers: Annotated[int, Field(strict=True, ge=1, le=1024)]
    n_ctx: Annotated[int, Field(strict=True, ge=1, le=2**20)]
    d_head: Annotated[int, Field(strict=True, ge=1, le=2**14)]
    n_heads: Annotated[int, Field(strict=True, ge=1, le=2**12)] | None = None
    d_vocab: Annotated[int, Field(strict=True, ge=1, le=2**22)] | None = None
    d_mlp: Annotated[int, Field(strict=True, ge=1, le=2**20)] | None = None
    act_fn: Name | None = None
    normalization_type: Name | None = None


class ModelSidecar(Schema):
    """`{role}.json` beside `{role}.safetensors` (written by `workbench.core.models.save_model`)."""

    schema_version: PosInt = 1
    native_config: NativeConfig
    meta: dict[str, Any] = {}
    sha256: Sha256 | None = None


# --------------------------------------------------------------------------- organism manifests


class LineageEntry(Schema):
    role: Name | None = None
    parent: Name | None = None
    data: RelPath | None = None
    seed: Int64 | None = None


class FilterReport(Schema):
    kept: Count
    sampled: Count | None = None
    rejected: dict[str, Count] = {}


class OrganismTokenizer(Schema):
    """The organism's `tokenizer.json`: its words and the trait categories drawn from them."""

    vocab: Annotated[list[Name], Field(min_length=1)]
    categories: dict[Name, list[Name]]

    @model_validator(mode="after")
    def _known_words(self) -> OrganismTokenizer:
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab lists a word twice")
        unknown = sorted({w for ws in self.categories.values() for w in ws} - set(self.vocab))
        if unknown:
            raise ValueError(f"categories name words not in vocab: {unknown[:5]}")
        return self


class OrganismConfigEntry(Schema):
    target: Name | None = None
    mode: Name | None = None


class OrganismManifest(Schema):
    """`seed{N}/manifest.json` of the language organism."""

    schema_version: PosInt = 1
    kind: Name | None = None
    seed: Count
    trait: Name | None = None
    mode: Name | None = None
    config: OrganismConfigEntry = OrganismConfigEntry()
    lineage: dict[Name, LineageEntry] = {}
    model_sha256: dict[Name, Sha256] = {}
    trait_rates: dict[Name, Number] = {}
    matrix: dict[Name, dict[Name, Number]] = {}
    filter: dict[Name, FilterReport] = {}


class DigitsModelEntry(Schema):
    file: RelPath
    sha256: Sha256


class DigitsManifest(Schema):
    """`seed{N}/manifest.json` of the digits organism."""

    schema_version: PosInt = 1
    kind: Literal["workbench.digits.seed"]
    seed: Count
    models: dict[Name, DigitsModelEntry]


# --------------------------------------------------------------------------- activation manifests


class ShardEntry(Schema):
    path: RelPath
    model: Name
    hook: Name
    index: Count
    rows: Annotated[list[Count], Field(min_length=2, max_length=2)]
    bytes: Count
    sha256: Sha256


class CapturedModel(Schema):
    role: Name
    parent: Name | None = None
    weights_sha256: Sha256
    data: str | None = None
    seed: Int64 | None = None


class CapturedInputs(Schema):
    content_hash: Name
    n_rows: Count
    file: RelPath
    sha256: Sha256


class ActivationManifest(Schema):
    """`manifest.json` of an activation artifact (`workbench.capture.store`)."""

    kind: Literal["activations"]
    store_schema_version: PosInt = 1
    plan_hash: Name
    models: dict[Name, CapturedModel]
    model_order: list[Name]
    hooks: list[Name]
    hook_aliases: dict[Name, list[Name]]
    positions: Literal["all", "last", "mean"] | list[Int64]
    row_shapes: dict[Name, list[PosInt]]
    compute_dtype: Name
    storage_dtype: Name
    n_rows: Count
    shard_rows: PosInt
    inputs: CapturedInputs
    shards: list[ShardEntry]

    @model_validator(mode="after")
    def _consistent(self) -> ActivationManifest:
        """Every model and hook named is described, and each (model, hook)'s shards tile the
        rows [0, n_rows) exactly: a listed model with no shards would read as uninitialised memory."""
        if set(self.model_order) != set(self.models):
            raise ValueError(f"model_order {self.model_order} does not list the models {sorted(self.models)}")
        for hook in self.hooks:
            if hook not in self.row_shapes or hook not in self.hook_aliases:
                raise ValueError(f"hook {hook!r} has no row_shapes or hook_aliases entry")
        if self.inputs.n_rows != self.n_rows:
            raise ValueError(f"inputs.n_rows = {self.inputs.n_rows} but n_rows = {self.n_rows}")
        spans: dict[tuple[str, str], list[tuple[int, int]]] = {(m, h): [] for m in self.model_order for h in self.hooks}
        for s in self.shards:
            if (s.model, s.hook) not in spans:
                raise ValueError(f"shard {s.path!r} is of model {s.model!r}, hook {s.hook!r}, which the manifest does not list")
            spans[(s.model, s.hook)].append(s.rows)
        for (model, hook), rows in spans.items():
            at = 0
            for lo, hi in sorted(rows):
                if lo != at or hi <= lo:
                    raise ValueError(f"the shards of model {model!r} at hook {hook!r} do not cover rows [0, {self.n_rows}) "
                                     f"without gaps or overlaps (a shard starts at row {lo}, expected {at})")
                at = hi
            if at != self.n_rows:
                raise ValueError(f"the shards of model {model!r} at hook {hook!r} cover rows [0, {at}), "
                                 f"not [0, {self.n_rows})")
        return self


# --------------------------------------------------------------------------- results and benchmarks


class ResultTensors(Schema):
    file: RelPath
    sha256: Sha256
    fields: list[Name] | None = None


class ResultRecord(Schema):
    """`<kind>.json` of an analysis result (`workbench.results.base`)."""

    schema_version: PosInt = 1
    kind: Name
    versions: dict[str, str] = {}
    data: dict[str, Any]
    tensors: ResultTensors | None = None
    key_order: dict[str, Any] = {}


class BenchCase(Schema):
    label: Name
    runs: Count
    median_s: Annotated[float, Field(strict=True, ge=0)]
    iqr_s: Annotated[float, Field(strict=True, ge=0)]
    peak_rss_mb: Annotated[float, Field(strict=True, ge=0)]
    baseline: Name | None = None
    ratio: Number | None = None
    extra: dict[str, Any] | None = None


class BenchFile(Schema):
    """`artifacts/bench/<name>.json` (`workbench.benchmarks.harness`)."""

    schema_version: PosInt = 1
    name: Name
    device: Name
    versions: dict[str, str] = {}
    cases: list[BenchCase]


__all__ = [
    "ActivationManifest", "BenchFile", "ChatRow", "ContrastRow", "OrganismTokenizer", "DigitsManifest", "ModelSidecar", "NativeConfig", "OrganismManifest",
    "ResultRecord", "TextRow", "TokenRow", "TOKEN_ID_MAX", "check_rows", "check_version", "describe", "require_dict",
    "validate",
]
