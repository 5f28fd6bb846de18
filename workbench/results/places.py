"""Where a summary row points: its `where` (a hook, a parameter group or a layer) as a place in the model.

The report's verdict and map group evidence by place, (depth row, component), whatever the
section's naming: TransformerLens hooks (`blocks.1.hook_mlp_out`), the bridge's structural
names (`blocks.1.mlp.hook_out`, `embed.hook_out`), clean parameter groups of native and Hugging
Face models (`blocks.1.mlp.out`, `blocks.0.attn.q`, `ln_final`), legacy weight names (`W_out`),
raw Hugging Face module paths (`model.layers.1.mlp.down_proj`), layer labels (`layer 1`,
`L1 mlp_out`) and joined groups (`embed + pos_embed`). Rows about no place (`whole model`,
`drop 10%`) give None.

>>> place_of("blocks.1.hook_mlp_out")
Place(layer=1, component='mlp')
>>> place_of("blocks.0.attn.q").label, place_of("embed + pos_embed").label, place_of("whole model")
('L0 attn', 'embed', None)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EMBED, FINAL = -1, 10**6
"""`Place.layer` of the embeddings (before block 0) and of the final norm and unembedding."""

COMPONENTS = ("embed", "norm", "attn", "mlp", "resid", "block", "unembed")
"""Components in the order the map's columns show them ("block": a whole block, or a place in
its stream that is not a sublayer's own output, e.g. `blocks.0.hook_out`)."""

_BLOCK = re.compile(r"^(?:blocks|model\.layers|layers|transformer\.h|model\.decoder\.layers|h)\.(\d+)(?:\.(.+))?$")
_LAYER = re.compile(r"^(?:layer\s*|L)(\d+)(?:\s+(.+))?$")
_EMBED = ("hook_embed", "hook_pos_embed", "embed", "pos_embed", "embed_tokens", "wte", "wpe", "tokens",
          "model.embed_tokens", "transformer.wte", "transformer.wpe")
_NORM_FINAL = ("ln_final", "model.norm", "transformer.ln_f", "norm", "ln_f")
_UNEMBED = ("unembed", "lm_head", "hook_unembed")


@dataclass(frozen=True, order=True)
class Place:
    """A row of the map (`layer`: EMBED, a block index, or FINAL) and a column (`component`)."""

    layer: int
    component: str

    @property
    def row(self) -> str:
        """The map's row label: `embed`, `L3` or `final`."""
        return "embed" if self.layer == EMBED else "final" if self.layer == FINAL else f"L{self.layer}"

    @property
    def label(self) -> str:
        """A short name: `embed`, `L1 mlp`, `final norm`."""
        if self.layer == EMBED and self.component == "embed":
            return "embed"
        return f"{self.row} {self.component}"


def _component(rest: str) -> str:
    """A block's sub-path (`hook_mlp_out`, `mlp.out`, `attn.hook_z`, `self_attn.q_proj`) -> component."""
    head = rest.split(".")[0]
    if head in ("ln1", "ln2", "input_layernorm", "post_attention_layernorm", "ln_1", "ln_2") or "hook_normalized" in rest \
            and head.startswith("ln"):
        return "norm"
    if head in ("attn", "self_attn", "attention", "hook_attn_out", "hook_attn_in", "hook_q_input", "hook_k_input",
                "hook_v_input") or head.startswith("attn") or head.startswith("W_") and head[2:] in ("Q", "K", "V", "O"):
        return "attn"
    if head in ("mlp", "hook_mlp_out", "hook_mlp_in", "W_in", "W_out", "W_gate") or head.startswith("mlp"):
        return "mlp"
    if head in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "resid_pre", "resid_mid", "resid_post", "hook_in",
                "hook_out"):
        return "resid"
    if head in ("b_in", "b_out"):
        return "mlp"
    if head in ("b_Q", "b_K", "b_V", "b_O"):
        return "attn"
    return "block"


def _one(where: str) -> Place | None:
    w = where.strip()
    m = _BLOCK.match(w)
    if m:
        return Place(int(m.group(1)), _component(m.group(2)) if m.group(2) else "block")
    m = _LAYER.match(w)
    if m:
        return Place(int(m.group(1)), _component(m.group(2)) if m.group(2) else "block")
    base = w[:-len(".hook_out")] if w.endswith(".hook_out") else w
    base = re.sub(r"\.(weight|bias|W_E|W_pos|W_U|b_U|w|b|hook_normalized|hook_scale)$", "", base)
    if base in _EMBED or base.startswith(("embed.", "pos_embed.")):
        return Place(EMBED, "embed")
    if base in _NORM_FINAL or base.startswith("ln_final"):
        return Place(FINAL, "norm")
    if base in _UNEMBED or base.startswith("unembed"):
        return Place(FINAL, "unembed")
    return None


def place_of(where: str) -> Place | None:
    """The place a row's `where` names, or None where it names no single place (whole model,
    a data subset, groups spanning several depths). Groups joined by ` + ` at one depth give
    that depth's whole place: a `block`, the embeddings, or the final unembedding."""
    parts = [p for p in str(where).split(" + ") if p.strip()]
    places = [_one(p) for p in parts]
    if not places or any(p is None for p in places):
        return None
    layers = {p.layer for p in places}  # type: ignore[union-attr]
    if len(layers) > 1:
        return None
    comps = {p.component for p in places}  # type: ignore[union-attr]
    if len(comps) == 1:
        return places[0]
    layer = layers.pop()
    return Place(layer, "embed" if layer == EMBED else "unembed" if layer == FINAL else "block")
