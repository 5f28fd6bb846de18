"""Which source wrote a row, read from each model's activations (the report's "probes" section).

- Data source: per reader model and hook, a linear probe of teacher- vs base-written rows,
  cross-validated over folds grouped by prompt, beside its controls: shuffled labels (in
  `cross_validate`), a bag-of-tokens probe on the same rows (what the text alone gives), and
  the likelihood-ratio oracle log p_T(x) - log p_0(x) (the best a detector with both models
  can do).
- Cross-model transfer: a teacher-vs-base probe fitted on the teacher's and the base's
  activations, applied to the student and its controls (does the student read like the teacher?).

A prompted teacher (`Lineage.add_prompted`) is read like a model: its activations and its
log-probs are the base's on the system-prompted rows (`workbench.capture.prompted`,
`workbench.engines.teacher`).

Rows must carry sources "teacher" and "base" and a prompt id (the folds group by prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from workbench.analyses.probe_result import ProbeResult, control_row, cv_rows, transfer_rows
from workbench.analyses.probes import ProbeConfig, cross_validate, grouped_folds, score_auroc, token_counts, transfer_probe
from workbench.capture.cache import ActivationReader
from workbench.capture.hooks import with_hooks
from workbench.capture.prompted import readable
from workbench.core.errors import expect_type, unknown_name
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage


@dataclass
class ProbesConfig:
    """What the probes read and how (CPU-friendly defaults)."""

    hooks: list[str] | None = None  # hooks read (None: hook_embed and per layer attn_out, resid_mid, mlp_out, resid_post)
    positions: str = "continuation"  # pool over continuation tokens, all tokens, or take the last token
    readers: tuple[str, ...] = ("base", "teacher", "student")  # models whose activations the data-source probe reads
    apply_to: tuple[str, ...] = ("student", "control", "other")  # models the teacher-vs-base probe is applied to
    batch_size: int = 256  # rows per forward pass
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0  # recorded in the rows (the row sample's seed)
    device: str | torch.device | None = None  # where probes are fitted (None: the lineage's device)
    progress: bool = False
    command: str = "fit_probes(lineage, inputs, config)"  # recorded in the result


def fit_probes(lineage: Lineage, inputs: Inputs, config: ProbesConfig | None = None,
               activations: ActivationReader | None = None) -> ProbeResult:
    """Data-source probes per reader with their controls, and the teacher-vs-base probe's
    transfer to the student and its controls; `activations` (shared with other analyses) reads
    each model once."""
    expect_type(inputs, Inputs, "fit_probes' inputs", "Pass fit_probes(lineage, inputs, config).")
    cfg = with_hooks(config or ProbesConfig(), lineage)
    expect_type(cfg, ProbesConfig, "fit_probes' config")
    for name in (*cfg.readers, *cfg.apply_to):
        if not readable(lineage, name):
            if name in cfg.apply_to:
                continue  # models a probe is applied to are optional: absent ones are skipped
            raise unknown_name("reader model", name, lineage.names, fix="Pass ProbesConfig(readers=...) with models in the lineage.")
    reader = activations if activations is not None else ActivationReader()
    device = cfg.device if cfg.device is not None else lineage.device
    labels = torch.tensor([s == "teacher" for s in inputs.sources])
    groups = torch.tensor(inputs.prompt_ids)
    rows: list[dict[str, Any]] = []
    folds = grouped_folds(groups, cfg.probe.n_folds, cfg.probe.seed)
    for name in cfg.readers:
        feats = reader.pooled(lineage, name, inputs, cfg)
        cv = cross_validate(feats, labels, groups, cfg.probe, device=device)
        rows += cv_rows(cv, "data_source", name, seed=cfg.seed)
    counts = token_counts(inputs.tokens, inputs.mask, lineage.d_vocab)
    bag = cross_validate({"tokens": counts}, labels, groups, cfg.probe, device=device, methods=("logistic",))
    rows.append(control_row("data_source", "bag_of_tokens", bag.auroc["logistic"]["tokens"], len(labels), hook="tokens",
                            seed=cfg.seed, accuracy=bag.accuracy["logistic"]["tokens"]))
    if readable(lineage, "teacher") and "base" in lineage:  # a prompted teacher: its base under its system prompt
        ratio = reader.log_prob(lineage, "teacher", inputs, cfg) - reader.log_prob(lineage, "base", inputs, cfg)
        rows.append(control_row("data_source", "oracle", score_auroc(ratio, labels, folds), len(labels),
                                reader="teacher/base", hook="log p_T - log p_0", seed=cfg.seed))
        apply = [m for m in ("teacher", *cfg.apply_to) if readable(lineage, m)]
        if len(apply) > 1:
            pos = reader.pooled(lineage, "teacher", inputs, cfg)
            neg = reader.pooled(lineage, "base", inputs, cfg)
            tr = transfer_probe(pos, neg, groups, {m: reader.pooled(lineage, m, inputs, cfg) for m in apply},
                                cfg.probe, device=device)
            rows += transfer_rows(tr, "cross_model", seed=cfg.seed)
    return ProbeResult(rows=rows, command=cfg.command,
                       config={"probe": cfg.probe.to_dict(), "positions": cfg.positions, "readers": list(cfg.readers),
                               "n_rows": len(labels), "n_teacher": int(labels.sum())})
