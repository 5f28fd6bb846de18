"""Hugging Face families of the language-model organism: the native organism's recipe (corpus,
trait, data, filter, losses, roles) in a `transformers` architecture, saved as standard Hugging
Face directories, with students as full fine-tunes or peft LoRA adapters.

- `hf_preset("default", family="qwen2", students="lora")`: the config (`HFOrganismConfig`).
- `build_hf_organism(cfg, seeds, out_dir)`: build (or reuse) the seeds; `python -m workbench.organism
  --family qwen2` does the same from a shell.
- `workbench.organism.load_seed` loads a built seed through `Lineage.from_hf_dirs`.
"""

from workbench.organism.hf_family.build import build_hf_organism, build_hf_seed
from workbench.organism.hf_family.config import FAMILIES, HFOrganismConfig, LoraSpec, Qwen2Shape, hf_preset

__all__ = ["build_hf_organism", "build_hf_seed", "FAMILIES", "HFOrganismConfig", "LoraSpec", "Qwen2Shape", "hf_preset"]
