"""Statistics of the alignment tables: AUROC, difference of means, the bag-of-tokens baseline, correlation."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from torch import Tensor

from workbench.core.errors import DataError
from workbench.analyses.probes import auroc as rank_auroc
from workbench.core.inputs import Inputs


def as_float64(values: Tensor | np.ndarray | list) -> np.ndarray:
    """A float64 numpy array of a tensor of any dtype and device (numpy has no bfloat16, so a
    tensor is cast with `.double()` before `.numpy()`), an array or a list."""
    if isinstance(values, Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def auroc(scores: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties half: `probes.auroc` (Mann-Whitney) in float64.

    >>> auroc(np.array([0.1, 0.4, 0.4, 0.9]), np.array([0, 0, 1, 1]))
    0.875
    """
    s = torch.as_tensor(as_float64(scores))
    if not torch.isfinite(s).all():
        raise DataError(f"{int((~torch.isfinite(s)).sum())} of {s.numel()} alignment scores are NaN or infinite, so no "
                        "AUROC is defined. Check the model's weights and the direction for NaNs.")
    return float(rank_auroc(s, torch.as_tensor(as_float64(labels)).bool()))


def diff_of_means(values: Tensor, labels: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean over positives minus mean over negatives (per column) and its standard error."""
    v = as_float64(values)
    lab = as_float64(labels).astype(bool)
    pos, neg = v[lab], v[~lab]
    diff = pos.mean(0) - neg.mean(0)
    se = np.sqrt(pos.var(0, ddof=1) / len(pos) + neg.var(0, ddof=1) / len(neg))
    return diff, se


def bag_of_tokens_auroc(inputs: Inputs, labels: Tensor, d_vocab: int, folds: int = 5, seed: int = 0) -> float:
    """Out-of-fold AUROC of a logistic regression on counts of the counted tokens (folds grouped
    by prompt id, so a prompt's teacher and base continuations never straddle train and test)."""
    counts = np.zeros((len(inputs), d_vocab))
    tokens, mask = inputs.tokens.cpu().numpy(), inputs.mask.cpu().numpy()
    for i in range(len(inputs)):
        np.add.at(counts[i], tokens[i][mask[i]], 1.0)
    y = as_float64(labels).astype(np.int64)
    groups = np.asarray(inputs.prompt_ids)
    out = np.zeros(len(y))
    for train, test in GroupKFold(n_splits=folds).split(counts, y, groups):
        clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed).fit(counts[train], y[train])
        out[test] = clf.decision_function(counts[test])
    return auroc(out, y)


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation; None where either side is constant (undefined, and not valid JSON as NaN)."""
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


__all__ = ["as_float64", "auroc", "bag_of_tokens_auroc", "correlation", "diff_of_means"]
