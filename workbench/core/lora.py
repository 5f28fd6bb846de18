"""peft LoRA adapter directories, read offline and mapped exactly onto a bridge's clean keys.

An adapter directory (`adapter_config.json` + `adapter_model.safetensors`, as peft's
`save_pretrained` writes it) holds per-module factors A [r, in] and B [out, r]; the module's
weight change is scaling * B @ A (scaling = alpha / r, or alpha / sqrt(r) with rsLoRA),
transposed for GPT-2's Conv1D (`fan_in_fan_out`) and for embeddings. `adapter_factors` maps
each change onto the Lineage's clean parameter keys (a joint c_attn change splits into the q, k,
v keys), keeping the low-rank factors per key so that a delta is exact and analyses may later
work from the factors. `merge_adapter` adds the changes to a bridge booted from the base, so
every analysis sees an ordinary model. Pickled `adapter_model.bin` files are refused (never
unpickled); DoRA, LoRA biases and other adapter types are refused by name.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from workbench.core.errors import ArtifactError, ConfigError, IncompatibleModelsError
from workbench.core.params import storage_id, param_space

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LORA_ATTR = "_workbench_lora"
"""Attribute of a merged bridge holding its `MergedAdapter` (the factors per clean key)."""

_PREFIX = "base_model.model."
_FACTOR_RE = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B)\.weight$")
_EMBED_RE = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_embedding_A|lora_embedding_B)$")
_REFUSED_CONFIG = {  # flag -> why it is refused
    "use_dora": "DoRA (use_dora) rescales each merged column by a learned magnitude, so its change is not "
    "a low-rank product",
    "lora_bias": "lora_bias adds a trained bias to lora_B",
    "layer_replication": "layer_replication changes the model's layer structure",
    "trainable_token_indices": "trainable_token_indices trains single embedding rows outside LoRA",
}


def is_adapter_dir(path: str | os.PathLike) -> bool:
    """True for a directory holding a peft adapter (`adapter_config.json`)."""
    return (Path(path).expanduser() / ADAPTER_CONFIG).is_file()


# --------------------------------------------------------------------------- reading


@dataclass
class LoraModule:
    """One adapted HF module: weight change = scaling * B @ A (transposed when `transpose`)."""

    A: Float[Tensor, "r d_in"]
    B: Float[Tensor, "d_out r"]
    scaling: float
    transpose: bool  # the HF weight is stored [d_in, d_out] (Conv1D with fan_in_fan_out, Embedding)


@dataclass
class LoraAdapter:
    """A peft LoRA adapter read from disk: its config fields and factors per HF module name."""

    path: str
    r: int
    lora_alpha: float
    use_rslora: bool
    target_modules: list[str] | str | None
    base_model_name_or_path: str | None
    fan_in_fan_out: bool
    modules_to_save: list[str] | None
    modules: dict[str, LoraModule]
    replaced: dict[str, Tensor] = field(default_factory=dict)  # HF parameter name -> saved full weight

    def meta(self) -> dict[str, Any]:
        """JSON-able provenance for a ModelRecord."""
        return {
            "adapter_dir": self.path,
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "use_rslora": self.use_rslora,
            "target_modules": self.target_modules,
            "base_model_name_or_path": self.base_model_name_or_path,
            "fan_in_fan_out": self.fan_in_fan_out,
            "modules_to_save": self.modules_to_save,
            "modules": sorted(self.modules),
        }


def _pattern_value(pattern: Mapping[str, Any], module: str, default: Any) -> Any:
    """peft's rank/alpha pattern lookup: the first key matching a suffix of the module name."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"Cannot read {path / ADAPTER_CONFIG}: {e}. Rewrite it with peft's save_pretrained.") from e
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise ConfigError(
            f"Adapter {path}: peft_type {config.get('peft_type')!r} is not supported; only LORA adapters are. "
            "Merge other adapter types with peft (merge_and_unload) and pass the merged directory."
        )
    for flag, why in _REFUSED_CONFIG.items():
        if config.get(flag):
            raise ConfigError(
                f"Adapter {path}: {flag}={config[flag]!r} is not supported ({why}). Merge it with peft's "
                "merge_and_unload, save_pretrained the merged model and pass that directory instead."
            )
    return config


