"""Booting, copying, saving and loading hooked models (TransformerLens 4.x `TransformerBridge`).

Models are saved as clean state dicts (`bridge.state_dict()` keys such as
`blocks.0.attn.q.weight`) in safetensors plus a JSON sidecar with the native config, never
with `save_pretrained` (wrapping mutates HF models) and never by pickling.
Copies are made by booting from the config and loading the state dict: `copy.deepcopy` of a
bridge after a forward pass keeps hooks pointing at the source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge

from workbench.core.errors import ArtifactError, ChecksumError, ConfigError, NumericsError, SchemaError
from workbench.core.io import atomic_write_json, load_tensors, read_json, save_tensors
from workbench.core.schemas import ModelSidecar, check_version, require_dict, validate

MODEL_SCHEMA_VERSION = 1

NATIVE_CONFIG_ATTR = "workbench_native_config"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None`/"auto" -> CUDA when present, else CPU; anything else is checked to exist."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device={device!r} is not a torch device. Use 'cpu', 'cuda' or 'auto'.") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was asked for but CUDA is not available here. Use device='cpu'.")
    return dev


def boot_native(
    config: dict[str, Any],
    *,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> TransformerBridge:
    """Boot a native TransformerLens model from a plain config dict (no download)."""
    bridge = TransformerBridge.boot_native(dict(config), device=resolve_device(device), dtype=dtype)
    setattr(bridge, NATIVE_CONFIG_ATTR, dict(config))
    if state_dict is not None:
        bridge.load_state_dict(state_dict, strict=True)
    return bridge


def native_config_of(bridge: TransformerBridge) -> dict[str, Any]:
    config = getattr(bridge, NATIVE_CONFIG_ATTR, None)
    if config is None:
        raise ConfigError(
            "This bridge was not booted by workbench.core.models.boot_native, so its native config is "
            "unknown. Boot it with workbench.core.models.boot_native (or load it with load_model)."
        )
    return dict(config)


def clean_state_dict(bridge: TransformerBridge) -> dict[str, torch.Tensor]:
    """Detached CPU copy of the bridge's state dict in its clean key space."""
    return {k: v.detach().to("cpu", copy=True) for k, v in bridge.state_dict().items()}


def copy_model(bridge: TransformerBridge, *, device: str | torch.device | None = None) -> TransformerBridge:
    """An independent copy (boot + load_state_dict; deepcopy is broken after a forward pass)."""
    param = next(bridge.parameters())
    return boot_native(
        native_config_of(bridge),
        device=device if device is not None else param.device,
        dtype=param.dtype,
        state_dict=clean_state_dict(bridge),
    )


def save_model(path: str | os.PathLike, bridge: TransformerBridge, meta: dict[str, Any] | None = None) -> str:
    """Write `path.safetensors` + `path.json` (config, meta, sha256); returns the sha256."""
    path = Path(path)
    sha = save_tensors(path.with_suffix(".safetensors"), clean_state_dict(bridge))
    atomic_write_json(
        path.with_suffix(".json"),
        {"schema_version": MODEL_SCHEMA_VERSION, "native_config": native_config_of(bridge), "meta": meta or {}, "sha256": sha},
    )
    return sha


def load_model(
    path: str | os.PathLike, *, device: str | torch.device | None = "cpu", dtype: torch.dtype | None = None
) -> TransformerBridge:
    """Load a model written by `save_model`, verifying its checksum."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        raise ArtifactError(f"No model at {path}: {sidecar} is missing. Build the organism first.")
    info = read_sidecar(sidecar, need_checksum=True)
    state = load_tensors(path.with_suffix(".safetensors"), expected_sha256=info["sha256"])
    check_shapes(state, info["native_config"], path.with_suffix(".safetensors"))
    check_finite_weights(str(path), state)
    try:
        return boot_native(info["native_config"], device=device, dtype=dtype, state_dict=state)
    except (RuntimeError, ValueError, TypeError, AssertionError, KeyError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ArtifactError(f"The model at {path} cannot be built from {sidecar.name} ({type(e).__name__}: "
                            f"{str(e)[:300]}). Its config and weights disagree: rebuild or re-export it.") from e


def read_sidecar(sidecar: str | os.PathLike, need_checksum: bool = False) -> dict[str, Any]:
    """A model's `.json` sidecar, schema-checked (`workbench.core.schemas.ModelSidecar`);
    `need_checksum`: a missing or malformed "sha256" is a ChecksumError (its weights are about to
    be loaded, and unverified weights are never loaded)."""
    where = str(sidecar)
    info = require_dict(read_json(sidecar), where, "model sidecar")
    sha = info.get("sha256")
    if need_checksum and not (isinstance(sha, str) and len(sha) == 64):
        raise ChecksumError(
            f"{sidecar} records no valid \"sha256\" for {Path(sidecar).with_suffix('.safetensors').name} (got "
            f"{sha!r}), so its weights cannot be verified and are not loaded. Rebuild the organism (python -m "
            "workbench.organism) or save the model again with workbench.core.models.save_model.")
    check_version(info, where, MODEL_SCHEMA_VERSION, what="model sidecar schema")
    validate(ModelSidecar, info, where, fix="Rebuild the model (or the organism) that wrote it.")
    return info


def check_shapes(state: dict[str, torch.Tensor], config: dict[str, Any], path: Path) -> None:
    """Compare the weights' embedding shapes and block count with the config before booting it,
    so a tampered config never allocates a model far larger than its weights (SchemaError)."""
    want: dict[str, tuple[int, ...]] = {}
    if "embed.weight" in state and config.get("d_vocab"):
        want["embed.weight"] = (config["d_vocab"], config["d_model"])
    if "pos_embed.weight" in state:
        want["pos_embed.weight"] = (config["n_ctx"], config["d_model"])
    for key, shape in want.items():
        if tuple(state[key].shape) != shape:
            raise SchemaError(f"{path}: {key} has shape {tuple(state[key].shape)} but the config in its .json says "
                              f"{shape} (d_vocab/n_ctx, d_model). The weights and config disagree: rebuild the model.")
    blocks = {k.split(".")[1] for k in state if k.startswith("blocks.")}
    if blocks and len(blocks) != config["n_layers"]:
        raise SchemaError(f"{path} holds {len(blocks)} blocks but its .json says n_layers = {config['n_layers']}. "
                          "The weights and config disagree: rebuild the model.")


def check_finite_weights(model: str, state: Mapping[str, torch.Tensor]) -> None:
    """NumericsError naming the model and parameter groups whose weights hold NaN or inf (a
    corrupt checkpoint or a diverged training run would otherwise give `nan` in every table)."""
    from workbench.core.params import group_of

    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        groups = list(dict.fromkeys(group_of(k)[0] for k in bad))
        raise NumericsError(
            f"Model {model} has NaN or inf weights in parameter group {', '.join(groups[:8])}"
            f"{f' (+{len(groups) - 8} more)' if len(groups) > 8 else ''} (first: {bad[0]}). The checkpoint is corrupt or "
            "its training diverged; rebuild or re-export it."
        )


def model_meta(path: str | os.PathLike) -> dict[str, Any]:
    return read_sidecar(Path(path).with_suffix(".json")).get("meta", {})
