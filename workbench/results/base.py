"""The result contract every analysis follows (DESIGN.md section 2).

An analysis is a function of (Lineage, Inputs, config) that returns a `Result`: a dataclass
with `save(dir)`, `load(dir)`, `figures()` (plotly) and `summary_rows()`. `report.py` walks the
results it is given through this contract only, so a new analysis adds a report section without
touching the others.

`ResultBase` supplies the common plumbing: tensors go to one safetensors file and everything
else to a sorted JSON file, both written atomically through `io.py` and checksummed, and
figures are written as standalone HTML with one shared `plotly.min.js` beside them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from workbench.core.errors import ArtifactError
from workbench.core.io import atomic_write_json, atomic_write_text, load_tensors, read_json, save_tensors, sha256_file
from workbench.core.provenance import SCHEMA_VERSION, package_versions


@runtime_checkable
class Result(Protocol):
    """What report.py needs from an analysis result."""

    kind: ClassVar[str]  # short machine name, e.g. "compare"; also the section id in the report
    title: ClassVar[str]  # human heading for the report section
    command: str  # the command or function call that regenerates this result

    def save(self, directory: str | os.PathLike) -> Path: ...

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Result: ...

    def figures(self) -> dict[str, Any]: ...  # name -> plotly Figure

    def summary_rows(self) -> list[dict[str, Any]]: ...  # flat rows: the strongest evidence beside its control


def write_result_files(directory: str | os.PathLike, kind: str, data: dict[str, Any],
                       tensors: dict[str, Tensor] | None = None) -> Path:
    """Write `<dir>/<kind>.json` (+ `<kind>.safetensors` when tensors are given), atomically.

    The JSON records the schema version, package versions and the tensor file's sha256, so
    `read_result_files` verifies the tensors it loads.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "kind": kind, "versions": package_versions(), "data": data}
    if tensors:
        tensor_path = directory / f"{kind}.safetensors"
        save_tensors(tensor_path, {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, {"kind": kind})
        record["tensors"] = {"file": tensor_path.name, "sha256": sha256_file(tensor_path)}
    path = directory / f"{kind}.json"
    atomic_write_json(path, record)
    return path


def read_result_files(directory: str | os.PathLike, kind: str,
                      device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read what `write_result_files` wrote: (data, tensors), checksums verified."""
    directory = Path(directory)
    path = directory / f"{kind}.json"
    if not path.exists():
        raise ArtifactError(f"No {kind!r} result in {directory}: {path.name} is missing. Run the analysis and save it there first.")
    record = read_json(path)
    if record.get("kind") != kind:
        raise ArtifactError(f"{path} holds a {record.get('kind')!r} result, not {kind!r}.")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path} has schema version {record.get('schema_version')!r}; this workbench reads version {SCHEMA_VERSION}. "
            "Re-run the analysis with this version."
        )
    tensors: dict[str, Tensor] = {}
    if "tensors" in record:
        tensors = load_tensors(directory / record["tensors"]["file"], device=device, expected_sha256=record["tensors"]["sha256"])
    return record["data"], tensors


def write_figures(figures: dict[str, Any], directory: str | os.PathLike, prefix: str = "") -> dict[str, Path]:
    """Write each plotly figure as `<dir>/<prefix><name>.html`, offline, sharing one plotly.min.js."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in figures.items():
        path = directory / f"{prefix}{name}.html"
        atomic_write_text(path, fig.to_html(include_plotlyjs="directory", full_html=True))
        paths[name] = path
    if paths and not (directory / "plotly.min.js").exists():
        from plotly.offline import get_plotlyjs

        atomic_write_text(directory / "plotly.min.js", get_plotlyjs())
    return paths
