"""Linear probes on activations, batched over every hook at once, with their controls.

Per hook the features are one vector per sequence (e.g. the mean of a hook's activations over
the continuation positions) and the label is binary (e.g. teacher-written vs base-written).
Two probes: L2 logistic regression (bound optimisation, all hooks, folds and label sets in one batch) and
closed-form ridge. Both are cross-validated with folds grouped by prompt (teacher and base
continue the same prompts, so a prompt never sits in train and test at once) and scored by
AUROC and accuracy on the held-out fold.

The probes are defined exactly as scikit-learn's on features standardised with the training
fold's mean and standard deviation (`StandardScaler` then `LogisticRegression(C)` / `Ridge`):
the standardisation is an affine reparametrisation, so it is folded into the penalty and the
fit runs on the raw features for all folds at once.

Controls beside every probe: the same probe on shuffled labels (chance, with its spread), a
bag-of-tokens probe on the continuation tokens' counts (what the text alone gives away), and
a likelihood-ratio oracle score log p_teacher(x) - log p_base(x) (what a perfect reader of the
two models' distributions gets).

>>> g = torch.Generator().manual_seed(0)
>>> y = torch.arange(400) % 2 == 1
>>> x = torch.randn(400, 3, generator=g) + 3.0 * y[:, None]
>>> cv = cross_validate({"h": x}, y, groups=torch.arange(400) // 2, config=ProbeConfig(shuffle_repeats=1))
>>> round(cv.auroc["logistic"]["h"].mean().item(), 2)
1.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.core.errors import DataError

METHODS = ("logistic", "ridge")
"""The fitted probes; controls are `shuffled` (logistic on permuted labels), `bag_of_tokens`, `oracle`."""


@dataclass
class ProbeConfig:
    """How probes are fitted and cross-validated."""

    n_folds: int = 5  # cross-validation folds, grouped by prompt
    C: float = 1.0  # inverse L2 strength of the logistic probe (scikit-learn's C, on standardised features)
    ridge_alpha: float = 1.0  # L2 strength of the ridge probe (scikit-learn's alpha, on standardised features)
    max_iter: int = 200  # solver steps at most (weak signals converge in ~10; separable data takes more)
    tol: float = 1e-6  # stop when every fit's predicted objective decrease is below tol * n_train
    shuffle_repeats: int = 5  # label permutations for the shuffled-label control
    seed: int = 0  # folds and permutations

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- folds and scores


def grouped_folds(groups: Sequence[int] | Tensor, n_folds: int, seed: int = 0) -> Int[Tensor, " n"]:
    """Fold index per row; rows of one group share a fold, folds are balanced by row count.

    Groups are shuffled (seeded), then placed largest first into the fold with the fewest rows.
    """
    groups = torch.as_tensor(groups).long().cpu()
    unique, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    if n_folds < 2:
        raise DataError(f"n_folds={n_folds}; cross-validation needs at least 2 folds.")
    if len(unique) < n_folds:
        raise DataError(f"Only {len(unique)} distinct prompt groups for {n_folds} folds. Use more data or fewer folds.")
    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed))
    order = order[torch.argsort(counts[order], descending=True, stable=True)]
    fold_of_group = torch.empty(len(unique), dtype=torch.long)
    load = [0] * n_folds
    for g in order.tolist():
        f = min(range(n_folds), key=load.__getitem__)
        fold_of_group[g] = f
        load[f] += int(counts[g])
    return fold_of_group[inverse]


def auroc(scores: Float[Tensor, "*batch n"], labels: Bool[Tensor, " n"]) -> Float[Tensor, "*batch"]:
    """Area under the ROC curve of each row of `scores` (Mann-Whitney, ties count one half)."""
    labels = labels.to(scores.device).bool()
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError(f"AUROC needs both classes; got {n_pos} positive and {n_neg} negative rows.")
    s = scores.double().contiguous()
    sorted_s, _ = torch.sort(s, dim=-1)
    left = torch.searchsorted(sorted_s, s, right=False)
    right = torch.searchsorted(sorted_s, s, right=True)
    ranks = (left + right + 1).double() / 2  # 1-based average ranks
    rank_sum = (ranks * labels.double()).sum(-1)
    return ((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).to(scores.dtype if scores.is_floating_point() else torch.float32)


# --------------------------------------------------------------------------- batched fits


def _augment(x: Float[Tensor, "hooks n d"]) -> Float[Tensor, "hooks n d1"]:
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def _standardise(x: Float[Tensor, "hooks n d"]) -> Float[Tensor, "hooks n d"]:
    """Centre and scale each feature over all rows (conditioning only; label-free)."""
    sd = x.std(dim=1, keepdim=True)
    return (x - x.mean(dim=1, keepdim=True)) / torch.where(sd > 0, sd, torch.ones_like(sd))


def _fold_penalty(x: Float[Tensor, "hooks n d"], train: Bool[Tensor, "folds n"], strength: float) -> Float[Tensor, "folds hooks d1"]:
    """Diagonal penalty that equals `strength * ||w_std||^2` on training-fold-standardised features."""
    t = train.to(x.dtype)
    n = t.sum(-1)[:, None, None]
    mean = torch.einsum("fn,hnd->fhd", t, x) / n
    var = (torch.einsum("fn,hnd->fhd", t, x * x) / n - mean**2).clamp(min=0)  # population variance, as StandardScaler
    var = torch.where(var > 1e-12, var, torch.ones_like(var))  # constant features: scale 1, as StandardScaler
    return torch.cat([strength * var, torch.zeros_like(var[..., :1])], dim=-1)


def fit_logistic(
    x: Float[Tensor, "hooks n d"],
    y: Bool[Tensor, "*labelsets n"],
    train: Bool[Tensor, "folds n"],
    C: float = 1.0,
    max_iter: int = 200,
    tol: float = 1e-6,
) -> Float[Tensor, "*labelsets folds hooks d1"]:
    """L2 logistic regression for every (label set, fold, hook) at once; returns [w, b] per fit.

    Minimises sum over training rows of the log-loss + ||w_std||^2 / (2C), with w_std the
    weights on training-fold-standardised features (scikit-learn's objective). The solver is
    Boehning's bound optimisation: the Hessian is bounded by B = X'X/4 + penalty, which
    depends on the features and fold only, so it is factored once and shared by every label
    set (the shuffled-label repeats cost gradients only); each step is monotone, and with weak
    signals (p near 1/2, the usual case) B is nearly the Hessian, so few steps are needed.
    Stops when every fit's predicted decrease g'B^-1g/2 is below `tol` per training row.
    """
    single = y.ndim == 1
    ys = (y[None] if single else y).to(x.dtype)  # [r, n]
    xa = _augment(x)
    t = train.to(x.dtype)
    pen = _fold_penalty(x, train, 1.0 / C)
    # Gram of each fold's training rows: all rows minus the fold's held-out rows (one pass over the data)
    gram_all = torch.bmm(xa.transpose(1, 2), xa).double()
    held_out = [xa[:, ~train[f]] for f in range(t.shape[0])]
    gram = torch.stack([gram_all - torch.bmm(h.transpose(1, 2), h).double() for h in held_out])
    eye = torch.eye(xa.shape[-1], dtype=torch.float64, device=x.device)
    chol = torch.linalg.cholesky(gram / 4 + torch.diag_embed(pen.double()) + 1e-9 * eye)  # [f, h, d1, d1]
    # Internally every fit is a column k = (label set, fold) of [hooks, ., k] matrices: one GEMM per hook.
    r, f, h, d1 = ys.shape[0], t.shape[0], xa.shape[0], xa.shape[-1]
    k = r * f
    xt = xa.transpose(1, 2).contiguous()
    y_k = ys[:, None, :].expand(r, f, -1).reshape(k, -1).T[None]  # [1, n, k]
    t_k = t[None].expand(r, f, -1).reshape(k, -1).T[None]  # [1, n, k]
    pen_k = pen.double()[None].expand(r, f, h, d1).reshape(k, h, d1).permute(1, 2, 0)  # [h, d1, k]
    chol_k = chol[None].expand(r, f, h, d1, d1).reshape(k, h, d1, d1).transpose(0, 1)  # [h, k, d1, d1]
    theta = torch.zeros(h, d1, k, dtype=torch.float64, device=x.device)
    z = torch.zeros(h, xa.shape[1], k, dtype=x.dtype, device=x.device)
    n_train = t_k[0].sum(0).double()  # [k]
    # B overestimates the curvature where p is far from 1/2: try longer steps along B^-1 g too
    scales = (1.0, 2.0, 4.0, 8.0, 16.0)
    for _ in range(max_iter):
        grad = torch.bmm(xt, (torch.sigmoid(z) - y_k) * t_k).double() + pen_k * theta
        step = torch.cholesky_solve(grad.transpose(1, 2)[..., None], chol_k)[..., 0].transpose(1, 2)  # [h, d1, k]
        if bool(((grad * step).sum(1) / 2 <= tol * n_train).all()):
            break
        z_step = torch.bmm(xa, step.to(x.dtype))
        # objective change of each trial step, element-wise in the working dtype (small terms, exact enough)
        base_sp = torch.nn.functional.softplus(z)
        trial = torch.stack([
            ((torch.nn.functional.softplus(z - a * z_step) - base_sp + a * y_k * z_step) * t_k).sum(1).double()
            + 0.5 * (pen_k * ((theta - a * step) ** 2 - theta**2)).sum(1)
            for a in scales
        ])  # [scales, h, k]
        best = torch.tensor(scales, dtype=torch.float64, device=x.device)[trial.argmin(0)][:, None, :]  # [h, 1, k]
        theta = theta - best * step
        z = z - best.to(x.dtype) * z_step
    theta = theta.permute(2, 0, 1).reshape(r, f, h, d1)
    theta = theta.to(x.dtype)
    return theta[0] if single else theta


def fit_ridge(
    x: Float[Tensor, "hooks n d"], y: Bool[Tensor, " n"], train: Bool[Tensor, "folds n"], alpha: float = 1.0
) -> Float[Tensor, "folds hooks d1"]:
    """Closed-form ridge on 0/1 targets for every (fold, hook): ||Xw + b - y||^2 + alpha ||w_std||^2."""
    xa = _augment(x)
    t = train.to(x.dtype)
    pen = _fold_penalty(x, train, alpha)
    gram = torch.matmul((xa[None] * t[:, None, :, None]).transpose(-1, -2), xa[None]).double()
    rhs = torch.einsum("hnd,fn->fhd", xa, t * y.to(x.dtype)).double()
    eye = torch.eye(xa.shape[-1], dtype=torch.float64, device=x.device)
    return torch.linalg.solve(gram + torch.diag_embed(pen.double()) + 1e-9 * eye, rhs[..., None])[..., 0].to(x.dtype)


def decision(x: Float[Tensor, "hooks n d"], theta: Float[Tensor, "folds hooks d1"]) -> Float[Tensor, "folds hooks n"]:
    """Probe scores x.w + b of every fit on every row."""
    return torch.einsum("hnd,fhd->fhn", _augment(x), theta)


# --------------------------------------------------------------------------- cross-validation


@dataclass
class CVScores:
    """Held-out scores per fold: `auroc[method][hook]` and `accuracy[method][hook]` are [folds]
    tensors; `shuffled[hook]` is [repeats, folds] (logistic probe on permuted labels)."""

    hooks: list[str]
    auroc: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    accuracy: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    shuffled: dict[str, Tensor] = field(default_factory=dict)
    n: int = 0
    n_pos: int = 0
    folds: Tensor | None = None


def _check(features: Mapping[str, Tensor], labels: Tensor, groups: Tensor) -> None:
    if not features:
        raise DataError("No features to probe: pass at least one hook's activations.")
    n = labels.shape[0]
    for hook, f in features.items():
        if f.ndim != 2 or f.shape[0] != n:
            raise DataError(f"Features of {hook!r} have shape {tuple(f.shape)}; expected [{n}, d] (one row per label).")
        if not bool(torch.isfinite(f).all()):
            raise DataError(f"Features of {hook!r} hold NaN or inf values. Check the capture (dtype overflow?).")
    if groups.shape[0] != n:
        raise DataError(f"{groups.shape[0]} groups for {n} labels; give one prompt id per row.")
    if labels.all() or not labels.any():
        raise DataError("Labels hold one class only; a probe needs both (e.g. teacher and base rows).")


def _per_fold(scores: Float[Tensor, "folds hooks n"], y: Bool[Tensor, " n"], folds: Tensor, threshold: float
              ) -> tuple[Float[Tensor, "folds hooks"], Float[Tensor, "folds hooks"]]:
    aucs, accs = [], []
    for f in range(scores.shape[0]):
        test = folds == f
        s, yt = scores[f][:, test], y[test]
        aucs.append(auroc(s, yt))
        accs.append(((s > threshold) == yt).float().mean(-1))
    return torch.stack(aucs), torch.stack(accs)


def cross_validate(
    features: Mapping[str, Float[Tensor, "n d"]],
    labels: Bool[Tensor, " n"] | Sequence[bool],
    groups: Int[Tensor, " n"] | Sequence[int],
    config: ProbeConfig | None = None,
    device: str | torch.device | None = None,
    methods: Sequence[str] = METHODS,
) -> CVScores:
    """Fit and score logistic and ridge probes (and the shuffled control) for every hook.

    Hooks of equal width are fitted in one batch; features are cast to float32 on `device`
    (default: the features' device).
    """
    config = config or ProbeConfig()
    labels = torch.as_tensor(labels).bool().cpu()
    groups = torch.as_tensor(groups).long().cpu()
    _check(features, labels, groups)
    for m in methods:
        if m not in METHODS:
            raise DataError(f"Unknown probe method {m!r}; use one of {METHODS}.")
    device = torch.device(device) if device is not None else next(iter(features.values())).device
    folds = grouped_folds(groups, config.n_folds, config.seed)
    train = torch.stack([folds != f for f in range(config.n_folds)]).to(device)
    y = labels.to(device)
    folds_d = folds.to(device)
    gen = torch.Generator().manual_seed(config.seed + 1)
    perms = [torch.randperm(len(labels), generator=gen) for _ in range(config.shuffle_repeats)]
    out = CVScores(hooks=list(features), n=len(labels), n_pos=int(labels.sum()), folds=folds)
    by_width: dict[int, list[str]] = {}
    for hook, f in features.items():
        by_width.setdefault(f.shape[1], []).append(hook)
    for hooks in by_width.values():
        x = _standardise(torch.stack([features[h].to(device=device, dtype=torch.float32) for h in hooks]))
        for method in methods:
            if method == "logistic":
                theta = fit_logistic(x, y, train, config.C, config.max_iter, config.tol)
                threshold = 0.0
            else:
                theta = fit_ridge(x, y, train, config.ridge_alpha)
                threshold = 0.5
            auc, acc = _per_fold(decision(x, theta), y, folds_d, threshold)
            for i, h in enumerate(hooks):
                out.auroc.setdefault(method, {})[h] = auc[:, i].cpu()
                out.accuracy.setdefault(method, {})[h] = acc[:, i].cpu()
        shuffled = []
        if perms:
            ys = torch.stack([y[perm.to(device)] for perm in perms])
            thetas = fit_logistic(x, ys, train, config.C, config.max_iter, config.tol)
            shuffled = [_per_fold(decision(x, th), yy, folds_d, 0.0)[0] for th, yy in zip(thetas, ys)]
        for i, h in enumerate(hooks):
            out.shuffled[h] = torch.stack(shuffled)[:, :, i].cpu() if shuffled else torch.empty(0, config.n_folds)
    return out


def score_auroc(scores: Float[Tensor, " n"], labels: Bool[Tensor, " n"], folds: Int[Tensor, " n"]) -> Float[Tensor, " folds"]:
    """AUROC of a fixed score (no fitting: an oracle or a direction projection) on each fold."""
    labels = torch.as_tensor(labels).bool()
    return torch.stack([auroc(scores[folds == f].float(), labels[folds == f]) for f in range(int(folds.max()) + 1)])


# --------------------------------------------------------------------------- features and controls


def pool_positions(acts: Float[Tensor, "n pos d"], mask: Bool[Tensor, "n pos"]) -> Float[Tensor, "n d"]:
    """Mean of each row's activations over the positions that count."""
    m = mask.to(acts.dtype)
    count = m.sum(1, keepdim=True)
    if bool((count == 0).any()):
        raise DataError("A row has no counted position to pool over; check the positions mask.")
    return torch.einsum("npd,np->nd", acts, m) / count


def token_counts(tokens: Int[Tensor, "n pos"], mask: Bool[Tensor, "n pos"], d_vocab: int) -> Float[Tensor, "n vocab"]:
    """Bag of tokens: how often each vocabulary token occurs at the counted positions of each row."""
    counts = torch.zeros(tokens.shape[0], d_vocab, dtype=torch.float32, device=tokens.device)
    counts.scatter_add_(1, tokens.clamp(0, d_vocab - 1), mask.to(torch.float32))
    return counts


def sequence_log_probs(logits: Float[Tensor, "n pos vocab"], tokens: Int[Tensor, "n pos"],
                       mask: Bool[Tensor, "n pos"]) -> Float[Tensor, " n"]:
    """Sum over counted positions t of log p(token_t | tokens_<t) (logits at t-1 predict t)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, tokens[:, 1:, None])[..., 0]
    return (picked * mask[:, 1:].to(picked.dtype)).sum(-1)


def summarise(values: Tensor) -> tuple[float, float]:
    """Mean and standard deviation (0 for a single value)."""
    v = values.double().flatten()
    return float(v.mean()), float(v.std()) if v.numel() > 1 else 0.0


def nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


# --------------------------------------------------------------------------- probe applied across models


@dataclass
class TransferScores:
    """A probe fitted on `pos` vs `neg` rows (e.g. teacher vs base activations), applied to the
    held-out prompts of other models: `teacher_prob[model][hook]` is the mean P(pos) of its rows
    and `auroc_vs_neg[model][hook]` separates its rows from the neg model's on the same prompts."""

    hooks: list[str]
    teacher_prob: dict[str, dict[str, float]] = field(default_factory=dict)
    auroc_vs_neg: dict[str, dict[str, float]] = field(default_factory=dict)
    n_test: int = 0


def transfer_probe(
    pos: Mapping[str, Float[Tensor, "n d"]],
    neg: Mapping[str, Float[Tensor, "n d"]],
    groups: Int[Tensor, " n"] | Sequence[int],
    apply: Mapping[str, Mapping[str, Float[Tensor, "n d"]]],
    config: ProbeConfig | None = None,
    device: str | torch.device | None = None,
    test_fold: int = 0,
) -> TransferScores:
    """Fit a logistic probe pos-vs-neg on the training prompts, apply it to every model in `apply`.

    `pos`, `neg` and every `apply[model]` hold one row per input (the same inputs, read by
    different models), so the held-out prompts are held out for all of them.
    """
    config = config or ProbeConfig()
    groups = torch.as_tensor(groups).long().cpu()
    folds = grouped_folds(groups, config.n_folds, config.seed)
    test = folds == test_fold
    n = len(groups)
    device = torch.device(device) if device is not None else next(iter(pos.values())).device
    out = TransferScores(hooks=list(pos), n_test=int(test.sum()))
    y = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)]).to(device)
    train = torch.cat([~test, ~test])[None].to(device)
    test_d = test.to(device)
    by_width: dict[int, list[str]] = {}
    for hook, f in pos.items():
        if f.shape[0] != n or neg[hook].shape != f.shape:
            raise DataError(f"Rows of {hook!r} differ between the two models or from the {n} groups.")
        by_width.setdefault(f.shape[1], []).append(hook)
    for hooks in by_width.values():
        def stack(feats: Mapping[str, Tensor], hooks: list[str] = hooks) -> Tensor:
            return torch.stack([feats[h].to(device=device, dtype=torch.float32) for h in hooks])

        x = torch.cat([stack(pos), stack(neg)], dim=1)
        tr = train[0]
        mean, sd = x[:, tr].mean(1, keepdim=True), x[:, tr].std(1, keepdim=True)
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        theta = fit_logistic((x - mean) / sd, y, train, config.C, config.max_iter, config.tol)
        neg_scores = decision((stack(neg) - mean) / sd, theta)[0][:, test_d]
        for model, feats in apply.items():
            scores = decision((stack(feats) - mean) / sd, theta)[0][:, test_d]
            labels = torch.cat([torch.ones(scores.shape[1], dtype=torch.bool), torch.zeros(scores.shape[1], dtype=torch.bool)])
            aucs = auroc(torch.cat([scores, neg_scores], dim=1), labels)
            for i, h in enumerate(hooks):
                out.teacher_prob.setdefault(model, {})[h] = float(torch.sigmoid(scores[i]).mean())
                out.auroc_vs_neg.setdefault(model, {})[h] = float(aucs[i])
    return out
