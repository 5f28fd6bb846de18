"""What a digits build returns: per-seed accuracies, their mean ± sd, the CLI table and summary.json."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from workbench.core.provenance import SCHEMA_VERSION, package_versions
from workbench.organism.digits.config import KIND, ROLES, DigitsConfig
from workbench.organism.digits.model import DigitsMLP


@dataclass
class SeedResult:
    """One training seed: test accuracy of every role, the lineage, and (in memory) the models."""

    seed: int
    accuracy: dict[str, float]
    seconds: dict[str, float]
    init_seeds: dict[str, int]
    final_loss: dict[str, float]
    models: dict[str, DigitsMLP] = field(default_factory=dict, repr=False)


@dataclass
class DigitsResult:
    """All seeds of one config, with mean ± sd (sample sd over seeds; None for one seed)."""

    config: DigitsConfig
    seeds: list[SeedResult]

    def accuracies(self, role: str) -> list[float]:
        return [s.accuracy[role] for s in self.seeds]

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        out: dict[str, dict[str, float | int | None]] = {}
        for role in ROLES:
            accs = self.accuracies(role)
            out[role] = {
                "mean": statistics.fmean(accs),
                "sd": statistics.stdev(accs) if len(accs) > 1 else None,
                "min": min(accs),
                "max": max(accs),
                "n": len(accs),
            }
        return out

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per seed: the accuracies the CLI table shows."""
        return [{"seed": s.seed, **s.accuracy, "seconds": s.seconds["total"]} for s in self.seeds]

    def to_json(self) -> dict[str, Any]:
        cfg = self.config.to_dict()
        cfg.pop("seed")
        return {
            "kind": KIND + ".summary",
            "schema_version": SCHEMA_VERSION,
            "config": cfg,
            "seeds": [s.seed for s in self.seeds],
            "accuracy": {str(s.seed): s.accuracy for s in self.seeds},
            "summary": self.summary(),
            "versions": package_versions(),
        }

    def table(self) -> str:
        """Per-seed table plus mean ± sd, for the CLI."""
        cols = ("teacher", "student", "cross", "base", "base_x")
        head = f"{'seed':>6} " + " ".join(f"{c:>8}" for c in cols) + f" {'seconds':>8}"
        lines = [head, "-" * len(head)]
        for s in self.seeds:
            lines.append(
                f"{s.seed:>6} " + " ".join(f"{s.accuracy[c]:>8.3f}" for c in cols) + f" {s.seconds['total']:>8.1f}"
            )
        lines.append("-" * len(head))
        summ = self.summary()
        lines.append(f"{'mean':>6} " + " ".join(f"{summ[c]['mean']:>8.3f}" for c in cols))
        if len(self.seeds) > 1:
            lines.append(f"{'sd':>6} " + " ".join(f"{summ[c]['sd']:>8.3f}" for c in cols))
        return "\n".join(lines)
