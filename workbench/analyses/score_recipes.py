"""What a score store's plan names its model, teacher and directions by, without reading a weight:
their recipes.

A 7B direction is ~15 GB of values; hashing it (and the model, and the teacher) costs a full read
of the weights per direction, on every torchrun rank. A model loaded from a Hugging Face
directory is named instead by the sha256 of the files it was loaded from (weights, their index,
config.json; a LoRA adapter's files too: `workbench.core.file_hashes`, remembered by path, size,
mtime and inode) and its dtype; a direction by its name and what it is made from (ΔT: the
teacher's and the base's files; g_trait: the base's files, the trait, and where it was computed,
since a backward pass can differ in its last bits between devices and thread counts).

`lineage_recipes` returns None for a lineage whose models are not all read from directories (the
organism, bridges built in memory): the plan then hashes the values, as it always did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.analyses.alignment_config import NO_UNEMBED
from workbench.capture.store import dtype_name
from workbench.core.file_hashes import files_sha256
from workbench.core.lineage import Lineage
from workbench.trait import Trait

MODEL_FILE_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "config.json",
                       "adapter_config.json")
"""The files of a checkpoint directory its weights come from (tokenizer files are not: rows are
identified by their tokens)."""


@dataclass(frozen=True)
class PlanRecipes:
    """Recipes (JSON-able dicts) standing for values in a score plan: `model` for the scored model's
    parameters, `teacher` for the objective's teacher, `directions[name]` for a direction. What is
    None or absent is hashed by its values."""

    model: dict[str, Any] | None = None
    teacher: dict[str, Any] | None = None
    directions: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "teacher": self.teacher, "directions": dict(self.directions)}


def directory_files(directory: str | Path) -> dict[str, str]:
    """file name -> sha256 of the weight and config files directly in `directory`."""
    root = Path(directory)
    paths = sorted({p for pattern in MODEL_FILE_PATTERNS for p in root.glob(pattern) if p.is_file()})
    hashes = files_sha256(paths)
    return {p.name: hashes[str(p.resolve())] for p in paths}


def model_recipe(lineage: Lineage, name: str) -> dict[str, Any] | None:
    """The files model `name` was loaded from and its dtype (None: not loaded from a directory)."""
    meta = lineage.record(name).meta
    if not isinstance(meta.get("hf_dir"), str):
        return None
    recipe: dict[str, Any] = {"files": directory_files(meta["hf_dir"]), "dtype": dtype_name(lineage.dtype),
                              "trust_remote_code": bool(meta.get("trust_remote_code"))}
    lora = meta.get("lora")
    if isinstance(lora, dict):  # the parent's files above, the adapter's here (its path is not identity)
        recipe["lora"] = {**{k: v for k, v in lora.items() if k != "adapter_dir"},
                          "files": directory_files(lora["adapter_dir"])}
    return recipe


def _teacher_recipe(lineage: Lineage, teacher: str) -> dict[str, Any] | None:
    if lineage.is_prompted(teacher):
        role = lineage.prompted[teacher]
        base = model_recipe(lineage, role.base)
        return None if base is None else {"prompted": role.meta(), "base": base, "prefixes": [
            list(role.prefix.base_prefix), list(role.prefix.teacher_prefix)]}
    return model_recipe(lineage, teacher) if teacher in lineage else None


def lineage_recipes(lineage: Lineage, base: str, directions: list[str], *, teacher: str = "teacher",
                    student: str = "student", trait: Trait | None = None) -> PlanRecipes | None:
    """Recipes for scoring at model `base` along `directions` (delta_T, delta_S, g_trait,
    g_trait_no_unembed) with the teacher `teacher`; None when a model involved was not read from a
    directory or a direction is none of these (then values are hashed)."""
    at = model_recipe(lineage, base)
    if at is None:
        return None
    computed = {"device": lineage.device.type, "threads": torch.get_num_threads()}
    dirs: dict[str, dict[str, Any]] = {}
    for name in directions:
        if name in ("delta_T", "delta_S"):
            of = model_recipe(lineage, teacher if name == "delta_T" else student) if (
                teacher if name == "delta_T" else student) in lineage else None
            if of is None:
                return None
            dirs[name] = {"direction": name, "model": of, "minus": at}
        elif name in ("g_trait", "g_trait_no_unembed") and trait is not None:
            dirs[name] = {"direction": name, "at": at, "trait": dataclasses.asdict(trait), "computed": computed,
                          **({"without": list(NO_UNEMBED)} if name == "g_trait_no_unembed" else {})}
        else:
            return None
    return PlanRecipes(model=at, teacher=_teacher_recipe(lineage, teacher), directions=dirs)


__all__ = ["MODEL_FILE_PATTERNS", "PlanRecipes", "directory_files", "lineage_recipes", "model_recipe"]
