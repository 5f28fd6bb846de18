"""Offline loading of local Hugging Face checkpoint directories into `TransformerBridge`s.

Only directories written by `save_pretrained` are accepted, never Hub ids, and the Hub is
switched off while booting, so nothing is downloaded. Remote code is never trusted unless
the caller asks for it (`trust_remote_code=False` by default). A peft LoRA adapter directory
(`adapter_config.json`) is booted as its parent's directory with the adapter merged in
(`workbench.core.lora`). `Lineage.from_hf_dirs` and `Lineage.copy_model` load through here.
Models larger than one device load with a device map (`device_map="auto"` or explicit, `max_memory`):
one map for every model of the lineage, and a clear error before any weight loads when they do not
fit (`workbench.core.hf_memory`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge

from workbench.core.errors import ArtifactError, ConfigError
from workbench.core.hf_config import check_hf_configs
from workbench.core.hf_memory import (DeviceMap, check_device_map, check_fits, checkpoint_params, lineage_device_map,
                                      memory_budget)
from workbench.core.hf_tokenizers import check_same_tokenizers
from workbench.core.lora import is_adapter_dir, merge_adapter, read_adapter
from workbench.core.models import check_finite_weights, resolve_device


@contextlib.contextmanager
def hf_offline() -> Iterator[None]:
    """Forbid Hugging Face Hub requests inside the block (local directories only)."""
    import huggingface_hub.constants as hub_constants

    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    saved_const = hub_constants.HF_HUB_OFFLINE
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved_const
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_hf_dir(name: str, path: str | os.PathLike) -> Path:
    """A local HF checkpoint directory (config.json) or peft adapter directory
    (adapter_config.json), resolved; never a Hub id."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ArtifactError(
            f"Model {name!r}: {str(path)!r} is not a local directory. Lineage.from_hf_dirs loads local "
            "checkpoints only, never Hub ids: download the model to a directory first "
            "(e.g. `huggingface-cli download ORG/MODEL --local-dir DIR`) and pass DIR."
        )
    if not (p / "config.json").is_file() and not is_adapter_dir(p):
        raise ArtifactError(
            f"Model {name!r}: {p} has neither config.json (a Hugging Face checkpoint) nor "
            "adapter_config.json (a peft LoRA adapter). Pass the directory written by `save_pretrained`."
        )
    return p.resolve()


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
"""Files any Hugging Face tokenizer is loaded from; a directory with none of them has no tokenizer."""