def read_adapter(path: str | os.PathLike) -> LoraAdapter:
    """Read a peft LoRA adapter directory (safetensors only; nothing is unpickled)."""
    from safetensors.torch import load_file

    p = Path(path).expanduser().resolve()
    config = _read_config(p)
    weights = p / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickled = (p / "adapter_model.bin").is_file()
        raise ArtifactError(
            f"Adapter {p} has no {ADAPTER_WEIGHTS}"
            + (" (only a pickled adapter_model.bin, which the workbench never unpickles)" if pickled else "")
            + ". Re-save it with peft's save_pretrained(..., safe_serialization=True)."
        )
    tensors = load_file(str(weights))
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    rslora, fifo = bool(config.get("use_rslora", False)), bool(config.get("fan_in_fan_out", False))
    factors: dict[str, dict[str, Tensor]] = {}
    embeddings: set[str] = set()
    replaced: dict[str, Tensor] = {}
    for key, t in tensors.items():
        name = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
        m = _FACTOR_RE.match(name) or _EMBED_RE.match(name)
        if m:
            kind = m.group("kind")[-1]  # "A" or "B"
            factors.setdefault(m.group("module"), {})[kind] = t
            if "embedding" in m.group("kind"):
                embeddings.add(m.group("module"))
        elif ".lora_" in name:
            raise ConfigError(
                f"Adapter {p}: tensor {key!r} is not a LoRA A/B factor this reader supports. Merge the adapter "
                "with peft's merge_and_unload and pass the merged directory."
            )
        else:  # modules_to_save (and trained biases): full weights that replace the base's
            replaced[name.replace("modules_to_save.", "").replace("original_module.", "")] = t
    modules: dict[str, LoraModule] = {}
    for module, ab in factors.items():
        if set(ab) != {"A", "B"}:
            raise ArtifactError(f"Adapter {p}: module {module!r} has lora_{set('AB') - set(ab)} missing.")
        a, b = ab["A"], ab["B"]
        rank = a.shape[0]
        if b.shape[1] != rank:
            raise ArtifactError(f"Adapter {p}: module {module!r} has A {tuple(a.shape)} and B {tuple(b.shape)}.")
        m_alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, alpha))
        scaling = m_alpha / math.sqrt(rank) if rslora else m_alpha / rank
        modules[module] = LoraModule(a, b, scaling, transpose=fifo or module in embeddings)
    return LoraAdapter(
        path=str(p),
        r=r,
        lora_alpha=alpha,
        use_rslora=rslora,
        target_modules=config.get("target_modules"),
        base_model_name_or_path=config.get("base_model_name_or_path"),
        fan_in_fan_out=fifo,
        modules_to_save=config.get("modules_to_save"),
        modules=modules,
        replaced=replaced,
    )


# --------------------------------------------------------------------------- clean keys


@dataclass
class LoraFactor:
    """The change of one clean key: scaling * B @ A, transposed when `transpose`."""

    A: Float[Tensor, "r d_in"]
    B: Float[Tensor, "d_out r"]
    scaling: float
    transpose: bool

    def delta(self, dtype: torch.dtype | None = None) -> Tensor:
        """The full-size change in the clean key's layout (computed in at least float32)."""
        work = torch.promote_types(self.A.dtype, torch.float32)
        d = self.scaling * (self.B.to(work) @ self.A.to(work))
        d = d.T if self.transpose else d
        return d.to(dtype or self.A.dtype)


@dataclass
class MergedAdapter:
    """An adapter as merged into a bridge: factors per clean key, full replacements, provenance."""

    adapter: LoraAdapter
    factors: dict[str, LoraFactor]
    replaced: dict[str, Tensor]
    parent: str | None = None


def _element_index(t: Tensor) -> Tensor:
    """Storage element index of every element of `t` (row-major), from its strides."""
    index = torch.full((), t.storage_offset(), dtype=torch.long)
    for size, stride in zip(t.shape, t.stride()):
        index = index.unsqueeze(-1) + torch.arange(size, dtype=torch.long) * stride
    return index.reshape(t.shape)


def hf_parameters(bridge: TransformerBridge) -> dict[str, nn.Parameter]:
    """HF parameter name (the wrapped model's, `_original_component` removed) -> Parameter."""
    out: dict[str, nn.Parameter] = {}
    for name, p in bridge.named_parameters(remove_duplicate=False):
        out.setdefault(name.replace("._original_component", ""), p)
    return out


def _hf_param(hf: Mapping[str, nn.Parameter], name: str, adapter: LoraAdapter) -> nn.Parameter:
    if name not in hf:
        modules = sorted({n.rsplit(".", 1)[0] for n in hf if n.endswith(".weight")})
        near = [m for m in modules if m.rsplit(".", 1)[-1] == name.rsplit(".", 2)[-2]][:4]
        raise IncompatibleModelsError(
            f"Adapter {adapter.path} (base {adapter.base_model_name_or_path!r}) adapts {name.rsplit('.', 1)[0]!r}, "
            f"which this base model does not have{' (it has e.g. ' + ', '.join(near) + ')' if near else ''}. "
            "Pass the base directory the adapter was trained on."
        )
    return hf[name]


