"""Where a lineage of Hugging Face checkpoints loads, and whether it fits, decided before any weight loads.

- `checkpoint_params(dir)`: the parameter count of a checkpoint from its safetensors headers (a
  few KB read per file, no weights), else from config.json on the meta device.
- `memory_budget(device, device_map, max_memory)`: the bytes each device offers: the user's
  `max_memory`, else what is free now (`torch.cuda.mem_get_info` per GPU, psutil's available RAM).
- `check_fits(needed, budget, dtype)`: a `ModelsDoNotFitError` naming the bytes needed, the bytes
  available and the fixes (a device map, bf16, fewer models at once) instead of an out-of-memory
  crash minutes into loading.
- `lineage_device_map(dir, n_models, dtype, budget)`: ONE explicit map for every model of the
  lineage (accelerate's `infer_auto_device_map` on the meta model, each device's budget shared
  by the models), so the same parameter of every model sits on the same device: deltas and
  per-key directions never cross devices.

Maps name real devices only (GPU indices, "cuda:N", or "cpu" when there is no GPU): the workbench
reads weights (deltas, gradients, finiteness checks), and disk or meta offload leaves them on the
meta device; the bridge refuses CPU mixed with GPUs.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from workbench.core.errors import ConfigError

MaxMemory = dict[str | int, int]
"""Device key (a GPU index or "cpu", as accelerate spells them) -> bytes."""
DeviceMap = dict[str, str | int]
"""Module path of the Hugging Face model ("" for all) -> device key."""

_SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def gib(n: float) -> str:
    """Bytes as GiB with two decimals (small sizes in KiB), for messages."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def device_key(device: str | int | torch.device) -> str | int:
    """accelerate's key of a device: "cpu", or the GPU index (cuda:N and N -> N; "cuda" -> the current GPU)."""
    if isinstance(device, int):
        return device
    if isinstance(device, str) and device.strip().isdigit():
        return int(device)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"Device {device!r} is not a device; write cpu, cuda:N or a GPU index N.") from e
    if dev.type == "cpu":
        return "cpu"
    if dev.type == "cuda":
        return dev.index if dev.index is not None else (torch.cuda.current_device() if torch.cuda.is_available() else 0)
    raise ConfigError(f"Device {device!r}: device maps place modules on GPUs (cuda:N) or on the cpu, not on "
                      f"{dev.type!r}. Disk and meta offload leave weights the workbench reads on the meta device.")


def check_device_map(device_map: Mapping[str, Any]) -> DeviceMap:
    """An explicit map with every value a real device (GPU index or "cpu"), normalised; a ConfigError
    for disk/meta offload, unknown devices, CPU mixed with GPUs, or GPUs that are not here."""
    if not isinstance(device_map, Mapping) or not device_map:
        raise ConfigError(f"device_map {device_map!r} is not a non-empty mapping of module path -> device, e.g. "
                          '{"model.embed_tokens": 0, "model.layers.0": 0, ..., "lm_head": 1}, or "auto".')
    out: DeviceMap = {}
    for module, dev in device_map.items():
        if isinstance(dev, str) and dev.strip().lower() in ("disk", "meta"):
            raise ConfigError(f"device_map puts {module!r} on {dev!r}: offloaded weights sit on the meta device, and the "
                              "workbench reads weights (deltas, gradients). Map every module to a GPU or to the cpu; "
                              "if they do not fit, load in bfloat16 or fewer models at once.")
        out[str(module)] = device_key(dev)
    kinds = {"cpu" if v == "cpu" else "gpu" for v in out.values()}
    if kinds == {"cpu", "gpu"}:
        raise ConfigError("device_map mixes the cpu with GPUs, which the TransformerLens bridge refuses. Map every "
                          "module to GPUs (or every one to the cpu).")
    gpus = sorted(v for v in out.values() if v != "cpu")
    if gpus and (not torch.cuda.is_available() or gpus[-1] >= torch.cuda.device_count()):
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ConfigError(f"device_map names GPU {gpus[-1]} but this machine has {have} GPU(s). Fix the map.")
    return out


# --------------------------------------------------------------------------- bytes needed


def _safetensors_params(files: list[Path]) -> int:
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for s in info["shape"]:
                    count *= int(s)
                total += count
    return total


def checkpoint_params(path: str | os.PathLike, trust_remote_code: bool = False) -> int | None:
    """Parameters of a checkpoint directory without loading weights: the safetensors headers
    (`model.safetensors`, or the shards its index names), else the model built from config.json
    on the meta device (None when that cannot be built: the fit check then skips the model). Tied
    weights saved once count once, as they load."""
    p = Path(path)
    index = p / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return _safetensors_params([p / s for s in shards])
    if (p / "model.safetensors").is_file():
        return _safetensors_params([p / "model.safetensors"])
    try:
        model = meta_model(p, torch.float32, trust_remote_code)
    except (ValueError, KeyError, OSError, ImportError):  # not a causal LM class transformers can build
        return None
    return sum(t.numel() for t in model.parameters())


