"""Causal localisation: which parameter groups and which activations carry the inherited trait.

Two analyses, both scored with a `Trait` in log-odds of P(target) at the answer position of
the trait's prompts (mean P over prompts, then log-odds, as `Trait.score` does):

- **Delta patching** (`delta_patching`): the base with the student's weights in a set G of
  parameter groups (= base + ΔS restricted to G), for every single group, every layer (the
  embeddings and the final norm + unembedding count as layers of their own), and leave-one-out
  (the student with the base's weights in one group, i.e. ΔS_g removed); then a greedy set of
  groups, grown one best group at a time, until it recovers >= `recover` (80%) of the effect.
  Controls beside every number: the control student's delta in the same groups, and a random
  delta norm-matched to ΔS key by key.
- **Activation patching** (`activation_patching`): the base run on the trait prompts with one
  hook's activation replaced by the student's (student -> base, "denoising"), and the reverse
  (base -> student, "noising"), per hook over all positions and per position; the control's
  activations patched into the base give each hook's control effect.

Recovered fraction: (patched - base) / (student - base) in log-odds, defined only when the
student's effect clearly exceeds its control's (the rule is in `rules`). In the noising
direction it says how much of the effect *remains* once the hook's activation is the base's:
a low value there means the hook is necessary.

Patched weights are taken whole from the donor model (`w = student[k] if k in G else base[k]`),
so patching every group reproduces the student bit for bit and patching none the base. The
delta sweep loads each patched state into ONE working model and never rebuilds a bridge: by
default (`engine="auto"`) a `FunctionalModel` (a pure function of the clean state dict; a new
patched state is one dict update, ~3x faster than the hooked bridge per evaluation here), or
`engine="bridge"`: a working copy (`Lineage.copy_model`) whose live parameters are overwritten
in place (only the keys that changed since the last evaluation). `python -m workbench.bench
patching` times both.

The package, one job per module:
- `rules`: `PatchConfig`, the clear-effect rule, the recovered fraction, summary units.
- `patched_models`: `PatchedModels` (the working model), norm-matched random deltas, layer sets.
- `delta`: `delta_patching` and `DeltaPatchingResult`.
- `activation`: `activation_patching`, `ActivationPatchingResult`, hook caching and patched runs.
- `figures`: the plotly figures of both results.
"""

from workbench.analyses.patching.activation import (
    ActivationPatchingResult,
    activation_patching,
    cache_activations,
    patched_logits,
)
from workbench.analyses.patching.delta import DeltaPatchingResult, delta_patching
from workbench.analyses.patching.figures import activation_bars, activation_heatmap, delta_bars, delta_heatmap
from workbench.analyses.patching.patched_models import ENGINES, PatchedModels, layer_sets, norm_matched_random
from workbench.analyses.patching.rules import (
    DIRECTIONS,
    MIN_SHARE,
    PatchConfig,
    clear_rule,
    effect_is_clear,
    recovered_fraction,
)

__all__ = [
    "DIRECTIONS", "ENGINES", "MIN_SHARE", "ActivationPatchingResult", "DeltaPatchingResult", "PatchConfig",
    "PatchedModels", "activation_bars", "activation_heatmap", "activation_patching", "cache_activations",
    "clear_rule", "delta_bars", "delta_heatmap", "delta_patching", "effect_is_clear",
    "layer_sets", "norm_matched_random", "patched_logits", "recovered_fraction",
]
