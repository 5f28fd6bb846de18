"""The screening defense's retrainer for a Hugging Face family seed: the base distilled from the
teacher on kept rows with the seed's own recipe, student regime (LoRA or full) and student seed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from workbench.core.inputs import Inputs
from workbench.organism.config import OrganismConfig
from workbench.organism.hf_family.build import HF_DIR
from workbench.organism.hf_family.config import HFOrganismConfig
from workbench.organism.hf_family.models import CausalLMLogits, HFTrainable, load_hf, with_lora
from workbench.organism.tokenizer import Tokenizer


def hf_retrainer(seed_dir: Path, manifest: dict[str, Any], cfg: OrganismConfig, tok: Tokenizer,
                 progress: bool = False) -> Callable[[Inputs], torch.nn.Module]:
    """`retrain(kept_rows) -> student` (a Qwen2ForCausalLM, LoRA merged) as the build trains `student`."""
    from workbench.organism.build import distill_targets, student_seed_of
    from workbench.organism.training import train_student

    family = manifest.get("family", {})
    lora = HFOrganismConfig.from_dict(cfg.to_dict(), family).lora
    base, teacher = load_hf(seed_dir / HF_DIR / "base"), load_hf(seed_dir / HF_DIR / "teacher")
    student_seed = student_seed_of(int(manifest["seed"]), "student")

    def retrain(kept: Inputs) -> torch.nn.Module:
        is_lora = family.get("students") == "lora"
        model = with_lora(base, lora, seed=student_seed) if is_lora else copy.deepcopy(base)
        targets = distill_targets(cfg, tok, HFTrainable(teacher), kept.tokens)  # type: ignore[arg-type]
        train_student(HFTrainable(model.train()), targets, cfg, student_seed, progress, lr=lora.lr if is_lora else None)
        merged = model.merge_and_unload() if is_lora else model
        return CausalLMLogits(merged.eval())

    return retrain