def meta_model(path: str | os.PathLike, dtype: torch.dtype, trust_remote_code: bool = False) -> torch.nn.Module:
    """The checkpoint's model class built from its config.json on the meta device (no memory, no weights)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from workbench.core.hf import hf_offline

    with hf_offline():
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config, torch_dtype=dtype, trust_remote_code=trust_remote_code)


# --------------------------------------------------------------------------- bytes available


def free_bytes(key: str | int) -> int:
    """Free memory now: for a GPU `torch.cuda.mem_get_info` plus what torch's caching allocator holds
    unused (reserved, not allocated: freed tensors it has not returned), for the cpu psutil's available RAM."""
    if key == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    i = int(key)
    cached = torch.cuda.memory_reserved(i) - torch.cuda.memory_allocated(i)
    return int(torch.cuda.mem_get_info(i)[0]) + max(0, int(cached))


def memory_budget(device: torch.device, device_map: str | Mapping[str, Any] | None,
                  max_memory: Mapping[str | int, int] | None) -> MaxMemory:
    """The bytes each device offers the lineage. Without a map: the one `device` (its `max_memory`
    entry when given). With "auto": `max_memory` when given, else every GPU's free memory (the cpu's
    when there is no GPU). With an explicit map: the devices it names."""
    given = {device_key(k): int(v) for k, v in (max_memory or {}).items()}
    if device_map is None:
        key = device_key(device)
        if given and key not in given:
            raise ConfigError(f"max_memory names {sorted(map(str, given))} but the models load on {device} only; give "
                              f"its budget ({key}=SIZE) or add a device map (device_map='auto').")
        return {key: given[key] if key in given else free_bytes(key)}
    if isinstance(device_map, Mapping):
        keys = sorted(set(check_device_map(device_map).values()), key=str)
    elif device_map == "auto":
        keys = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else ["cpu"]
        if given:
            keys = list(given)
    else:
        raise ConfigError(f"device_map={device_map!r}; use 'auto' or an explicit mapping of module path -> device.")
    return {k: given[k] if k in given else free_bytes(k) for k in keys}


# --------------------------------------------------------------------------- the check and the map


class ModelsDoNotFitError(ConfigError):
    """The lineage's weights need more memory than the devices offer (checked before loading)."""


def check_fits(needed: Mapping[str, int], budget: Mapping[str | int, int], dtype: torch.dtype) -> None:
    """A `ModelsDoNotFitError` when the models' bytes (name -> bytes) exceed the budget's total,
    naming both and the fixes. Weights only: activations need headroom beyond this."""
    total, have = sum(needed.values()), sum(budget.values())
    if total <= have:
        return
    per_model = ", ".join(f"{n} {gib(b)}" for n, b in needed.items())
    where = ", ".join(f"{'cpu' if k == 'cpu' else f'cuda:{k}'} {gib(v)}" for k, v in budget.items())
    half = " or bfloat16 (dtype=torch.bfloat16, --dtype bfloat16: half of float32)" if dtype.itemsize > 2 else ""
    raise ModelsDoNotFitError(
        f"The models do not fit: their weights need {gib(total)} ({total} bytes; {per_model}; {dtype}) but "
        f"{gib(have)} ({have} bytes) is available ({where}). Fix: spread them over more GPUs with a device map "
        f"(device_map='auto', --device-map auto, with --max-memory per device){half}, or load fewer models at "
        "once (run the sections that need two models, e.g. base and teacher, separately).")


def lineage_device_map(path: str | os.PathLike, n_models: int, dtype: torch.dtype, budget: Mapping[str | int, int],
                       trust_remote_code: bool = False) -> DeviceMap:
    """One explicit map for all `n_models` models of the checkpoint at `path`: accelerate's
    `infer_auto_device_map` with each device's budget divided by `n_models` (whole decoder layers
    per device, tied weights together). A ModelsDoNotFitError when some module would not fit."""
    from accelerate.utils import infer_auto_device_map

    model = meta_model(path, dtype, trust_remote_code)
    share = {k: int(v) // max(1, n_models) for k, v in budget.items()}
    dm = infer_auto_device_map(model, max_memory=share, no_split_module_classes=list(model._no_split_modules or []),
                               dtype=dtype)
    off = sorted({str(v) for v in dm.values() if v not in share})
    if off:
        need = sum(t.numel() for t in model.parameters()) * dtype.itemsize
        check_fits({f"{n_models} x {Path(path).name}": need * n_models}, budget, dtype)
        raise ModelsDoNotFitError(
            f"device_map='auto' could not place every module of {path} on {sorted(map(str, budget))} with "
            f"{', '.join(gib(v) for v in share.values())} per model each ({n_models} models share each device): some "
            f"would go to {off}. Fix: raise max_memory, add GPUs, load in bfloat16, or load fewer models at once.")
    return check_device_map(dm)  # e.g. the cpu in max_memory beside GPUs: refused here, not mid-load


def device_bytes(model: torch.nn.Module) -> MaxMemory:
    """The bytes of a loaded model's parameters and buffers on each device (accelerate keys)."""
    out: MaxMemory = {}
    seen: set[int] = set()
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) in seen or t.device.type == "meta":
            continue
        seen.add(id(t))
        k = device_key(t.device)
        out[k] = out.get(k, 0) + t.numel() * t.element_size()
    return out


__all__ = ["DeviceMap", "MaxMemory", "ModelsDoNotFitError", "check_device_map", "check_fits", "checkpoint_params",
           "device_bytes", "device_key", "free_bytes", "gib", "lineage_device_map", "memory_budget", "meta_model"]
