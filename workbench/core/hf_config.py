"""What a local Hugging Face directory's config.json says about its architecture, and a check that
several directories agree, run before any weights are loaded (a 7B load takes minutes; a mismatch
found from the configs takes milliseconds).

The fields compared: `model_type`, `architectures`, hidden size, number of layers, attention
heads and vocabulary size, read under each family's own names (GPT-2's `n_embd`/`n_layer`/`n_head`,
Llama/Qwen's `hidden_size`/`num_hidden_layers`/`num_attention_heads`), from `text_config` where a
multimodal config nests them. A field one config lacks is not compared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.core.errors import ArtifactError, IncompatibleModelsError

ARCH_FIELDS: dict[str, tuple[str, ...]] = {
    "model_type": ("model_type",),
    "architectures": ("architectures",),
    "hidden size": ("hidden_size", "n_embd", "d_model"),
    "layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "attention heads": ("num_attention_heads", "n_head", "num_heads"),
    "vocab size": ("vocab_size",),
}
"""Field label -> the config.json keys that hold it, first found wins."""


def read_hf_config(name: str, path: Path) -> dict[str, Any]:
    """The parsed config.json of a checked local HF directory (see `check_hf_dir`)."""
    file = Path(path) / "config.json"
    try:
        config = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"Model {name!r}: cannot read {file} ({e}). Pass a directory written by `save_pretrained`.") from e
    if not isinstance(config, dict):
        raise ArtifactError(f"Model {name!r}: {file} holds a {type(config).__name__}, not a JSON object.")
    return config


def architecture(config: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture fields of a config (label -> value; None where the config has none)."""
    nested = config.get("text_config") if isinstance(config.get("text_config"), Mapping) else {}
    out: dict[str, Any] = {}
    for label, keys in ARCH_FIELDS.items():
        value = next((src[k] for src in (config, nested) for k in keys if src.get(k) is not None), None)
        out[label] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def describe(arch: Mapping[str, Any]) -> str:
    """'qwen2 (Qwen2ForCausalLM)' from an `architecture` dict."""
    classes = arch.get("architectures")
    return f"{arch.get('model_type')} ({', '.join(classes)})" if classes else str(arch.get("model_type"))


def check_hf_configs(paths: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """Read every directory's config.json and raise IncompatibleModelsError at the first model
    whose architecture differs from the first one's, naming both models, both directories, both
    architectures and every differing field. Returns name -> `architecture`; loads no weights."""
    archs = {name: architecture(read_hf_config(name, p)) for name, p in paths.items()}
    if not archs:
        return archs
    ref = next(iter(archs))
    for name, arch in archs.items():
        diffs = [f"{label} {archs[ref][label]!r} vs {arch[label]!r}" for label in ARCH_FIELDS
                 if archs[ref][label] is not None and arch[label] is not None and archs[ref][label] != arch[label]]
        if diffs:
            raise IncompatibleModelsError(
                f"Models {ref!r} and {name!r} have different architectures: {ref!r} at {paths[ref]} is "
                f"{describe(archs[ref])}, {name!r} at {paths[name]} is {describe(arch)} ({'; '.join(diffs)}). "
                "No weights were loaded. A Lineage compares models of one architecture: pass checkpoints fine-tuned "
                "from the same base."
            )
    return archs


__all__ = ["ARCH_FIELDS", "architecture", "check_hf_configs", "describe", "read_hf_config"]
