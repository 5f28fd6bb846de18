"""The trait gradient g_trait = grad log P(target | trait prompts): the audit direction that needs no teacher."""

from __future__ import annotations

from collections.abc import Mapping

from jaxtyping import Float
from torch import Tensor
from torch.func import grad

from workbench.core.errors import ConfigError
from workbench.engines.alignment_model import AlignmentModel, Params
from workbench.trait import Trait


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


__all__ = ["trait_gradient", "trait_log_prob"]
