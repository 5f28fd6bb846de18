"""The result contract every analysis follows (DESIGN.md section 2).

An analysis is a function of (Lineage, Inputs, config) that returns a `Result`: a dataclass
with `save(dir)`, `load(dir)`, `figures()` (plotly) and `summary_rows()` (`SummaryRow`s).
`report.py` walks the results it is given through this contract only, so a new analysis adds a
report section without touching the others.

`ResultBase` supplies `save`/`load` from the dataclass fields (fields.py says how): tensors go
to one safetensors file whose sha256 the JSON records and `load` verifies, everything else to a
sorted JSON file, both written atomically through `workbench.core.io`. On disk:
`<dir>/<kind>.json` = {schema_version, kind, versions, data: {field: value}, tensors: {file,
sha256, fields}, key_order} and `<dir>/<kind>.safetensors`.

>>> import dataclasses, tempfile, torch
>>> @dataclasses.dataclass
... class Tiny(ResultBase):
...     kind = "tiny"
...     title = "A tiny result"
...     values: dict
...     command: str = "tiny()"
>>> with tempfile.TemporaryDirectory() as d:
...     _ = Tiny({"w": torch.ones(2)}).save(d)
...     Tiny.load(d).values["w"].tolist()
[1.0, 1.0]
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

from workbench.core.errors import ArtifactError, ConfigError, SchemaError, WorkbenchError
from workbench.core.io import atomic_write_json, ensure_dir, load_tensors, read_json, save_tensors, sha256_file
from workbench.core.provenance import SCHEMA_VERSION, package_versions
from workbench.core.schemas import ResultRecord, check_version, validate
from workbench.results.fields import (
    flatten_tensors,
    is_tensor_tree,
    key_order,
    rebuild,
    restore_order,
    to_plain,
    unflatten_tensors,
)

if TYPE_CHECKING:
    from workbench.results.rows import SummaryRow

R = TypeVar("R", bound="ResultBase")


@runtime_checkable
class Result(Protocol):
    """What report.py needs from an analysis result."""

    kind: ClassVar[str]  # short machine name, e.g. "compare"; also the section id in the report
    title: ClassVar[str]  # human heading for the report section
    command: str  # the command or function call that regenerates this result

    def save(self, directory: str | os.PathLike) -> Path: ...

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Result: ...

    def figures(self) -> dict[str, Any]: ...  # snake_case name (no kind prefix) -> plotly Figure

    def summary_rows(self) -> list[SummaryRow]: ...  # the strongest evidence beside its control


class ResultBase:
    """Base of every result dataclass: `save`/`load` written once, from the dataclass fields.

    A subclass is a `@dataclass` with `kind`/`title` ClassVars, a `command` field and its own
    `figures()` and `summary_rows()`. Where it needs a derived attribute after loading, it
    computes it in `__post_init__` (load calls the constructor).
    """

    kind: ClassVar[str]
    title: ClassVar[str]
    command: str

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `<dir>/<kind>.json` (+ `<kind>.safetensors` when a field holds tensors)."""
        if not dataclasses.is_dataclass(self):
            raise ConfigError(f"{type(self).__name__} inherits ResultBase but is not a dataclass; decorate it with @dataclass.")
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        tensor_fields = [name for name, v in values.items() if is_tensor_tree(v)]
        data: dict[str, Any] = {}
        tensors: dict[str, Tensor] = {}
        for name, value in values.items():
            if name in tensor_fields:
                prefix = name if len(tensor_fields) > 1 or isinstance(value, Tensor) else ""
                data[name] = flatten_tensors(value, prefix, tensors)
            else:
                data[name] = to_plain(value, name)
        orders = {name: order for name, v in values.items() if (order := key_order(v)) is not None}
        return write_result_files(directory, self.kind, data, tensors, tensor_fields=tensor_fields, key_orders=orders)

    @classmethod
    def load(cls: type[R], directory: str | os.PathLike) -> R:
        """Read what `save` wrote (checksums verified) and rebuild the dataclass."""
        record, tensors = read_result_record(directory, cls.kind)
        data, where = record["data"], f"{Path(directory) / cls.kind}.json"
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ArtifactError(f"{where} holds fields {unknown} that {cls.__name__} does not have: it was written by "
                                "another version of the workbench. Re-run the analysis with this version.")
        if "tensors" in record and "fields" not in record["tensors"]:
            raise ArtifactError(f"{where} was written by a workbench before the result contract (its tensors name no "
                                "fields), so its tensors cannot be placed. Re-run the analysis with this version.")
        hints = typing.get_type_hints(cls)
        tensor_fields = set(record.get("tensors", {}).get("fields", []))
        orders = record.get("key_order", {})
        kwargs = {}
        for name, value in data.items():
            try:
                value = unflatten_tensors(value, tensors, where) if name in tensor_fields else rebuild(value, hints.get(name, Any))
                kwargs[name] = restore_order(value, orders.get(name))
            except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
                if isinstance(e, WorkbenchError):
                    raise
                raise SchemaError(f"{where}: field data.{name} cannot be read as {cls.__name__}.{name} "
                                  f"({type(e).__name__}: {str(e)[:200]}). Re-run the analysis with this version.") from e
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            if isinstance(e, WorkbenchError):
                raise
            raise SchemaError(f"{where} does not make a {cls.__name__} ({type(e).__name__}: {str(e)[:200]}). "
                              "Re-run the analysis with this version.") from e


