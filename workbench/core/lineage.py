"""`Lineage`: the named hooked models every analysis takes, with who-came-from-whom.

A lineage holds TransformerLens 4.x `TransformerBridge`s under names (usually the fixed roles
below), each with a `ModelRecord`: its role, parent model, the data it was trained on and its
seed. Models must share architecture, vocabulary, device and dtype (checked on construction).

It also owns each model's clean parameter key space (`workbench.core.params`):
`Lineage.params(name)` maps clean keys to the LIVE parameters, tied or joint weights counted
once. Local Hugging Face directories load through `workbench.core.hf`.

>>> from workbench.core.models import boot_native
>>> cfg = dict(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16, d_vocab=10, n_ctx=4,
...            act_fn="gelu", normalization_type="LN", seed=0)
>>> lin = Lineage.from_models({"base": boot_native(cfg), "teacher": boot_native(cfg)})
>>> lin.parent_of("teacher")
'base'
>>> [g.name for g in lin.groups()][:3]
['embed', 'pos_embed', 'blocks.0.ln1']
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from workbench.core.errors import ConfigError, IncompatibleModelsError, unknown_name
from workbench.core.hf import boot_hf_dirs, copy_hf_model, device_map_of
from workbench.core.hf_memory import device_key
from workbench.core.lazy_params import LazyParams
from workbench.core.lora import LoraFactor, MergedAdapter, merged_adapter
from workbench.core.models import NATIVE_CONFIG_ATTR, copy_model, resolve_device
from workbench.core.params import ParamGroup, ParamSpace, make_groups, param_space
from workbench.core.prompted import WEIGHTS_NOTE, PromptedRole, system_prompt_prefix

ROLES: tuple[str, ...] = (
    "base",
    "base_x",
    "teacher",
    "teacher_neutral",
    "teacher_other",
    "student",
    "control",
    "other",
    "cross",
)
"""The fixed roles, in display order (DESIGN.md section 2)."""

EXTRA_ROLE = "extra"
"""Role of a user-named model that is none of `ROLES`."""

DEFAULT_PARENTS: dict[str, str | None] = {
    "base": None,
    "base_x": None,
    "teacher": "base",
    "teacher_neutral": "base",
    "teacher_other": "base",
    "student": "base",
    "control": "base",
    "other": "base",
    "cross": "base_x",
}
"""Who each role is fine-tuned from in the standard organism."""

# --------------------------------------------------------------------------- records


@dataclass
class ModelRecord:
    """Provenance of one model: its role, the model it was fine-tuned from and its data."""

    name: str
    role: str
    parent: str | None = None
    data: str | None = None
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- compatibility


def _device_dtype(bridge: TransformerBridge) -> tuple[torch.device, torch.dtype]:
    p = next(iter(bridge.parameters()), None)
    if p is None:
        raise IncompatibleModelsError("A model with no parameters cannot join a Lineage.")
    floats = [q.dtype for q in bridge.parameters() if q.is_floating_point()]
    return p.device, (floats[0] if floats else p.dtype)


def _fmt(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def check_compatible(
    ref_name: str,
    ref: TransformerBridge,
    ref_space: ParamSpace,
    name: str,
    other: TransformerBridge,
    space: ParamSpace,
) -> None:
    """Raise IncompatibleModelsError naming every difference between two models."""
    problems: list[str] = []
    v_ref, v_other = getattr(ref.cfg, "d_vocab", None), getattr(other.cfg, "d_vocab", None)
    if v_ref != v_other:
        problems.append(f"vocabulary size d_vocab: {ref_name}={v_ref}, {name}={v_other}")
    missing = [k for k in ref_space.params if k not in space.params]
    extra = [k for k in space.params if k not in ref_space.params]
    if missing:
        problems.append(f"parameters in {ref_name} but not in {name}: {_fmt(missing)}")
    if extra:
        problems.append(f"parameters in {name} but not in {ref_name}: {_fmt(extra)}")
    shapes = [
        f"{k} {tuple(ref_space.params[k].shape)} vs {tuple(space.params[k].shape)}"
        for k in ref_space.params
        if k in space.params and ref_space.params[k].shape != space.params[k].shape
    ]
    if shapes:
        problems.append(f"parameter shapes ({ref_name} vs {name}): {_fmt(shapes)}")
    (d_ref, t_ref), (d_other, t_other) = _device_dtype(ref), _device_dtype(other)
    if d_ref != d_other:
        problems.append(f"device: {ref_name}={d_ref}, {name}={d_other}")
    if t_ref != t_other:
        problems.append(f"dtype: {ref_name}={t_ref}, {name}={t_other}")
    if problems:
        raise IncompatibleModelsError(
            f"Models {ref_name!r} and {name!r} are incompatible: "
            + "; ".join(problems)
            + ". A Lineage needs one architecture, vocabulary, device and dtype: boot every model "
            "from the same config and load them with the same device= and dtype=."
        )


# --------------------------------------------------------------------------- Lineage


class Lineage:
    """Named hooked models with roles, parents and training data; one clean parameter key space."""

    def __init__(
        self,
        models: Mapping[str, TransformerBridge],
        records: Mapping[str, ModelRecord],
        tokenizer: Any = None,
    ):
        if not models:
            raise ConfigError("A Lineage needs at least one model; got none.")
        if set(models) != set(records):
            raise ConfigError(
                f"models and records name different models: {sorted(models)} vs {sorted(records)}."
            )
        self._models: dict[str, TransformerBridge] = dict(models)
        self._records: dict[str, ModelRecord] = {n: records[n] for n in models}
        self._spaces: dict[str, ParamSpace] = {}
        self._prompted: dict[str, PromptedRole] = {}
        self.tokenizer = tokenizer
        first = self.names[0]
        for name in self.names[1:]:
            ref, other = self._models[first], self._models[name]
            check_compatible(first, ref, self.space(first), name, other, self.space(name))

    # ---- constructors

    @classmethod
    def from_models(
        cls,
        models: Mapping[str, TransformerBridge],
        *,
        parents: Mapping[str, str | None] | None = None,
        data: Mapping[str, str | None] | None = None,
        roles: Mapping[str, str] | None = None,
        seeds: Mapping[str, int | None] | None = None,
        meta: Mapping[str, dict[str, Any]] | None = None,
        tokenizer: Any = None,
    ) -> Lineage:
        """Wrap bridges you built. A role defaults to the name when that is a standard role,
        else "extra"; a parent defaults to the standard organism's (`DEFAULT_PARENTS`) when that
        model is present; data and seeds are unknown (None) unless given."""
        parents, data, roles, seeds, meta = (dict(x or {}) for x in (parents, data, roles, seeds, meta))
        given_by_kind = {"parents": parents, "data": data, "roles": roles, "seeds": seeds, "meta": meta}
        for kind, given in given_by_kind.items():
            for name in given:
                if name not in models:
                    raise unknown_name("model", name, models, fix=f"Every key of {kind}= must name a model.")
        records = {}
        for name in models:
            role = roles.get(name, name if name in ROLES else EXTRA_ROLE)
            default_parent = DEFAULT_PARENTS.get(role)
            if name in parents:
                parent = parents[name]
            else:
                parent = default_parent if default_parent in models else None
            records[name] = ModelRecord(
                name=name,
                role=role,
                parent=parent,
                data=data.get(name),
                seed=seeds.get(name),
                meta=dict(meta.get(name, {})),
            )
        return cls(models, records, tokenizer=tokenizer)

    @classmethod
    def from_hf_dirs(
        cls,
        dirs: Mapping[str, str | os.PathLike],
        *,
        parents: Mapping[str, str | None] | None = None,
        data: Mapping[str, str | None] | None = None,
        roles: Mapping[str, str] | None = None,
        device: str | torch.device | None = "cpu",
        dtype: torch.dtype | None = None,
        trust_remote_code: bool = False,
        prompted: Mapping[str, str] | None = None,
        tokenizer: Any = None,
        device_map: str | Mapping[str, str | int] | None = None,
        max_memory: Mapping[str | int, int] | None = None,
    ) -> Lineage:
        """Boot each model from a LOCAL Hugging Face checkpoint directory (never the Hub).

        device_map: models larger than one device: "auto" (one map for every model, each GPU's
            `max_memory` or free memory shared by them; the cpu when there is no GPU) or an explicit
            {module path: GPU index or "cpu"} used for every model; `device` is then unused and
            `lineage.device` is where the embedding sits. max_memory: {GPU index or "cpu": bytes}, the
            budget of the whole lineage. Before any weight loads, a `ModelsDoNotFitError` names the
            bytes needed and available when the weights exceed the budget (see `workbench.core.hf_memory`).

        A peft LoRA adapter directory becomes its parent (default: the role's, e.g. student <-
        base) with the adapter merged in; its record's meta["lora"] gives r, alpha and modules,
        and `delta(name)` is the exact low-rank product (`Lineage.adapter`).

        prompted: name -> system prompt, roles that are the "base" model under that prompt (no
            weights loaded for them; `add_prompted`), e.g. {"teacher": "You love owls..."}.
        tokenizer: the lineage's tokenizer (default with `prompted`: the one saved in the base
            directory, loaded offline without remote code); its chat template renders the prompts,
            checked before any weights load."""
        prompted = dict(prompted or {})
        for name in prompted:
            if name in dirs:
                raise ConfigError(f"{name!r} is given both a directory and a system prompt; a prompted role has no "
                                  "weights of its own. Drop one of the two.")
        if prompted and "base" not in dirs:
            raise ConfigError(f"Prompted roles {sorted(prompted)} are the 'base' model under a system prompt; pass "
                              "dirs={'base': DIR, ...}.")
        if prompted and tokenizer is None:
            from workbench.core.hf_tokenizers import load_tokenizer  # offline, never remote code

            tokenizer = load_tokenizer(dirs["base"])
        for text in prompted.values():
            system_prompt_prefix(tokenizer, text)  # a missing template or an empty prompt fails before loading
        roles_, parents_ = dict(roles or {}), dict(parents or {})
        for name in dirs:
            if name not in parents_:
                default = DEFAULT_PARENTS.get(roles_.get(name, name if name in ROLES else EXTRA_ROLE))
                parents_[name] = default if default in dirs else None
        models, meta = boot_hf_dirs(
            dirs, device=device, dtype=dtype, trust_remote_code=trust_remote_code, parents=parents_,
            device_map=device_map, max_memory=max_memory,
        )
        lineage = cls.from_models(models, parents=parents, data=data, roles=roles, meta=meta, tokenizer=tokenizer)
        for name, text in prompted.items():
            lineage.add_prompted(name, text, base="base")
        return lineage

    # ---- lookups

    @property
    def names(self) -> list[str]:
        return list(self._models)

    @property
    def roles(self) -> dict[str, str]:
        """name -> role."""
        return {n: r.role for n, r in self._records.items()}

    @property
    def records(self) -> dict[str, ModelRecord]:
        return dict(self._records)

    def _check(self, name: str) -> str:
        if name in self._prompted:
            raise ConfigError(
                f"{name!r} is prompted: " + WEIGHTS_NOTE.format(name=name) + f" and no model of its own; its forward is "
                f"{self._prompted[name].base!r} on the system-prompted rows (workbench.engines.teacher.teacher_logits)."
            )
        if name not in self._models:
            raise unknown_name("model", name, self._models, fix="Use one of Lineage.names.")
        return name

    def __getitem__(self, name: str) -> TransformerBridge:
        return self._models[self._check(name)]

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def __repr__(self) -> str:
        parts = [f"{n}<-{r.parent}" if r.parent else n for n, r in self._records.items()]
        parts += [f"{n}={p.base}+system prompt" for n, p in self._prompted.items()]
        return f"Lineage({', '.join(parts)}; device={self.device}, dtype={self.dtype})"

    def record(self, name: str) -> ModelRecord:
        return self._records[self._check(name)]

    # ---- prompted roles (the base under a system prompt; no weights of their own)

    @property
    def prompted(self) -> dict[str, PromptedRole]:
        """name -> prompted role. A prompted role is not among `names` (it has no model): analyses
        that need its weights skip it; its log-probs come from its base (`engines.teacher`)."""
        return dict(self._prompted)

    def is_prompted(self, name: str) -> bool:
        return name in self._prompted

    def add_prompted(
        self,
        name: str,
        system_prompt: str,
        *,
        base: str = "base",
        role: str | None = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
    ) -> PromptedRole:
        """Declare `name` (default role: the name, e.g. teacher) as model `base` under
        `system_prompt`: no copy of any weights, the base's bridge is shared. The system prompt
        reaches token rows through the chat template of `tokenizer` (default: the lineage's)."""
        if name in self._models or name in self._prompted:
            raise ConfigError(f"Model {name!r} is already in the lineage; a prompted role needs a name of its own.")
        self._check(base)
        if base in self._prompted:
            raise ConfigError(f"The base of prompted {name!r} must be a model with weights; {base!r} is prompted.")
        tok = tokenizer if tokenizer is not None else self.tokenizer
        if tok is None:
            raise ConfigError(f"Prompted {name!r} needs the base's tokenizer (its chat template renders the system "
                              "prompt): pass tokenizer=, or build the Lineage with tokenizer=.")
        prefix = system_prompt_prefix(tok, system_prompt, chat_template)
        self._prompted[name] = PromptedRole(name, role or (name if name in ROLES else EXTRA_ROLE), base, prefix)
        return self._prompted[name]

    def parent_of(self, name: str) -> str | None:
        return self.record(name).parent

    def root_of(self, name: str) -> str:
        """Follow parents up to the first model with no parent present in this lineage."""
        seen = {name}
        while (parent := self.record(name).parent) is not None and parent in self._models:
            if parent in seen:
                raise ConfigError(f"Parent cycle in the lineage through {name!r}. Fix the parents= given.")
            seen.add(parent)
            name = parent
        return name

    def by_role(self, role: str) -> list[str]:
        return [n for n, r in self._records.items() if r.role == role]

    @property
    def device(self) -> torch.device:
        return _device_dtype(self[self.names[0]])[0]

    @property
    def dtype(self) -> torch.dtype:
        return _device_dtype(self[self.names[0]])[1]

    @property
    def cfg(self) -> Any:
        """The first model's TransformerLens config (all models share the architecture)."""
        return self[self.names[0]].cfg

    @property
    def d_vocab(self) -> int:
        return int(self.cfg.d_vocab)

    @property
    def n_ctx(self) -> int:
        return int(self.cfg.n_ctx)

    # ---- parameters

    def space(self, name: str) -> ParamSpace:
        """The clean key space of one model (cached; rebuilt after `to`)."""
        if name not in self._spaces:
            self._spaces[name] = param_space(self[name])
        return self._spaces[name]

    @property
    def keys(self) -> list[str]:
        """Canonical clean parameter keys (shared by every model)."""
        return list(self.space(self.names[0]).params)

    @property
    def aliases(self) -> dict[str, tuple[str, ...]]:
        """Dropped clean key -> canonical keys holding its memory (e.g. unembed.weight -> embed.weight)."""
        return dict(self.space(self.names[0]).aliases)

    def params(self, name: str) -> dict[str, nn.Parameter]:
        """Canonical clean key -> LIVE parameter: in-place edits change the model's outputs."""
        return dict(self.space(name).params)

    def actual_names(self, name: str) -> dict[str, tuple[str, ...]]:
        """Canonical clean key -> every wrapped-model name of that parameter (its alias paths).

        For `torch.func.functional_call` pass ONE name per owning module (as
        `workbench.gradients` does), with `tie_weights=False`: passing every alias path leaves
        the swapped-in tensors in place of the live Parameters after the call (the logits still
        match, but `params(name)` no longer drives the model and its gradients go nowhere).
        """
        return dict(self.space(name).actual_names)

    def state(self, name: str) -> dict[str, Tensor]:
        """Canonical clean key -> detached copy of the parameter."""
        return {k: p.detach().clone() for k, p in self.space(name).params.items()}

    def adapter(self, name: str) -> MergedAdapter | None:
        """The LoRA adapter merged into `name` (factors A, B, scaling per clean key), or None."""
        return merged_adapter(self[name])

    def _delta_sides(self, name: str, ref: str | None) -> tuple[str, MergedAdapter | None]:
        """Resolve `ref` (default: the parent), refuse prompted roles and another initialisation,
        and return the adapter whose factors give `name`'s delta against `ref` exactly (or None)."""
        for m in (name, ref):
            if m is not None and m in self._prompted:
                raise ConfigError(f"No weight delta of {m!r}: " + WEIGHTS_NOTE.format(name=m) + ". Compare it by "
                                  "log-probs (the likelihood-ratio oracle, prediction divergence) instead.")
        ref = ref if ref is not None else self.parent_of(name)
        if ref is None:
            raise ConfigError(f"Model {name!r} has no parent; pass ref= (one of {self.names}).")
        self._check(ref)
        ra, rb = self.root_of(name), self.root_of(ref)
        inits = {"base", "base_x"}
        if ra != rb and self.record(ra).role in inits and self.record(rb).role in inits:
            raise ConfigError(
                f"{name!r} descends from {ra!r} and {ref!r} from {rb!r}: different initialisations, so a "
                "weight difference is meaningless. Compare each against its own base, or by activations."
            )
        merged = self.adapter(name)
        return ref, (merged if merged is not None and merged.parent == ref else None)

    def low_rank(self, name: str, key: str, ref: str | None = None) -> LoraFactor | None:
        """The LoRA factor whose product scaling * B @ A is exactly `delta_of(name, key, ref)`, or
        None (not an adapter merged onto `ref`, or `key` not adapted): analyses that only need
        inner products and subspaces work from it without building the full-size delta."""
        _, merged = self._delta_sides(name, ref)
        return merged.factors.get(key) if merged is not None else None

    def delta_of(self, name: str, key: str, ref: str | None = None) -> Tensor:
        """One clean key of `delta(name, ref)`, in the model's dtype: what analyses that stream
        over parameter groups use, so that only one key's delta exists at a time."""
        ref, merged = self._delta_sides(name, ref)
        a, b = self.space(name).params[key], self.space(ref).params[key]
        if merged is not None and key in merged.factors:
            return merged.factors[key].delta(a.dtype).to(a.device)
        return a.detach() - b.detach()

    def delta(self, name: str, ref: str | None = None) -> dict[str, Tensor]:
        """Weights of `name` minus weights of `ref` (default: its parent), per clean key.

        Refused across initialisations (e.g. `cross` vs `base`): those weights live in other
        coordinates, so compare them by behaviour and activations instead. A LoRA adapter
        against its parent is the exact product scaling * B @ A on its keys (not merged minus
        base, which rounds; in bf16 by much), and 0 elsewhere. This holds a whole model's worth
        of deltas: for large models stream with `delta_of` (and `low_rank`) per group instead.
        """
        ref, _ = self._delta_sides(name, ref)
        return {k: self.delta_of(name, k, ref) for k in self.space(name).params}

    def delta_view(self, name: str, ref: str | None = None) -> LazyParams:
        """`delta(name, ref)` as a `LazyParams`: the same keys and values, each made by `delta_of`
        when read and dropped after, so a direction held through a whole analysis costs nothing
        until a key is used (refusals happen now, not at the first read)."""
        ref, _ = self._delta_sides(name, ref)
        params = self.space(name).params
        return LazyParams({k: v.shape for k, v in params.items()}, lambda k: self.delta_of(name, k, ref))

    def groups(self) -> list[ParamGroup]:
        """(layer, component) groups partitioning the canonical keys, in canonical order."""
        return make_groups(self.keys)

    def group(self, group_name: str) -> ParamGroup:
        groups = {g.name: g for g in self.groups()}
        if group_name not in groups:
            raise unknown_name("parameter group", group_name, groups, fix="See Lineage.groups().")
        return groups[group_name]

    # ---- changing the lineage

    def add(
        self,
        name: str,
        bridge: TransformerBridge,
        *,
        role: str | None = None,
        parent: str | None = None,
        data: str | None = None,
        seed: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Add a model (e.g. a patched copy), checked against the others."""
        if name in self._models:
            raise ConfigError(f"Model {name!r} is already in the lineage; choose another name.")
        first = self.names[0]
        check_compatible(first, self[first], self.space(first), name, bridge, param_space(bridge))
        self._models[name] = bridge
        self._records[name] = ModelRecord(
            name, role or (name if name in ROLES else EXTRA_ROLE), parent, data, seed, dict(meta or {})
        )

    def copy_model(self, name: str) -> TransformerBridge:
        """An independent copy of one model (boot + load the state dict; never deepcopy)."""
        bridge = self[name]
        if getattr(bridge, NATIVE_CONFIG_ATTR, None) is not None:
            return copy_model(bridge)
        hf_dir = self.record(name).meta.get("hf_dir") or getattr(bridge.cfg, "model_name", None)
        if not hf_dir or not Path(hf_dir).is_dir():
            raise ConfigError(
                f"Cannot copy {name!r}: it is neither a workbench native model nor booted from a known "
                "local HF directory. Build it with workbench.core.models.boot_native or Lineage.from_hf_dirs."
            )
        device, dtype = _device_dtype(bridge)
        trust = bool(self.record(name).meta.get("trust_remote_code", False))
        return copy_hf_model(bridge, hf_dir, device=device, dtype=dtype, trust_remote_code=trust)

    def to(self, device: str | torch.device) -> Lineage:
        """Move every model (in place) and return self. A lineage spread over devices by a device
        map cannot move (a ConfigError): load it again with `device=` instead."""
        device = resolve_device(device)
        spread = [n for n, b in self._models.items()
                  if {str(v) for v in (device_map_of(b) or {}).values()} - {str(device_key(device))}]
        if spread:
            raise ConfigError(f"Cannot move the lineage to {device}: {', '.join(spread)} are spread over devices by a "
                              f"device map (the embedding on {self.device}). Run on the devices they were loaded on "
                              "(device=None), or load them again with device= and no device_map.")
        for bridge in self._models.values():
            bridge.to(device, print_details=False)
        self._spaces.clear()
        return self
