"""Activation shifts: where the student's activations move the way the teacher's do.

For each hook, on the same Inputs, every model is compared with its own parent base (the
`parent` recorded in the artifact: base for teacher and students, base_x for the cross-init
student): the mean shift v_m = mean_x[a_m(x) - a_parent(x)], its norm relative to the parent's
mean activation norm, and alignments cos(v_student, v_teacher) beside the same for the control,
other-target and cross-init students (and each control beside its own teacher). Intervals are
a Poisson bootstrap over inputs (rows resampled jointly for every model, so cosines are paired);
across seeds, `aggregate_seeds` gives mean and spread with the seed as the unit.

A logit-lens view reads each shift through the parent's final norm and unembedding: which tokens
the shift promotes. LayerNorm is not linear; the view linearises it at the parent's scale,
LN(a + v) - LN(a) ~= gamma * (v - mean(v)) / sigma, with sigma the parent's mean scale at that
hook and the (small) change of sigma itself ignored. It reads a direction, not the exact logits.

cross lives in another initialisation's coordinates, so cos(v_cross, v_teacher) is a floor
(~ +-2/sqrt(d_model) for unrelated directions), not a like-for-like comparison.

>>> import tempfile
>>> from workbench.capture.capture import capture
>>> from workbench.core.examples import tiny_inputs, tiny_lineage
>>> lin, inputs = tiny_lineage(), tiny_inputs()
>>> out = tempfile.TemporaryDirectory()
>>> store = capture(lin, inputs, residual_hooks(1), positions="mean", out_dir=out.name, progress=False)
>>> result = compare(lin, store, CompareConfig(n_bootstrap=20))   # trait=... adds the logit lens
>>> result.pairs
['student~teacher']
>>> result.save(f"{out.name}/compare").name
'compare.json'
>>> out.cleanup()
"""

from __future__ import annotations

from workbench.analyses.activation_shifts import DEFAULT_ALIGNMENTS, SHIFT_ORDER, CompareConfig, compare, row_vectors
from workbench.analyses.logit_lens import logit_lens, parent_scales
from workbench.analyses.shift_results import ActivationComparison, SeedAggregate, aggregate_seeds, pair_label
from workbench.capture.hooks import residual_hooks

__all__ = [  # the analysis lives in activation_shifts, shift_results, logit_lens, shift_figures; re-exported here
    "DEFAULT_ALIGNMENTS", "SHIFT_ORDER", "ActivationComparison", "CompareConfig", "SeedAggregate", "aggregate_seeds",
    "compare", "logit_lens", "pair_label", "parent_scales", "residual_hooks", "row_vectors",
]
