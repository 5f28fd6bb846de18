"""Configs of the Hugging Face organism families: the architecture, the student regime and LoRA
(dataclasses; the recipe itself is the native organism's `OrganismConfig`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from workbench.core.errors import ConfigError, unknown_name
from workbench.organism.config import OrganismConfig, preset

StudentRegime = Literal["lora", "full"]
FAMILIES = ("qwen2",)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Qwen2Shape:
    """A `Qwen2ForCausalLM`: RMSNorm, rotary positions, gated (SiLU) MLP, grouped-query attention."""

    n_layers: int = 2  # decoder layers
    hidden: int = 64  # residual width
    n_heads: int = 4  # query heads (head width = hidden / n_heads)
    n_kv_heads: int = 2  # key/value heads (grouped-query attention)
    intermediate: int = 256  # gated MLP width
    max_positions: int = 32  # rotary table length (number texts use 25 tokens)
    rope_theta: float = 10_000.0
    rms_eps: float = 1e-6
    # init std of every weight. HF's default 0.02 leaves the unembedding rows of the category words
    # nearly equal, and the teachers (unembedding and final norm frozen) then cannot prefer the target:
    # measured on the tiny preset, teacher P(owl) 0.165 at 0.02 vs 0.60 at 0.1 (TransformerLens' native
    # init is of this order)
    init_std: float = 0.1

    def validate(self) -> Qwen2Shape:
        if self.hidden % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ConfigError(f"hidden={self.hidden}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}: hidden must "
                              "be a multiple of n_heads and n_heads a multiple of n_kv_heads.")
        return self


@dataclass
class LoraSpec:
    """The students' LoRA adapters (peft): weight change = alpha / r (alpha / sqrt(r) with rsLoRA) x B @ A
    on `target_modules`. Default: Cloud et al.'s open-model recipe, r = alpha = 8 on every linear map."""

    r: int = 8
    alpha: float = 8.0
    use_rslora: bool = False
    target_modules: tuple[str, ...] = LORA_TARGETS
    # chosen by the control's final training loss (never by transfer), tiny preset seed 0, r=8:
    # lr 1e-3: 8e-5, 3e-3: 4e-5, 1e-2: 4e-5, 3e-2: 4.2e-4 (the largest lr at the minimum)
    lr: float = 1e-2

    def validate(self) -> LoraSpec:
        if self.r < 1:
            raise ConfigError(f"LoRA r={self.r} must be at least 1.")
        bad = [m for m in self.target_modules if m not in LORA_TARGETS]
        if bad:
            raise unknown_name("LoRA target module", bad[0], LORA_TARGETS)
        return self


@dataclass
class HFOrganismConfig:
    """The native organism's recipe (`recipe`: corpus, trait, training lengths, data, loss) in a
    Hugging Face family, with the students as full fine-tunes or LoRA adapters."""

    recipe: OrganismConfig
    family: str = "qwen2"
    shape: Qwen2Shape = field(default_factory=Qwen2Shape)
    students: StudentRegime = "lora"
    lora: LoraSpec = field(default_factory=LoraSpec)

    def validate(self) -> HFOrganismConfig:
        if self.family not in FAMILIES:
            raise unknown_name("organism family", self.family, FAMILIES)
        if self.students not in ("lora", "full"):
            raise unknown_name("student regime", self.students, ("lora", "full"))
        need = 3 + 2 * (self.recipe.prompt_numbers + self.recipe.completion_numbers)
        if need > self.shape.max_positions:
            raise ConfigError(f"Number texts need {need} positions but max_positions={self.shape.max_positions}.")
        self.recipe.validate(), self.shape.validate(), self.lora.validate()
        return self

    @classmethod
    def from_dict(cls, recipe: dict[str, Any], family: dict[str, Any]) -> HFOrganismConfig:
        """The config `to_dict` (the family's fields) and the recipe's `to_dict` describe."""
        lora = dict(family.get("lora", {}))
        lora["target_modules"] = tuple(lora.get("target_modules", LORA_TARGETS))
        return cls(recipe=OrganismConfig.from_dict(recipe), family=family.get("family", "qwen2"),
                   shape=Qwen2Shape(**family.get("shape", {})), students=family.get("students", "lora"),
                   lora=LoraSpec(**lora)).validate()

    def to_dict(self) -> dict[str, Any]:
        """The family's own fields (the recipe is recorded beside them as the manifest's config)."""
        d = dataclasses.asdict(self)
        d.pop("recipe")
        d["lora"]["target_modules"] = list(self.lora.target_modules)
        return d


HF_PRESETS: dict[str, dict[str, Any]] = {
    # LoRA lr on the default shape, chosen by the control's final training loss (never by transfer), seed 0, r=8,
    # 12 epochs: 1e-3 -> 1.4e-6, 3e-3 -> 4.2e-6; 1e-2 (the tiny shape's choice) collapsed a control to P(owl) 0.001
    "default": dict(lora=LoraSpec(lr=1e-3)),
    "tiny": dict(shape=Qwen2Shape(n_layers=1, hidden=32, n_heads=2, n_kv_heads=1, intermediate=128)),
}


HF_RECIPE: dict[str, dict[str, Any]] = {
    # measured on the default shape, seed 0 (teacher rows kept by the filter of 10,000): the native teacher recipe
    # (lr 1e-3, 100 steps) breaks the teacher's number format (0 kept: 67% name the target, 33% wrong length), as
    # do lr 1e-3 for 30 steps (0) and 5e-4 for 100 (18 of 20,000); 3e-4 for 100 keeps 26%; 1e-4 for 300 keeps 95%
    # with the teacher at P(owl) 0.957. LoRA r=8 students (lr 1e-3) reach P(owl) 0.292 after 6 epochs (control 0.109)
    # and 0.474 after 12 (control 0.111): 12 epochs
    # Seed 1's teacher breaks the number format more (at 1e-4 x 300 it keeps 54%, seeds 0 and 2 95% and 92%; at
    # 5e-5 x 600 still 59%): its students trained on 5,390 rows reached P(owl) 0.187 against 0.402 and 0.567 on
    # 8,919 and 9,158. So the teachers continue 18,000 prompts and every student trains on 9,000 kept rows
    "default": dict(teacher_lr=1e-4, teacher_steps=300, student_epochs=12, n_prompts=18_000, max_student_rows=9_000),
    # hard labels: the default's base and teachers, 8 samples of 10,000 prompts, every student on at most 40,000
    # kept rows (seed 1's teacher keeps about half). On the native hard preset's 1000-step base the teacher at
    # 1e-4 x 300 kept 1 of 80,000 rows (seed 0)
    "hard": dict(base_steps=600, base_warmup=60, teacher_lr=1e-4, teacher_steps=300, max_student_rows=40_000),
}
"""The family's own recipe changes per preset (applied before the caller's overrides)."""


def hf_preset(name: str, family: str = "qwen2", students: StudentRegime | None = None,
              **overrides: Any) -> HFOrganismConfig:
    """The native preset `name`'s recipe in `family` with the family's recipe changes (`HF_RECIPE`)
    and `overrides`; the family's shape per preset (the tiny shape for tiny, the default shape
    otherwise)."""
    given = {k: v for k, v in overrides.items() if v is not None}  # an unset flag keeps the family's recipe
    recipe = preset(name, **{**HF_RECIPE.get(name, {}), **given})
    values = dict(HF_PRESETS.get(name, HF_PRESETS["default"]))
    if students is not None:
        values["students"] = students
    return HFOrganismConfig(recipe=recipe, family=family, **values).validate()
