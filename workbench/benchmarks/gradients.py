"""Benchmark `gradients`: per-example alignment scores a_i = -<grad L_i, d> for a batch, on the
default organism's shape (2 layers, d_model 64) built natively with random weights.

Cases per batch size (32 and 256; quick: 8 and 32):
- loop_bridge: the naive reference a user writes first: per example, a forward of the hooked
  TransformerBridge, backward, and the dot product with d (the baseline of the ratios),
- loop: the same loop through the organism's fused functional model (a faster loop, shown so
  nobody credits jvp with what a leaner per-example model would give anyway),
- jvp: the workbench default, one hand-written forward-mode pass of the per-token loss matrix
  (workbench.engines.tangent, via workbench.engines.per_example.alignment_scores),
- jvp_func: the same tangents by `torch.func.jvp` through the functional model,
- jvp_bridge: `torch.func.jvp` through `functional_call` on the TransformerLens bridge (what any
  non-native model gets),
- vmap_grad: per-example gradients (vmap of grad) dotted per group, with gradient norms
  (workbench.analyses.group_scores: what per-group scores and cosines cost).
Cases run in interleaved rounds (`bench.time_interleaved`). `extra` records the agreement with
the loop (max error relative to the largest value), the growth of resident memory during one
call, and the median of per-round ratios.
"""

from __future__ import annotations

import torch

from workbench.benchmarks.harness import Case, PeakRSS, time_interleaved


def _setup(device: torch.device):
    import numpy as np

    from workbench.analyses.param_directions import random_direction
    from workbench.core.inputs import Inputs
    from workbench.core.lineage import Lineage
    from workbench.core.models import boot_native
    from workbench.engines.alignment_model import AlignmentModel
    from workbench.organism.config import OrganismConfig
    from workbench.organism.corpus import number_tokens, sample_numbers
    from workbench.organism.tokenizer import Tokenizer

    tok = Tokenizer.default()
    cfg = OrganismConfig()
    base = boot_native(cfg.model.native_config(len(tok), seed=0), device=device)
    lin = Lineage.from_models({"base": base}, tokenizer=tok)
    model = AlignmentModel(lin)
    direction = random_direction(model.params, seed=1, scale=1.0)
    seqs = number_tokens(tok, sample_numbers(np.random.default_rng(0), 256, cfg.prompt_numbers + cfg.completion_numbers),
                         cfg.prompt_numbers)
    p = 3 + 2 * cfg.prompt_numbers
    inputs = Inputs.from_sequences(seqs[:, :p].tolist(), seqs[:, p:].tolist(), sources="bench", pad_id=tok.pad_id)
    return lin, model, direction, inputs


def _loop(lin, direction, inputs) -> torch.Tensor:
    """Naive reference: one backward per row through the organism's fused functional model."""
    import torch.nn.functional as F

    from workbench.engines.functional import FunctionalModel

    fm = FunctionalModel.from_bridge(lin["base"], trainable=True)
    keys = [k for k in direction if k in fm.w]
    mask = inputs.next_token_mask().to(fm.w["embed.weight"].dtype)
    tokens = inputs.tokens.to(fm.w["embed.weight"].device)
    mask = mask.to(tokens.device)
    out = []
    for i in range(len(inputs)):
        logits = fm(tokens[i : i + 1])[0, :-1]
        loss = (F.cross_entropy(logits, tokens[i, 1:], reduction="none") * mask[i]).sum()
        grads = torch.autograd.grad(loss, [fm.w[k] for k in keys])
        out.append(-sum((g * direction[k]).sum() for g, k in zip(grads, keys)))
    return torch.stack(out).detach().cpu()


def _loop_bridge(lin, direction, inputs) -> torch.Tensor:
    """Naive reference: one forward + backward of the hooked bridge per row."""
    import torch.nn.functional as F

    params = lin.params("base")
    keys = [k for k in direction if k in params]
    mask = inputs.next_token_mask().float()
    out = []
    for i in range(len(inputs)):
        logits = lin["base"](inputs.tokens[i : i + 1])[0, :-1]
        loss = (F.cross_entropy(logits, inputs.tokens[i, 1:], reduction="none") * mask[i]).sum()
        grads = torch.autograd.grad(loss, [params[k] for k in keys])
        out.append(-sum((g * direction[k]).sum() for g, k in zip(grads, keys)))
    return torch.stack(out).detach().cpu()


def _untimed_call(fn, ref: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
    """One untimed call: its value, and its max error against `ref` (relative to the largest
    value) with the growth of resident memory while it runs."""
    with PeakRSS() as rss:
        start = rss.peak
        value = fn()
    err = None if ref is None else float((value - ref).abs().max() / ref.abs().max())
    return value, {"max_rel_err_vs_loop": err, "rss_increase_mb": (rss.peak - start) / 2**20}


def run(device: torch.device, quick: bool = False) -> list[Case]:
    """jvp vs per-example loop vs vmap(grad) at two batch sizes (see module doc)."""

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per case: ratios are stable on a shared CPU
    try:
        return _run(device, quick)
    finally:
        torch.set_num_threads(threads)


def _run(device: torch.device, quick: bool) -> list[Case]:
    from workbench.analyses.group_scores import group_scores
    from workbench.engines.alignment_model import AlignmentModel
    from workbench.engines.objective import Objective
    from workbench.engines.per_example import alignment_scores

    lin, model, direction, inputs = _setup(device)
    bridge_model = AlignmentModel(lin, backend="bridge")
    hard = Objective("hard")
    cases: list[Case] = []
    runs = 2 if quick else 7
    for size in ((8, 32) if quick else (32, 256)):
        x = inputs.select(list(range(size)))
        fns = {
            "loop_bridge": lambda: _loop_bridge(lin, direction, x),
            "loop": lambda: _loop(lin, direction, x),
            "jvp": lambda: alignment_scores(model, x, direction, hard, batch_size=size).total,
            "jvp_func": lambda: alignment_scores(model, x, direction, hard, batch_size=size, method="func").total,
            "jvp_bridge": lambda: alignment_scores(bridge_model, x, direction, hard, batch_size=size).total,
            "vmap_grad": lambda: group_scores(model, x, {"d": direction}, hard, batch_size=min(size, 64)).total("d"),
        }
        ref, loop_info = _untimed_call(fns["loop_bridge"], None)  # the reference, also the loop's memory figure
        agreement = {name: _untimed_call(fn, ref)[1] for name, fn in fns.items() if name != "loop_bridge"}
        agreement["loop_bridge"] = loop_info
        timed = time_interleaved({f"{k}/batch{size}": f for k, f in fns.items()}, baseline=f"loop_bridge/batch{size}",
                                 runs=runs, warmup=1, device=device)
        for case, name in zip(timed, fns):
            case.extra = {**agreement[name], **(case.extra or {}), "threads": torch.get_num_threads()}
        cases += timed
    return cases
