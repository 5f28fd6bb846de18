"""ResultBase: save/load from the dataclass fields, checksums, and clear errors on foreign files."""

from __future__ import annotations

import doctest
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor

import workbench.results.base as base_module
from workbench.core.errors import ArtifactError, ChecksumError
from workbench.results.base import Result, ResultBase


@dataclass
class SmallConfig:
    """A config with a tuple field and no from_dict: rebuilt through its constructor and type hints."""

    hooks: tuple[str, ...] = ("a", "b")
    scale: float = 1.0


@dataclass
class Row:
    name: str
    value: float


@dataclass
class SmallResult(ResultBase):
    kind: ClassVar[str] = "small"
    title: ClassVar[str] = "A small result"
    command: str
    config: SmallConfig
    weights: Tensor
    per_hook: dict[str, Tensor]
    nested: dict[str, dict[str, Tensor]]
    rows: list[Row] = field(default_factory=list)
    order: dict[str, float] = field(default_factory=dict)
    maybe: SmallConfig | None = None
    empty: dict[str, Tensor] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        return {}

    def summary_rows(self) -> list:
        return []


def small() -> SmallResult:
    g = torch.Generator().manual_seed(0)
    return SmallResult(
        command="small()", config=SmallConfig(hooks=("x", "y"), scale=2.0), weights=torch.randn(3, 2, generator=g),
        per_hook={"blocks.1.hook_resid_post": torch.randn(4, generator=g), "blocks.0.hook_resid_post": torch.ones(4)},
        nested={"teacher_minus_base": {"blocks.0.hook_resid_post": torch.arange(3.0)}, "b": {"h": torch.zeros(2)}},
        rows=[Row("z", 1.5), Row("a", -0.5)], order={"zeta": 1.0, "alpha": 2.0}, maybe=SmallConfig(),
    )


def test_round_trip_restores_tensors_configs_rows_and_key_order(tmp_path):
    result = small()
    path = result.save(tmp_path)
    assert path.name == "small.json" and (tmp_path / "small.safetensors").is_file()
    loaded = SmallResult.load(tmp_path)
    assert isinstance(loaded, Result)
    assert loaded.config == result.config and isinstance(loaded.config.hooks, tuple)
    assert loaded.maybe == SmallConfig() and loaded.rows == result.rows and loaded.empty == {}
    torch.testing.assert_close(loaded.weights, result.weights)
    for name in result.per_hook:
        torch.testing.assert_close(loaded.per_hook[name], result.per_hook[name])
    torch.testing.assert_close(loaded.nested["teacher_minus_base"]["blocks.0.hook_resid_post"], torch.arange(3.0))
    # JSON sorts keys; the insertion order comes back
    assert list(loaded.per_hook) == list(result.per_hook) and list(loaded.nested) == ["teacher_minus_base", "b"]
    assert list(loaded.order) == ["zeta", "alpha"]


def test_json_is_readable_by_other_tools(tmp_path):
    small().save(tmp_path)
    record = json.loads((tmp_path / "small.json").read_text())
    assert record["kind"] == "small" and record["schema_version"] == base_module.SCHEMA_VERSION and record["versions"]
    data = record["data"]
    assert data["config"] == {"hooks": ["x", "y"], "scale": 2.0} and data["rows"][0] == {"name": "z", "value": 1.5}
    # a tensor field records the names of its tensors in the safetensors file
    assert data["nested"]["teacher_minus_base"]["blocks.0.hook_resid_post"] == "nested|teacher_minus_base|blocks.0.hook_resid_post"
    assert data["weights"] == "weights" and sorted(record["tensors"]["fields"]) == ["nested", "per_hook", "weights"]


def test_one_tensor_field_keeps_its_keys_as_tensor_names(tmp_path):
    from safetensors.torch import load_file

    @dataclass
    class Shifts(ResultBase):
        kind: ClassVar[str] = "shifts"
        title: ClassVar[str] = "shifts"
        shifts: dict[str, Tensor]
        command: str = ""

    Shifts({"student|blocks.0.hook_resid_post": torch.ones(2)}).save(tmp_path)
    assert list(load_file(str(tmp_path / "shifts.safetensors"))) == ["student|blocks.0.hook_resid_post"]


def test_tampered_tensor_file_raises_checksum_error(tmp_path):
    small().save(tmp_path)
    path = tmp_path / "small.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="Checksum mismatch"):
        SmallResult.load(tmp_path)


def test_wrong_kind_schema_or_fields_raise_artifact_error(tmp_path):
    small().save(tmp_path)
    record = json.loads((tmp_path / "small.json").read_text())
    (tmp_path / "small.json").write_text(json.dumps({**record, "kind": "weights"}))
    with pytest.raises(ArtifactError, match="holds a 'weights' result, not 'small'"):
        SmallResult.load(tmp_path)
    (tmp_path / "small.json").write_text(json.dumps({**record, "schema_version": 999}))
    with pytest.raises(ArtifactError, match="schema version 999.*reads version"):
        SmallResult.load(tmp_path)
    (tmp_path / "small.json").write_text(json.dumps({**record, "data": {**record["data"], "extra": 1}}))
    with pytest.raises(ArtifactError, match=r"fields \['extra'\]"):
        SmallResult.load(tmp_path)
    with pytest.raises(ArtifactError, match="small.json is missing"):
        SmallResult.load(tmp_path / "nowhere")


def test_tensor_inside_a_list_is_refused(tmp_path):
    from workbench.core.errors import ConfigError

    @dataclass
    class Bad(ResultBase):
        kind: ClassVar[str] = "bad"
        title: ClassVar[str] = "bad"
        items: list[Any]
        command: str = ""

    with pytest.raises(ConfigError, match="'items'"):
        Bad([torch.ones(1)]).save(tmp_path)


def test_doctest():
    assert doctest.testmod(base_module).failed == 0