# --------------------------------------------------------------------------- the files


def write_result_files(directory: str | os.PathLike, kind: str, data: dict[str, Any],
                       tensors: dict[str, Tensor] | None = None, *, tensor_fields: list[str] | None = None,
                       key_orders: dict[str, Any] | None = None) -> Path:
    """Write `<dir>/<kind>.json` (+ `<kind>.safetensors` when tensors are given), atomically.

    The JSON records the schema version, package versions and the tensor file's sha256, so
    `read_result_record` verifies the tensors it loads.
    """
    directory = ensure_dir(directory)
    record: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "kind": kind, "versions": package_versions(), "data": data}
    if tensors:
        tensor_path = directory / f"{kind}.safetensors"
        save_tensors(tensor_path, tensors, {"kind": kind})
        record["tensors"] = {"file": tensor_path.name, "sha256": sha256_file(tensor_path), "fields": tensor_fields or []}
    if key_orders:
        record["key_order"] = key_orders
    path = directory / f"{kind}.json"
    atomic_write_json(path, record)
    return path


def read_result_record(directory: str | os.PathLike, kind: str,
                       device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read what `write_result_files` wrote: (the JSON record, its tensors), checksums verified."""
    directory = Path(directory)
    path = directory / f"{kind}.json"
    if not path.exists():
        raise ArtifactError(f"No {kind!r} result in {directory}: {path.name} is missing. Run the analysis and save it there first.")
    record = read_json(path)
    if not isinstance(record, dict) or record.get("kind") != kind:
        found = record.get("kind") if isinstance(record, dict) else type(record).__name__
        raise ArtifactError(f"{path} holds a {found!r} result, not {kind!r}. Load it with the result class of that kind.")
    check_version(record, str(path), SCHEMA_VERSION, what="result schema")
    validate(ResultRecord, record, str(path), fix="Re-run the analysis with this version of the workbench.")
    if record.get("tensors") is None:
        record.pop("tensors", None)  # "tensors": null is a result without tensors
    tensors: dict[str, Tensor] = {}
    if "tensors" in record:
        tensor_path = directory / record["tensors"]["file"]
        if not tensor_path.resolve().is_relative_to(directory.resolve()):
            raise ArtifactError(f"{path} names the tensor file {record['tensors']['file']!r}, which resolves outside "
                                f"{directory}. Refusing to read it; re-run the analysis.")
        tensors = load_tensors(tensor_path, device=device, expected_sha256=record["tensors"]["sha256"])
    return record, tensors


def read_result_files(directory: str | os.PathLike, kind: str,
                      device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(data, tensors) of a result written by `write_result_files`, checksums verified."""
    record, tensors = read_result_record(directory, kind, device)
    return record["data"], tensors