def _split(
    module: str, lm: LoraModule, target: nn.Parameter, space_params: Mapping[str, nn.Parameter]
) -> dict[str, LoraFactor]:
    """Express a module's change on the clean keys that hold its weight's memory."""
    d_out, d_in = lm.B.shape[0], lm.A.shape[1]
    grid = torch.arange(d_out * d_in).view(d_out, d_in)  # flat position in the [d_out, d_in] product
    idx = _element_index(target.detach())
    lo, hi = int(idx.min()), int(idx.max())
    buf = torch.full((hi - lo + 1,), -1, dtype=torch.long)
    buf[(idx - lo).reshape(-1)] = (grid.T if lm.transpose else grid).reshape(-1)
    out: dict[str, LoraFactor] = {}
    covered = 0
    for key, q in space_params.items():
        if storage_id(q) != storage_id(target) or q.dim() != 2:
            continue
        qi = _element_index(q.detach())
        if int(qi.max()) < lo or int(qi.min()) > hi:
            continue
        g = buf[(qi - lo).clamp(0, hi - lo)].masked_fill((qi < lo) | (qi > hi), -1)
        if bool((g < 0).all()):
            continue
        for transpose, gg in ((False, g), (True, g.T)):
            rows = gg[:, 0] // d_in
            if gg.shape[1] == d_in and torch.equal(gg, rows[:, None] * d_in + torch.arange(d_in)):
                out[key] = LoraFactor(lm.A, lm.B[rows], lm.scaling, transpose)
                covered += g.numel()
                break
        else:
            raise IncompatibleModelsError(
                f"Cannot map the LoRA change of {module!r} onto clean key {key!r}: it holds part of the weight in "
                "a layout that is not whole rows of the change. Merge the adapter with peft instead."
            )
    if covered != target.numel():
        raise IncompatibleModelsError(
            f"The LoRA change of {module!r} covers {target.numel()} weights but the clean keys hold {covered} "
            "of them. Merge the adapter with peft instead."
        )
    return out


def adapter_factors(bridge: TransformerBridge, adapter: LoraAdapter) -> MergedAdapter:
    """Map every adapted module of `adapter` onto `bridge`'s clean keys (shapes checked, named)."""
    hf = hf_parameters(bridge)
    space = param_space(bridge)
    factors: dict[str, LoraFactor] = {}
    for module, lm in adapter.modules.items():
        target = _hf_param(hf, f"{module}.weight", adapter)
        d_out, d_in = lm.B.shape[0], lm.A.shape[1]
        want = (d_in, d_out) if lm.transpose else (d_out, d_in)
        if tuple(target.shape) != want:
            raise IncompatibleModelsError(
                f"Adapter {adapter.path}: module {module!r} changes a weight of shape {want} (B {tuple(lm.B.shape)} "
                f"@ A {tuple(lm.A.shape)}{', transposed' if lm.transpose else ''}) but the base's weight is "
                f"{tuple(target.shape)}. The adapter was trained on another base "
                f"({adapter.base_model_name_or_path!r}): pass that base's directory."
            )
        for key, f in _split(module, lm, target, space.params).items():
            if key in factors:
                raise IncompatibleModelsError(f"Clean key {key!r} is changed by two adapted modules (tied weights).")
            factors[key] = f
    replaced: dict[str, Tensor] = {}
    by_id = {id(p): k for k, p in space.params.items()}
    for name, t in adapter.replaced.items():
        target = _hf_param(hf, name, adapter)
        key = by_id.get(id(target))
        if key is None or tuple(t.shape) != tuple(target.shape):
            raise IncompatibleModelsError(
                f"Adapter {adapter.path}: saved weight {name!r} {tuple(t.shape)} does not match one clean key of "
                f"this base (shape {tuple(target.shape)}). Merge the adapter with peft instead."
            )
        replaced[key] = t
    return MergedAdapter(adapter=adapter, factors=factors, replaced=replaced)


@torch.no_grad()
def merge_adapter(bridge: TransformerBridge, adapter: LoraAdapter, parent: str | None = None) -> MergedAdapter:
    """Add the adapter's changes to `bridge` in place (booted from its base); keeps the factors on it."""
    merged = adapter_factors(bridge, adapter)
    merged.parent = parent
    params = param_space(bridge).params
    for key, f in merged.factors.items():
        p = params[key]
        p.copy_((p.float() + f.delta(torch.float32)).to(p.dtype))  # one rounding, also in bf16
    for key, t in merged.replaced.items():
        params[key].copy_(t.to(params[key].dtype))
    setattr(bridge, LORA_ATTR, merged)
    return merged


def merged_adapter(bridge: TransformerBridge) -> MergedAdapter | None:
    """The adapter merged into `bridge` by `merge_adapter`, or None."""
    return getattr(bridge, LORA_ATTR, None)
