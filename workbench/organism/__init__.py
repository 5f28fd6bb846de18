"""The built-in model organism: a source of models and data that reproduces subliminal transfer
on a CPU in minutes. No analysis imports it; it hands the analyses a `Lineage`, `Inputs` and its
own `Trait`.

- `build_organism(preset("tiny"), seeds, out_dir)` builds (or reuses) base, teachers, filtered
  number data and students; `python -m workbench.organism` does the same from a shell.
- `load_seed(seed_dir)` loads one built seed: `.lineage`, `.trait`, `.tokenizer`, `.data(source)`,
  `.channel_ids` and `.retrainer()` (the seed's recipe for retraining a student on kept rows).
- `OrganismChannelSource(seed)` retrains a seed's student with a loss mask or frozen layers (the
  source the channel tests and the screening leaderboard retrain through).
- `shared_organism_dir()` finds the organism the notebooks and tests share.
- `build_hf_seed(hf_preset("tiny"), seed, out_dir)` builds the same recipe in a Hugging Face
  family (Qwen2) with LoRA or full students; `sweep_organism` retrains students and controls
  under training regimes (`Regime`: full or LoRA rank r, with an optimiser; `python -m workbench.sweep`).
- `workbench.organism.digits` is the MNIST-style auxiliary-logit organism.
"""

from workbench.organism.build import build_organism, load_manifests, shared_organism_dir
from workbench.organism.channel_source import OrganismChannelSource
from workbench.organism.config import PRESETS, OrganismConfig, preset
from workbench.organism.figures import trait_matrix_figure, trait_rates_figure
from workbench.organism.hf_family.build import build_hf_organism, build_hf_seed
from workbench.organism.hf_family.config import HFOrganismConfig, LoraSpec, Qwen2Shape, hf_preset
from workbench.organism.load import OrganismSeed, load_lineage, load_seed, read_manifest
from workbench.organism.regimes import Regime, train_under, weight_cosines
from workbench.organism.sweep import CellStore, SweepConfig, regimes_of, sweep_organism
from workbench.organism.sweep_contrasts import contrasts as sweep_contrasts
from workbench.organism.sweep_contrasts import format_contrasts
from workbench.organism.sweep_summary import curves_figure
from workbench.organism.sweep_summary import format_table as sweep_table
from workbench.organism.sweep_summary import summarize as summarize_sweep
from workbench.organism.sweep_summary import sweep_figure
from workbench.organism.trait import category_traits, check_target, organism_trait, preference_inputs

__all__ = [
    "build_organism", "load_manifests", "shared_organism_dir", "PRESETS", "OrganismConfig", "preset",
    "trait_matrix_figure", "trait_rates_figure", "OrganismSeed", "load_lineage", "load_seed", "read_manifest",
    "category_traits", "check_target", "organism_trait", "preference_inputs", "OrganismChannelSource",
    "build_hf_organism", "build_hf_seed", "HFOrganismConfig", "LoraSpec", "Qwen2Shape", "hf_preset",
    "Regime", "train_under", "weight_cosines", "CellStore", "SweepConfig", "regimes_of", "sweep_organism",
    "sweep_table", "summarize_sweep", "sweep_figure", "curves_figure", "sweep_contrasts", "format_contrasts",
]