def placeholder_tokenizer() -> Any:
    """A one-token fast tokenizer for a directory that has no tokenizer of its own.

    The bridge always loads a tokenizer when booting, and without files it falls back on the
    family's default class: GPT-2's and Qwen2's come up empty, but Llama's (transformers 5) cannot
    be built without tokenizer.json or sentencepiece, so the boot fails. The workbench never reads
    the bridge's tokenizer (token ids come from `Inputs` and `Trait`), so an explicit placeholder
    keeps every family bootable offline.
    """
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<|endoftext|>": 0}, unk_token="<|endoftext|>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def boot_hf_dir(
    path: str | os.PathLike,
    *,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    device_map: Mapping[str, str | int] | None = None,
) -> TransformerBridge:
    """Boot a bridge from a local HF checkpoint directory with the Hub switched off; with an
    explicit `device_map` (module path -> GPU index or "cpu") the modules load where it says
    (accelerate's dispatch; the bridge's hooks run on each layer's device) and `device` is unused."""
    path = check_hf_dir(str(path), path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if device_map is not None:
        kwargs["device_map"] = dict(check_device_map(device_map))
    else:
        kwargs["device"] = resolve_device(device)
    if dtype is not None:
        kwargs["dtype"] = dtype
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        kwargs["tokenizer"] = placeholder_tokenizer()
    with hf_offline():
        return TransformerBridge.boot_transformers(str(path), **kwargs)


def boot_hf_dirs(
    dirs: Mapping[str, str | os.PathLike],
    *,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    parents: Mapping[str, str | None] | None = None,
    device_map: str | Mapping[str, str | int] | None = None,
    max_memory: Mapping[str | int, int] | None = None,
) -> tuple[dict[str, TransformerBridge], dict[str, dict[str, Any]]]:
    """Boot every named directory; returns (name -> bridge, name -> provenance meta).

    Every directory (and every adapter's config and factors) is checked, and the full checkpoints'
    config.json files compared (`check_hf_configs`), before any model is booted, so a typo or a
    mixed architecture fails in seconds. The meta records the resolved directory (`hf_dir`,
    which `copy_hf_model` boots again) and whether remote code was trusted. An adapter
    directory needs its parent (`parents[name]`, a full checkpoint among `dirs`): it is booted
    from the parent's directory with the adapter merged in (meta `hf_dir` is the parent's,
    `lora` the adapter's r, alpha, target modules and directory).

    Before any weights load, the models' bytes (parameters from the safetensors headers x the dtype's
    size; an adapter's model is a full copy of its parent's) are compared with what the devices offer
    (`max_memory`, else the free memory now): a `ModelsDoNotFitError` names both and the fixes.
    `device_map="auto"` computes one map for all models (each device's budget shared by them) and
    an explicit map is used for every model; both name GPUs or the cpu, never disk or meta.
    """
    parents = dict(parents or {})
    paths = {name: check_hf_dir(name, p) for name, p in dirs.items()}  # fail before booting any
    adapters = {name: read_adapter(p) for name, p in paths.items() if is_adapter_dir(p)}
    for name in adapters:
        parent = parents.get(name)
        if parent is None or parent not in paths or parent in adapters:
            full = [n for n in paths if n not in adapters]
            raise ConfigError(
                f"Model {name!r} is a LoRA adapter ({paths[name]}) and needs a parent that is a full checkpoint "
                f"among the directories ({', '.join(full) or 'none given'}); its parent is {parent!r}. Pass the "
                f"base directory too and parents={{{name!r}: 'base'}} if its role has no default parent."
            )
    check_hf_configs({n: p for n, p in paths.items() if n not in adapters})  # one architecture, before any weights load
    check_same_tokenizers(paths)  # one tokenizer (where saved), before any weights load
    dm = plan_placement(paths, {n: str(parents[n]) for n in adapters}, device=device, dtype=dtype,
                        trust_remote_code=trust_remote_code, device_map=device_map, max_memory=max_memory)
    models: dict[str, TransformerBridge] = {}
    meta: dict[str, dict[str, Any]] = {}
    for name, p in paths.items():
        if name in adapters:
            continue
        models[name] = boot_hf_dir(p, device=device, dtype=dtype, trust_remote_code=trust_remote_code, device_map=dm)
        meta[name] = {"hf_dir": str(p), "trust_remote_code": trust_remote_code}
    for name, adapter in adapters.items():
        parent = str(parents[name])
        bridge = boot_hf_dir(paths[parent], device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                             device_map=dm)
        merge_adapter(bridge, adapter, parent=parent)
        models[name] = bridge
        meta[name] = {"hf_dir": str(paths[parent]), "trust_remote_code": trust_remote_code, "lora": adapter.meta()}
    for name in paths:  # NaN or inf weights are an error naming the model and group, not a nan table
        check_finite_weights(f"{name!r} ({paths[name]})", models[name].state_dict())
    return {n: models[n] for n in paths}, {n: meta[n] for n in paths}


def plan_placement(
    paths: Mapping[str, Path],
    adapter_parents: Mapping[str, str],
    *,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    trust_remote_code: bool,
    device_map: str | Mapping[str, str | int] | None,
    max_memory: Mapping[str | int, int] | None,
) -> DeviceMap | None:
    """The explicit device map every model loads with (None: the one `device`), after checking that
    the models' weights fit the budget (`workbench.core.hf_memory`); nothing is loaded."""
    load_dtype = dtype or torch.float32  # what boot_transformers loads in when not told
    full = {n: paths[adapter_parents.get(n, n)] for n in paths}  # an adapter's model: its parent's size
    counts = {n: checkpoint_params(p, trust_remote_code) for n, p in full.items()}
    needed = {n: c * load_dtype.itemsize for n, c in counts.items() if c is not None}
    budget = memory_budget(resolve_device(device), device_map, max_memory)
    check_fits(needed, budget, load_dtype)
    if device_map is None:
        return None
    if isinstance(device_map, Mapping):
        return check_device_map(device_map)
    first = next(iter(full.values()))
    return lineage_device_map(first, len(full), load_dtype, budget, trust_remote_code)


def device_map_of(bridge: TransformerBridge) -> DeviceMap | None:
    """The device map a bridge's Hugging Face model was dispatched with (None: on one device)."""
    dm = getattr(getattr(bridge, "original_model", None), "hf_device_map", None)
    return dict(dm) if dm else None


def copy_hf_model(
    bridge: TransformerBridge,
    hf_dir: str | os.PathLike,
    *,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
) -> TransformerBridge:
    """An independent copy of `bridge`: boot `hf_dir` again and load `bridge`'s current weights.

    Never `copy.deepcopy` a bridge: after a forward pass its copy's hooks point at the source. A
    bridge spread over devices by a device map is copied with the same map.
    """
    new = boot_hf_dir(hf_dir, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                      device_map=device_map_of(bridge))
    new.load_state_dict({k: v.detach().clone() for k, v in bridge.state_dict().items()}, strict=True)
    return new
