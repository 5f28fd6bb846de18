"""Benchmark `probes`: the all-hook probe sweep, batched torch probes vs a scikit-learn loop.

Each side runs the job's sweep: the logistic probe on the real labels and on
`shuffle_repeats` permutations (the shuffled control), per hook and fold. Synthetic activations shaped like a capture of the default organism (residual-width and
MLP-width hooks, one pooled vector per sequence, two sequences per prompt) with a weak signal
at every hook (held-out AUROC ~0.58-0.68, like the organisms' data-source probes). Both sides fit the same L2 logistic probe on training-fold-standardised
features with the same prompt-grouped folds; `extra` records the largest AUROC difference.
"""

from __future__ import annotations

import torch

from workbench.benchmarks.harness import Case, time_case
from workbench.analyses.probes import ProbeConfig, cross_validate


def synthetic_sweep(n: int, widths: dict[str, int], seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2 == 0
    feats = {}
    for i, (hook, d) in enumerate(widths.items()):
        direction = torch.randn(d, generator=g)
        shift = 0.3 + 0.03 * i  # class-mean distance in noise sds: AUROC ~0.58-0.68, as measured on the organisms
        feats[hook] = torch.randn(n, d, generator=g) + shift * y[:, None].float() * direction / direction.norm()
    return feats, y, torch.arange(n) // 2


def sklearn_sweep(feats: dict[str, torch.Tensor], y: torch.Tensor, folds: torch.Tensor, cfg: ProbeConfig,
                  shuffled: list[torch.Tensor] = ()) -> dict[str, list[float]]:
    """The reference loop: StandardScaler + LogisticRegression per hook and fold (then per
    shuffled label set, as the job's control); returns the real labels' AUROCs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    out = {}
    for hook, x in feats.items():
        x, yy = x.cpu().numpy(), y.numpy()
        aucs = []
        for f in range(cfg.n_folds):
            tr, te = (folds != f).numpy(), (folds == f).numpy()
            scaler = StandardScaler().fit(x[tr])
            lr = LogisticRegression(C=cfg.C, max_iter=1000).fit(scaler.transform(x[tr]), yy[tr])
            aucs.append(roc_auc_score(yy[te], lr.decision_function(scaler.transform(x[te]))))
            for ys in shuffled:
                ys = ys.numpy()
                lr = LogisticRegression(C=cfg.C, max_iter=1000).fit(scaler.transform(x[tr]), ys[tr])
                roc_auc_score(ys[te], lr.decision_function(scaler.transform(x[te])))
        out[hook] = aucs
    return out


def run(device: torch.device, quick: bool = False) -> list[Case]:
    n = 1000 if quick else 8000
    n_layers = 1 if quick else 2
    widths = {"hook_embed": 64}
    for layer in range(n_layers):
        for name in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out"):
            widths[f"blocks.{layer}.{name}"] = 64
        widths[f"blocks.{layer}.mlp.hook_post"] = 256
    feats, y, groups = synthetic_sweep(n, widths)
    cfg = ProbeConfig(shuffle_repeats=2 if quick else 5)
    feats_dev = {h: x.to(device) for h, x in feats.items()}
    runs = 2 if quick else 3

    def torch_sweep():
        return cross_validate(feats_dev, y, groups, cfg, device=device, methods=("logistic",))

    cv = torch_sweep()
    ref = sklearn_sweep(feats, y, cv.folds, cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # the permutations cross_validate uses
    shuffled = [y[torch.randperm(n, generator=gen)] for _ in range(cfg.shuffle_repeats)]
    diff = max(abs(float(cv.auroc["logistic"][h][f]) - ref[h][f]) for h in feats for f in range(cfg.n_folds))
    mean_auc = sum(sum(v) for v in ref.values()) / (len(ref) * cfg.n_folds)
    base = time_case("sklearn loop", lambda: sklearn_sweep(feats, y, cv.folds, cfg, shuffled), runs=runs, warmup=0)
    fast = time_case("torch batched", torch_sweep, runs=runs, warmup=1, device=device, baseline="sklearn loop")
    shape = {"n": n, "hooks": len(widths), "folds": cfg.n_folds, "shuffled_repeats": cfg.shuffle_repeats}
    base.extra = {**shape, "mean_auroc": mean_auc}
    fast.extra = {**shape, "max_auroc_diff_vs_sklearn": diff, "speedup": base.median_s / fast.median_s}
    return [base, fast]
