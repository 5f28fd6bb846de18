"""Tiny models and rows for examples and quick checks: seconds on a CPU, nothing downloaded.

>>> lin, inputs = tiny_lineage(), tiny_inputs()
>>> lin.names, len(inputs)
(['base', 'teacher', 'student'], 2)
"""

from __future__ import annotations

from collections.abc import Sequence

from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.models import boot_native

TINY_CONFIG = dict(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16, d_vocab=10, n_ctx=4, act_fn="gelu",
                   normalization_type="LN")
"""A one-layer native model (vocabulary of 10, context of 4)."""


def tiny_lineage(roles: Sequence[str] = ("base", "teacher", "student"), **overrides: object) -> Lineage:
    """Native random models with `TINY_CONFIG` (+ `overrides`), one seed per role in order;
    fine-tuned roles get the standard parents (teacher and student from base)."""
    return Lineage.from_models({role: boot_native({**TINY_CONFIG, **overrides, "seed": i}) for i, role in enumerate(roles)})


def tiny_inputs() -> Inputs:
    """Two teacher-written rows of prompt + completion tokens, right-padded."""
    return Inputs.from_sequences([[1, 2], [3]], [[4], [5, 6]], sources="teacher", pad_id=0)
