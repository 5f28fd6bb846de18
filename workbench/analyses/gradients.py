"""Gradient alignment between distillation data and parameter directions (exact and fast).

For a sequence i with distillation loss L_i (summed over its counted next-token positions) and
a direction d in parameter space (a dict over the Lineage's clean keys):

    a_i      = -<grad L_i(theta), d>           alignment: > 0 when a step on i moves theta along d
    a_{i,t}  = -<grad L_{i,t}(theta), d>       per token (they sum to a_i)
    a_{i,g}  = -<grad_g L_i(theta), d_g>       per parameter group (they sum to a_i)
    cos_i    = a_i / (|grad L_i| |d|)
    path_i   = int_0^1 -<grad L_i(theta + s d), d> ds = L_i(theta) - L_i(theta + d)

For the hard loss (cross-entropy of the written tokens) and d = teacher - base, path_i is
exactly log p_teacher(x_i) - log p_base(x_i): the per-group path scores are an additive
decomposition of the likelihood ratio (completeness, as in integrated gradients).

How each is computed (chosen by `python -m workbench.bench gradients`):
- a_i and a_{i,t} for a whole batch: ONE forward-mode pass of the per-token loss matrix along d
  (the tangent of entry (i, t) is <grad L_{i,t}, d>): hand-written for the functional backend
  (`workbench.engines.tangent`, ~1.9x faster than `torch.func.jvp` on a CPU, with about half its memory), else
  `torch.func.jvp`; `method=` picks one.
- a_{i,g} and |grad L_i|: per-example gradients with `vmap(grad)` in chunks, dotted per group
  (one pass serves every direction).
- path_i: K Gauss-Legendre points on [0, 1], one jvp each.

The model is a pure function of a SNAPSHOT of the clean parameters (`AlignmentModel`): the
`FunctionalModel` engine when the models are workbench-native, else `functional_call` on the
bridge with `tie_weights=False` AND one wrapped name per parameter (the default tie_weights=True,
or passing every alias path of a parameter, leaves the swapped-in tensors in a transformer-lens
4.3 bridge after the call: DESIGN.md section 3). The live models are never written to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from torch.func import functional_call, grad, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from workbench.core.errors import ConfigError, DataError, unknown_name
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.models import NATIVE_CONFIG_ATTR
from workbench.core.params import ParamGroup
from workbench.engines.tangent import loss_tangents, written_index
from workbench.trait import Trait

Params = dict[str, Tensor]
LossKind = Literal["hard", "soft"]
Backend = Literal["auto", "functional", "bridge"]
LOSS_KINDS = ("hard", "soft")


# --------------------------------------------------------------------------- the model as a function


class AlignmentModel:
    """One lineage model's forward as a pure function `logits(params, tokens)` of clean-keyed
    parameters, plus a detached snapshot of its own parameters (`params`) and of any other
    model's (`params_of`). Nothing here writes to a live model.

    backend: "functional" (the `FunctionalModel` engine; workbench-native models only),
    "bridge" (`torch.func.functional_call` on the bridge with `tie_weights=False` and one name per
    owning module, see `_one_name_per_module`), or "auto" (functional when possible).
    """

    def __init__(self, lineage: Lineage, name: str = "base", backend: Backend = "auto"):
        if backend not in ("auto", "functional", "bridge"):
            raise unknown_name("backend", backend, ("auto", "functional", "bridge"))
        self.lineage, self.name = lineage, name
        bridge = lineage[name]
        native = getattr(bridge, NATIVE_CONFIG_ATTR, None) is not None
        if backend == "auto":
            backend = "functional" if native else "bridge"
        if backend == "functional" and not native:
            raise ConfigError(f"backend='functional' needs workbench-native models; {name!r} is not. Use backend='bridge'.")
        self.backend = backend
        self.params: Params = self.params_of(name)
        if backend == "functional":
            from workbench.engines.functional import FunctionalModel

            fm = FunctionalModel.from_bridge(bridge)
            self._buffers = {k: v for k, v in fm.w.items() if k not in self.params and k not in lineage.aliases}
            self._shape = (fm.n_layers, fm.n_heads, fm.eps, fm.act)
            # tied weights (e.g. unembed = embed): the alias key reads its canonical parameter
            self._aliases = {a: ks[0] for a, ks in lineage.aliases.items() if len(ks) == 1}
        else:
            self._bridge = bridge
            self._names = _one_name_per_module(bridge, lineage.actual_names(name))

    @property
    def keys(self) -> list[str]:
        return list(self.params)

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    def params_of(self, name: str) -> Params:
        """Detached copy of a lineage model's clean parameters."""
        return {k: p.detach().clone() for k, p in self.lineage.params(name).items()}

    def logits(self, params: Mapping[str, Tensor], tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq vocab"]:
        # The math attention kernel is made of primitive ops, so forward-mode AD and vmap work through it.
        with sdpa_kernel(SDPBackend.MATH):
            if self.backend == "functional":
                from workbench.engines.functional import FunctionalModel

                return FunctionalModel(self._weights(params), *self._shape)(tokens)
            full = {n: params[k] for k, names in self._names.items() for n in names}
            return functional_call(self._bridge, full, (tokens,), tie_weights=False, strict=False)

    def _weights(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Functional backend: the full weight dict (buffers, `params`, tied keys reading their canonical one)."""
        return {**self._buffers, **params, **{a: params[c] for a, c in self._aliases.items()}}

    @property
    def has_explicit_tangents(self) -> bool:
        """Whether `loss_tangents` (the hand-written forward mode of `workbench.engines.tangent`) applies."""
        return self.backend == "functional"

    def loss_tangents(
        self, params: Mapping[str, Tensor], direction: Mapping[str, Tensor], objective: Objective, batch: Batch
    ) -> Float[Tensor, "batch seq_1"]:
        """d/ds L_{i,t}(params + s direction) by `workbench.engines.tangent` (functional backend only)."""
        if not self.has_explicit_tangents:
            raise ConfigError("Explicit tangents need backend='functional'; use method='func' (torch.func.jvp).")
        dw = {**direction, **{a: direction[c] for a, c in self._aliases.items() if c in direction}}
        ids = None if objective.ids is None else objective.ids.to(batch.tokens.device)
        soft = objective.kind == "soft"
        written = batch.targets if not soft and ids is not None else None  # Objective.targets already indexed them
        n_layers, n_heads, eps, act = self._shape
        return loss_tangents(self._weights(params), dw, batch.tokens, batch.mask, batch.targets if soft else None, ids,
                             n_layers=n_layers, n_heads=n_heads, eps=eps, act=act, written=written)


def _one_name_per_module(bridge: torch.nn.Module, actual: Mapping[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """For each clean key, one wrapped parameter name per distinct owning module.

    The bridge reaches each module under several paths (`blocks.0.ln1` and
    `layers.0._original_component.ln1`); passing every path to `functional_call` (even with
    tie_weights=False) leaves the swapped-in tensors in the model after the call, because the
    restore of one path re-installs what the other swapped in (tested in test_gradients.py). A
    parameter truly shared by two modules (tied embed/unembed) keeps one name per module, so
    both uses see the swapped tensor.
    """
    out: dict[str, list[str]] = {}
    for key, names in actual.items():
        seen: set[int] = set()
        for name in names:
            owner = bridge.get_submodule(name.rsplit(".", 1)[0]) if "." in name else bridge
            if id(owner) not in seen:
                seen.add(id(owner))
                out.setdefault(key, []).append(name)
    return out


# --------------------------------------------------------------------------- losses


def log_probs(logits: Tensor, ids: Tensor | None) -> Tensor:
    """Log-softmax over `ids` (all tokens when None), in float32 at least (float64 stays float64).
    Same as `organism.training.restricted_log_probs`, which always casts to float32."""
    sub = logits if ids is None else logits.index_select(-1, ids)
    return F.log_softmax(sub.to(torch.promote_types(sub.dtype, torch.float32)), dim=-1)


@dataclass
class Objective:
    """The distillation loss L_{i,t} at each counted next-token position.

    kind: "hard" = cross-entropy of the written next token (renormalised over `ids` when given:
        the organism's hard-label student loss); "soft" = KL(teacher || model) over the
        next-token distribution renormalised over `ids` (the organism's soft loss).
    ids: token ids the distributions are renormalised over (None: full vocabulary, for the hard
        loss the exact text likelihood, whose path integral is the log-likelihood ratio).
    teacher: soft only: the teacher's clean parameters (its logits are the targets).
    """

    kind: LossKind = "hard"
    ids: Int[Tensor, " k"] | None = None
    teacher: Params | None = None

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise unknown_name("loss", self.kind, LOSS_KINDS)
        if self.kind == "soft" and self.teacher is None:
            raise ConfigError("The soft loss needs the teacher's parameters (teacher=...) for its targets.")

    def targets(self, model: AlignmentModel, tokens: Int[Tensor, "batch seq"], mask: Tensor | None = None) -> Tensor | None:
        """Soft: the teacher's renormalised next-token log-probs [batch, seq-1, k]. Hard: None, or
        with `ids` the written tokens' index in `ids` [batch, seq-1] (-1 outside; an error where counted)."""
        if self.kind == "hard":
            if self.ids is None:
                return None
            return written_index(tokens, self.ids, mask)
        with torch.no_grad():
            ids = None if self.ids is None else self.ids.to(tokens.device)
            return log_probs(model.logits(self.teacher, tokens)[:, :-1], ids)

    def per_token(
        self,
        logits: Float[Tensor, "batch seq vocab"],
        tokens: Int[Tensor, "batch seq"],
        mask: Float[Tensor, "batch seq_1"],
        targets: Tensor | None,
    ) -> Float[Tensor, "batch seq_1"]:
        """L_{i,t} at positions t = 0..seq-2 (position t predicts token t+1), zero where not counted."""
        if self.kind == "hard" and self.ids is None:
            logp = log_probs(logits[:, :-1], None)
            loss = -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
        elif self.kind == "hard":  # renormalised over ids; `targets` holds the written tokens' index there
            logp = log_probs(logits[:, :-1], self.ids.to(tokens.device))
            loss = -logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
        else:
            ids = None if self.ids is None else self.ids.to(tokens.device)
            logp = log_probs(logits[:, :-1], ids)
            loss = (targets.exp() * (targets - logp)).sum(-1)
        return loss * mask


@dataclass
class Batch:
    """One batch on the model's device: tokens, next-token mask (float), soft targets."""

    tokens: Int[Tensor, "batch seq"]
    mask: Float[Tensor, "batch seq_1"]
    targets: Tensor | None
    rows: slice


def iter_batches(
    model: AlignmentModel, objective: Objective, inputs: Inputs, batch_size: int, progress: bool = False, desc: str = ""
) -> Iterator[Batch]:
    """Batches of `inputs` (pad columns trimmed) with the objective's targets."""
    if len(inputs) == 0:
        raise DataError("No rows to score; pass Inputs with at least one row.")
    inputs.validate(model.lineage.d_vocab, model.lineage.n_ctx)
    dev = model.device
    n_batches = -(-len(inputs) // batch_size)
    for b, part in enumerate(tqdm(inputs.batches(batch_size), total=n_batches, desc=desc, disable=not progress, leave=False)):
        tokens = part.tokens.to(dev)
        mask = part.next_token_mask().to(dev, model.dtype)
        yield Batch(tokens, mask, objective.targets(model, tokens, mask), slice(b * batch_size, b * batch_size + len(part)))


def per_token_losses(model: AlignmentModel, params: Mapping[str, Tensor], objective: Objective, batch: Batch) -> Tensor:
    return objective.per_token(model.logits(params, batch.tokens), batch.tokens, batch.mask, batch.targets)


def sequence_losses(
    model: AlignmentModel, inputs: Inputs, objective: Objective, params: Mapping[str, Tensor] | None = None,
    batch_size: int = 256,
) -> Float[Tensor, " n"]:
    """L_i for every row at `params` (default: the model's own), no gradients."""
    params = model.params if params is None else params
    out = torch.empty(len(inputs), dtype=model.dtype)
    with torch.no_grad():
        for batch in iter_batches(model, objective, inputs, batch_size):
            out[batch.rows] = per_token_losses(model, params, objective, batch).sum(-1).cpu()
    return out


# --------------------------------------------------------------------------- directions


def check_direction(model: AlignmentModel, direction: Mapping[str, Tensor], name: str = "direction") -> Params:
    """The direction on the model's device and dtype; every key known, missing keys are zero."""
    unknown = [k for k in direction if k not in model.params]
    if unknown:
        raise unknown_name("parameter key", unknown[0], model.params, fix=f"Keys of {name} must be the Lineage's clean keys.")
    out = {}
    for k, p in model.params.items():
        if k in direction:
            v = direction[k]
            if tuple(v.shape) != tuple(p.shape):
                raise DataError(f"{name}[{k!r}] has shape {tuple(v.shape)}; the parameter has {tuple(p.shape)}.")
            out[k] = v.detach().to(p.device, p.dtype)
        else:
            out[k] = torch.zeros_like(p)
    return out


def norm(direction: Mapping[str, Tensor], exclude: Sequence[str] = ()) -> float:
    """Euclidean norm over every key not starting with a prefix in `exclude`."""
    return float(sum((v.double() ** 2).sum() for k, v in direction.items() if not k.startswith(tuple(exclude))) ** 0.5)


def without(direction: Mapping[str, Tensor], prefixes: Sequence[str]) -> Params:
    """The direction with keys starting with any of `prefixes` set to zero (e.g. the unembedding)."""
    return {k: torch.zeros_like(v) if k.startswith(tuple(prefixes)) else v for k, v in direction.items()}


def only(direction: Mapping[str, Tensor], keys: Sequence[str]) -> Params:
    """The direction restricted to `keys` (others zero)."""
    keep = set(keys)
    return {k: v if k in keep else torch.zeros_like(v) for k, v in direction.items()}


def random_direction(like: Mapping[str, Tensor], seed: int, scale: float | None = None) -> Params:
    """A Gaussian direction over the same keys with total norm `scale` (default: the norm of `like`)."""
    gen = torch.Generator().manual_seed(seed)
    raw = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in like.items()}
    target = norm(like) if scale is None else scale
    factor = target / max(norm(raw), 1e-30)
    return {k: (r * factor).to(like[k].device, like[k].dtype) for k, r in raw.items()}


def trait_log_prob(model: AlignmentModel, params: Mapping[str, Tensor], trait: Trait) -> Float[Tensor, ""]:
    """log P(target) at the answer position, averaged over the trait's prompts (`Trait.log_prob`)."""
    return trait.log_prob(lambda tokens: model.logits(params, tokens), model.device)


def trait_gradient(model: AlignmentModel, trait: Trait, params: Mapping[str, Tensor] | None = None) -> Params:
    """g_trait = grad log P(target | trait prompts) at `params` (default: the model's own).
    Needs no teacher: the realistic audit direction."""
    if not isinstance(trait, Trait):
        raise ConfigError(f"trait_gradient scores a Trait; got {type(trait).__name__}. Pass the source's Trait "
                          "(e.g. workbench.organism.trait.organism_trait(tokenizer, 'owl')).")
    params = dict(model.params if params is None else params)
    return grad(lambda p: trait_log_prob(model, p, trait))(params)


# --------------------------------------------------------------------------- scores


@dataclass
class TokenScores:
    """a_i (`total`) and a_{i,t} (`per_token`, position t predicts token t+1; zero where not counted)."""

    total: Float[Tensor, " n"]
    per_token: Float[Tensor, "n seq_1"]


JvpMethod = Literal["auto", "explicit", "func"]
JVP_METHODS = ("auto", "explicit", "func")


def _jvp_scores(
    model: AlignmentModel, objective: Objective, batch: Batch, at: Params, d: Params, method: JvpMethod = "auto"
) -> Tensor:
    """-d/ds L_{i,t}(at + s d) at s = 0 for the whole batch: one forward-mode pass, hand-written
    (`workbench.engines.tangent`, functional backend; "explicit") or `torch.func.jvp` ("func")."""
    if method not in JVP_METHODS:
        raise unknown_name("jvp method", method, JVP_METHODS)
    if method == "explicit" or (method == "auto" and model.has_explicit_tangents):
        return -model.loss_tangents(at, d, objective, batch)
    _, tangent = jvp(lambda p: per_token_losses(model, p, objective, batch), (at,), (d,))
    return -tangent


def alignment_scores(
    model: AlignmentModel,
    inputs: Inputs,
    direction: Mapping[str, Tensor],
    objective: Objective,
    *,
    at: Mapping[str, Tensor] | None = None,
    batch_size: int = 256,
    progress: bool = False,
    method: JvpMethod = "auto",
) -> TokenScores:
    """a_i and a_{i,t} along `direction` at `at` (default: the model's parameters), by one
    forward-mode pass per batch (`method`: see `_jvp_scores`; auto = explicit where it applies)."""
    d = check_direction(model, direction)
    at = dict(model.params if at is None else at)
    width = inputs.tokens.shape[1] - 1
    per_token = torch.zeros(len(inputs), width, dtype=model.dtype)
    for batch in iter_batches(model, objective, inputs, batch_size, progress, "alignment (jvp)"):
        a = _jvp_scores(model, objective, batch, at, d, method).detach().cpu()
        per_token[batch.rows, : a.shape[1]] = a
    return TokenScores(per_token.sum(-1), per_token)


def quadrature(points: int, rule: str = "gauss") -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1]: "gauss" (Gauss-Legendre; 1 point = the midpoint) or "left"
    (left Riemann sum; 1 point = the plain score at s = 0)."""
    if points < 1:
        raise ConfigError(f"points={points}; the path integral needs at least one point.")
    if rule == "gauss":
        x, w = np.polynomial.legendre.leggauss(points)
        return (x + 1) / 2, w / 2
    if rule == "left":
        return np.arange(points) / points, np.full(points, 1.0 / points)
    raise unknown_name("quadrature rule", rule, ("gauss", "left"))


def path_scores(
    model: AlignmentModel,
    inputs: Inputs,
    direction: Mapping[str, Tensor],
    objective: Objective,
    *,
    points: int = 8,
    rule: str = "gauss",
    at: Mapping[str, Tensor] | None = None,
    batch_size: int = 256,
    progress: bool = False,
    method: JvpMethod = "auto",
) -> TokenScores:
    """Path-integrated alignment along at + s d, s in [0, 1], with `points` quadrature points.
    Its total tends to L_i(at) - L_i(at + d) (exact log-likelihood ratio for the hard loss)."""
    d = check_direction(model, direction)
    at = dict(model.params if at is None else at)
    nodes, weights = quadrature(points, rule)
    width = inputs.tokens.shape[1] - 1
    per_token = torch.zeros(len(inputs), width, dtype=model.dtype)
    for batch in iter_batches(model, objective, inputs, batch_size, progress, f"path alignment (K={points})"):
        acc = 0
        for s, w in zip(nodes, weights):
            point = {k: at[k] + float(s) * d[k] for k in at}
            acc = acc + float(w) * _jvp_scores(model, objective, batch, point, d, method).detach()
        per_token[batch.rows, : acc.shape[1]] = acc.cpu()
    return TokenScores(per_token.sum(-1), per_token)


def per_example_grads(
    model: AlignmentModel, objective: Objective, batch: Batch, at: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """grad L_i for every row of the batch, each key stacked [batch, *shape] (vmap of grad)."""

    def one(p: Params, tokens: Tensor, mask: Tensor, targets: Tensor | None) -> Tensor:
        b = Batch(tokens[None], mask[None], None if targets is None else targets[None], slice(0, 1))
        return per_token_losses(model, p, objective, b).sum()

    dims = (None, 0, 0, None if batch.targets is None else 0)
    return vmap(grad(one), in_dims=dims)(dict(at), batch.tokens, batch.mask, batch.targets)


@dataclass
class GroupScores:
    """Per-group scores a_{i,g} for each direction (they sum over groups to a_i), and |grad L_i|.

    by_direction: direction name -> [n, groups].
    grad_norm: |grad L_i| over every key; grad_norm_excluding: the same without `excluded` keys.
    """

    groups: list[str]
    by_direction: dict[str, Float[Tensor, "n groups"]]
    grad_norm: Float[Tensor, " n"]
    grad_norm_excluding: Float[Tensor, " n"]
    excluded: tuple[str, ...]

    def total(self, name: str) -> Float[Tensor, " n"]:
        return self.by_direction[name].sum(-1)

    def cosine(self, name: str, direction: Mapping[str, Tensor], exclude: Sequence[str] = ()) -> Float[Tensor, " n"]:
        """a_i / (|grad L_i| |d|), the gradient norm taken without `exclude` when that matches `excluded`."""
        if tuple(exclude) not in ((), self.excluded):
            raise ConfigError(f"Gradient norms were computed excluding {self.excluded}, not {tuple(exclude)}.")
        g = self.grad_norm_excluding if exclude else self.grad_norm
        return self.total(name) / (g * norm(direction, exclude)).clamp(min=1e-30)


def group_scores(
    model: AlignmentModel,
    inputs: Inputs,
    directions: Mapping[str, Mapping[str, Tensor]],
    objective: Objective,
    *,
    groups: Sequence[ParamGroup] | None = None,
    at: Mapping[str, Tensor] | None = None,
    exclude_from_norm: Sequence[str] = ("unembed.",),
    batch_size: int = 64,
    progress: bool = False,
    weights: Sequence[tuple[float, float]] | None = None,
) -> GroupScores:
    """a_{i,g} for every direction and group from per-example gradients (one pass for all
    directions), plus |grad L_i| with and without `exclude_from_norm` keys (for cosines).

    weights: optional (s, w) pairs: the scores become sum_k w_k a_{i,g}(at + s_k d) (path
    integration; one direction only, since the points depend on it).
    """
    groups = list(groups if groups is not None else model.lineage.groups())
    dirs = {name: check_direction(model, d, name) for name, d in directions.items()}
    if weights is not None and len(dirs) != 1:
        raise ConfigError("Path-integrated group scores take exactly one direction.")
    at = dict(model.params if at is None else at)
    excl = tuple(exclude_from_norm)
    n = len(inputs)
    out = {name: torch.zeros(n, len(groups), dtype=model.dtype) for name in dirs}
    gnorm2 = torch.zeros(n, dtype=torch.float64)
    gnorm2_ex = torch.zeros(n, dtype=torch.float64)
    points = weights if weights is not None else [(0.0, 1.0)]
    for batch in iter_batches(model, objective, inputs, batch_size, progress, "alignment (per-example grads)"):
        for s, w in points:
            if weights is not None:
                (name, d), = dirs.items()
                point = {k: at[k] + s * d[k] for k in at}
            else:
                point = at
            grads = per_example_grads(model, objective, batch, point)
            for name, d in dirs.items():
                cols = [
                    -sum((grads[k] * d[k]).flatten(1).sum(-1) for k in g.keys) for g in groups
                ]
                out[name][batch.rows] += w * torch.stack(cols, dim=-1).detach().cpu()
            if weights is None:
                sq = {k: (g.double() ** 2).flatten(1).sum(-1).cpu() for k, g in grads.items()}
                gnorm2[batch.rows] = sum(sq.values())
                gnorm2_ex[batch.rows] = sum(v for k, v in sq.items() if not k.startswith(excl))
    return GroupScores([g.name for g in groups], out, gnorm2.sqrt(), gnorm2_ex.sqrt(), excl)


# --------------------------------------------------------------------------- first-order prediction


@dataclass
class PredictionRow:
    """Predicted vs measured change of log P(target) after one SGD step of size eta."""

    eta: float
    predicted: list[float]  # per batch: eta * mean_i a_i(g_trait)
    measured: list[float]  # per batch: log P(target) after the step minus before

    @property
    def relative_error(self) -> float:
        p, m = np.asarray(self.predicted), np.asarray(self.measured)
        return float(np.median(np.abs(p - m) / np.maximum(np.abs(m), 1e-30)))

    @property
    def sign_agreement(self) -> float:
        return float(np.mean(np.sign(self.predicted) == np.sign(self.measured)))

    def to_dict(self) -> dict:
        return {"eta": self.eta, "predicted": self.predicted, "measured": self.measured,
                "relative_error": self.relative_error, "sign_agreement": self.sign_agreement}


def first_order_prediction(
    model: AlignmentModel,
    inputs: Inputs,
    objective: Objective,
    trait: Trait,
    etas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0),
    *,
    batch_size: int = 64,
    n_batches: int = 4,
) -> list[PredictionRow]:
    """For each of `n_batches` batches: take one SGD step theta - eta * mean_i grad L_i and compare
    the measured change of log P(target) with the first-order prediction eta * mean_i a_i(g_trait)."""
    theta = model.params
    g_trait = trait_gradient(model, trait)
    before = float(trait_log_prob(model, theta, trait))
    rows = {eta: PredictionRow(float(eta), [], []) for eta in etas}
    for b, batch in enumerate(iter_batches(model, objective, inputs.select(slice(0, batch_size * n_batches)), batch_size)):
        if b >= n_batches:
            break
        a = float(_jvp_scores(model, objective, batch, theta, g_trait).sum(-1).mean())
        mean_grad = grad(lambda p: per_token_losses(model, p, objective, batch).sum(-1).mean())(dict(theta))
        for eta in etas:
            stepped = {k: theta[k] - eta * mean_grad[k] for k in theta}
            with torch.no_grad():
                after = float(trait_log_prob(model, stepped, trait))
            rows[eta].predicted.append(eta * a)
            rows[eta].measured.append(after - before)
    return list(rows.values())


__all__ = [
    "AlignmentModel", "Objective", "TokenScores", "GroupScores", "PredictionRow", "alignment_scores", "path_scores",
    "group_scores", "per_example_grads", "sequence_losses", "trait_gradient", "trait_log_prob", "random_direction",
    "without", "only", "norm", "quadrature", "first_order_prediction", "check_direction", "log_probs",
]
