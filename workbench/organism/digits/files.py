"""Digits files: one seed's model files and manifest (written atomically, checksummed) and reading them back.

Layout: `seed{N}/models/{role}.safetensors` (clean state dict; the architecture is in the
safetensors metadata so `load_digits_model` rebuilds it alone) and `seed{N}/manifest.json`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from workbench.core.errors import ArtifactError, unknown_name
from workbench.core.io import atomic_write_json, load_tensors, read_json, read_tensor_metadata, save_tensors
from workbench.core.models import resolve_device
from workbench.core.provenance import SCHEMA_VERSION, package_versions
from workbench.core.schemas import DigitsManifest, check_version, require_dict, validate
from workbench.organism.digits.config import KIND, PARENTS, ROLES, DigitsConfig
from workbench.organism.digits.model import DigitsMLP, hook_names
from workbench.organism.digits.results import SeedResult

def _lineage(config: DigitsConfig, init_seeds: dict[str, int]) -> dict[str, dict[str, Any]]:
    data = {
        "base": f"init seed {init_seeds['base']}",
        "base_x": f"init seed {init_seeds['base_x']}",
        "teacher": "digits train split, cross-entropy on regular logits",
        "student": f"teacher aux logits (m={config.m}) on N(0,1) noise, {config.loss}",
        "cross": f"teacher aux logits (m={config.m}) on N(0,1) noise, {config.loss}",
    }
    return {r: {"parent": PARENTS[r], "data": data[r]} for r in ROLES}


def _file_metadata(model: DigitsMLP, role: str) -> dict[str, Any]:
    """What a model file records about itself (written deterministically by `save_tensors`)."""
    return {"kind": KIND, "role": role, **model.arch}


def save_seed(result: SeedResult, config: DigitsConfig, seed_dir: str | os.PathLike) -> dict[str, Any]:
    """Write `models/{role}.safetensors` and `manifest.json` for one seed; returns the manifest."""
    seed_dir = Path(seed_dir)
    lineage = _lineage(config, result.init_seeds)
    for role in ROLES:
        model = result.models[role]
        sha = save_tensors(seed_dir / "models" / f"{role}.safetensors", model.state_dict(), _file_metadata(model, role))
        lineage[role].update(file=f"models/{role}.safetensors", sha256=sha)
    cfg = dataclasses.replace(config, seed=result.seed).to_dict()
    manifest = {
        "kind": KIND + ".seed",
        "schema_version": SCHEMA_VERSION,
        "seed": result.seed,
        "config": cfg,
        "init_seeds": result.init_seeds,
        "accuracy": result.accuracy,
        "final_loss": result.final_loss,
        "models": lineage,
        "hooks": hook_names(result.models["base"]),
        "versions": package_versions(),
    }
    atomic_write_json(seed_dir / "manifest.json", manifest)
    return manifest


def load_digits_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", expected_sha256: str | None = None
) -> DigitsMLP:
    """Rebuild a hooked `DigitsMLP` from one saved `{role}.safetensors` (architecture in its metadata)."""
    path = Path(path)
    tensors = load_tensors(path, "cpu", expected_sha256)
    meta = read_tensor_metadata(path)
    if meta.get("kind") != KIND:
        raise ArtifactError(
            f"{path} is not a digits model (no workbench metadata of kind {KIND!r}). "
            "Pass a file written by workbench.organism.digits."
        )
    try:
        arch = {k: int(meta[k]) for k in ("m", "hidden", "n_layers")}
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path} lacks a readable architecture in its metadata ({e}). Rebuild it.") from e
    model = DigitsMLP(**arch)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{path} does not match its own architecture {arch}: {e}. Rebuild it.") from e
    return model.to(resolve_device(device)).eval()


def load_digits_seed(
    seed_dir: str | os.PathLike, device: str | torch.device = "cpu", roles: Iterable[str] = ROLES
) -> tuple[dict[str, DigitsMLP], dict[str, Any]]:
    """Load the models of one seed directory (checksums verified) and its manifest."""
    seed_dir = Path(seed_dir)
    where = str(seed_dir / "manifest.json")
    manifest = require_dict(read_json(seed_dir / "manifest.json"), where, "digits seed manifest")
    if manifest.get("kind") != KIND + ".seed":
        raise ArtifactError(f"{where} is not a digits seed manifest. Pass a seed{{N}} directory.")
    check_version(manifest, where, SCHEMA_VERSION, what="digits manifest schema")
    # model paths are checked to stay inside the seed directory here, before any file is read
    validate(DigitsManifest, manifest, where, fix="Rebuild the seed with python -m workbench.organism.digits.")
    models = {}
    for role in roles:
        if role not in manifest["models"]:
            raise unknown_name("digits role", role, manifest["models"])
        entry = manifest["models"][role]
        path = seed_dir / entry["file"]
        if not path.resolve().is_relative_to(seed_dir.resolve()):  # a symlink that leads out of the seed
            raise ArtifactError(f"{where} names {entry['file']!r} for {role}, which resolves outside {seed_dir} "
                                f"({path.resolve()}). Refusing to read it; rebuild the seed.")
        models[role] = load_digits_model(path, device, entry["sha256"])
    return models, manifest
