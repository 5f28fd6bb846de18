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
>>> from workbench.core.inputs import Inputs
>>> from workbench.core.lineage import Lineage
>>> from workbench.core.models import boot_native
>>> cfg = dict(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16, d_vocab=10, n_ctx=4,
...            act_fn="gelu", normalization_type="LN", seed=0)
>>> from workbench.capture.capture import capture
>>> lin = Lineage.from_models({"base": boot_native(cfg), "teacher": boot_native(dict(cfg, seed=1)),
...                            "student": boot_native(dict(cfg, seed=2))})
>>> inputs = Inputs.from_sequences([[1, 2], [3]], [[4], [5, 6]], sources="teacher", pad_id=0)
>>> out = tempfile.TemporaryDirectory()
>>> store = capture(lin, inputs, residual_hooks(1), positions="mean", out_dir=out.name, progress=False)
>>> result = compare(store, lin, CompareConfig(n_bootstrap=20))   # trait=... adds the logit lens
>>> result.pairs
['student~teacher']
>>> result.save(f"{out.name}/compare").name
'compare.json'
>>> out.cleanup()
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.analyses.activation_shifts import DEFAULT_ALIGNMENTS, SHIFT_ORDER, CompareConfig, compare, row_vectors
from workbench.analyses.logit_lens import logit_lens, parent_scales
from workbench.analyses.shift_results import ActivationComparison, SeedAggregate, aggregate_seeds, pair_label
from workbench.core.errors import WorkbenchError

__all__ = [  # the analysis lives in activation_shifts, shift_results, logit_lens, shift_figures; re-exported here
    "DEFAULT_ALIGNMENTS", "SHIFT_ORDER", "ActivationComparison", "CompareConfig", "SeedAggregate", "aggregate_seeds",
    "compare", "logit_lens", "main", "pair_label", "parent_scales", "parser", "residual_hooks", "row_vectors",
]


def residual_hooks(n_layers: int) -> list[str]:
    """The residual stream in depth order: before block 0, then mid and post of every block."""
    hooks = ["blocks.0.hook_resid_pre"]
    for i in range(n_layers):
        hooks += [f"blocks.{i}.hook_resid_mid", f"blocks.{i}.hook_resid_post"]
    return hooks


# --------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workbench.compare", description=(
        "Capture the residual stream of an organism's models and compare each model's activation shift "
        "against its parent: cos(v_student, v_teacher) beside the control, other-target and cross-init students."))
    p.add_argument("--organism", required=True, help="organism directory holding seed{N}/ subdirectories")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to compare (default: 0)")
    p.add_argument("--data", default="teacher", help="teacher (distillation data, default) | base | prompts")
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows of the data")
    p.add_argument("--bootstrap", type=int, default=500, help="bootstrap replicates over inputs (default 500)")
    p.add_argument("--out", default="artifacts/compare", help="output directory (default: artifacts/compare)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from workbench.cli.organism_runs import compare_organism_seed
    from workbench.core.models import resolve_device
    from workbench.results.figures import write_result_figures

    try:
        device = resolve_device(args.device)
        root, out = Path(args.organism), Path(args.out) / args.data
        results = []
        for seed in args.seeds:
            seed_dir = root / f"seed{seed}"
            cfg = CompareConfig(n_bootstrap=args.bootstrap)
            r = compare_organism_seed(seed_dir, out / f"seed{seed}", data=args.data, limit=args.limit, config=cfg,
                                      device=device, progress=not args.quiet and sys.stderr.isatty())
            write_result_figures(r, out / f"seed{seed}")
            results.append(r)
        agg = aggregate_seeds(results)
        agg.save(out)
        write_result_figures(agg, out)
        print(agg.table([p for p in agg.values if p.endswith("~teacher")]))
        print(f"wrote {out}")
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
