"""analyses.directions: a planted direction is recovered and screens its rows; random ones do not."""

from __future__ import annotations

import pytest
import torch

from workbench.analyses.directions import (
    DirectionResult,
    mean_difference,
    projection_auroc,
    random_direction_aurocs,
    shift_along,
)
from workbench.core.errors import DataError

D, N = 32, 2000


def planted(strength: float = 1.0, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Gaussian rows; the labelled half shifted by `strength` along one unit direction."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(D, generator=g)
    direction /= direction.norm()
    labels = torch.arange(N) % 2 == 0
    x = torch.randn(N, D, generator=g) + strength * labels[:, None].float() * direction
    return {"h": x}, labels, direction


def orthogonal_to(u: torch.Tensor, seed: int) -> torch.Tensor:
    r = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    r -= (r @ u) * u
    return r / r.norm()


def test_mean_difference_recovers_a_planted_direction():
    x, labels, u = planted(strength=2.0)
    found = mean_difference({"h": x["h"][labels]}, {"h": x["h"][~labels]})["h"]
    assert torch.nn.functional.cosine_similarity(found, u, dim=0) > 0.95
    assert abs(float(found @ u) - 2.0) < 0.15  # and its length is the planted shift


def test_projection_auroc_is_high_along_the_planted_direction_and_half_across_it():
    x, labels, u = planted(strength=2.0)
    aurocs = projection_auroc(x, {"h": u}, labels)
    # two unit-variance Gaussians 2 apart along u: AUROC = Phi(2 / sqrt(2)) = 0.92
    assert 0.89 < aurocs["h"] < 0.95
    assert projection_auroc(x, {"h": -u}, labels)["h"] == pytest.approx(1 - aurocs["h"])
    across = [projection_auroc(x, {"h": orthogonal_to(u, 100 + s)}, labels)["h"] for s in range(5)]
    assert all(abs(a - 0.5) < 0.05 for a in across)
    assert projection_auroc(x, {"h": torch.zeros(D)}, labels) == {"h": 0.5}  # no direction: chance


def test_random_directions_give_half_on_data_without_a_signal():
    x, labels, _ = planted(strength=0.0)
    aurocs = random_direction_aurocs(x, labels, k=64, seed=1)["h"]
    assert aurocs.shape == (64,)
    assert abs(float(aurocs.mean()) - 0.5) < 0.02 and float((aurocs - 0.5).abs().max()) < 0.1
    assert torch.equal(aurocs, random_direction_aurocs(x, labels, k=64, seed=1)["h"])  # seeded


def test_shift_along_measures_the_fraction_of_the_teachers_shift():
    g = torch.Generator().manual_seed(0)
    base = {"h": torch.randn(50, D, generator=g)}
    step = torch.randn(D, generator=g)
    teacher = {"h": base["h"] + step}
    half = {"h": base["h"] + 0.5 * step}
    across = {"h": base["h"] + orthogonal_to(step / step.norm(), 103)}
    assert shift_along(half, base, teacher)["h"] == pytest.approx({"fraction": 0.5, "cosine": 1.0}, abs=1e-5)
    assert shift_along(across, base, teacher)["h"] == pytest.approx({"fraction": 0.0, "cosine": 0.0}, abs=1e-5)
    assert shift_along(base, base, base)["h"] == {"fraction": 0.0, "cosine": 0.0}  # teacher did not move


def test_mean_difference_rejects_mismatched_hooks():
    with pytest.raises(DataError, match="only one of the two"):
        mean_difference({"a": torch.zeros(2, 3)}, {"b": torch.zeros(2, 3)})


def test_result_round_trips(tmp_path):
    result = DirectionResult(
        directions={"target_vs_other": {"h": torch.arange(4.0)}},
        detection=[{"direction": "target_vs_other", "hook": "h", "reader": "base", "auroc": 0.7,
                    "random_mean": 0.5, "random_p95": 0.55, "n": 10}],
        shifts=[{"direction": "target_vs_other", "hook": "h", "model": "student", "fraction": 0.3, "cosine": 0.4},
                {"direction": "target_vs_other", "hook": "h", "model": "control", "fraction": 0.0, "cosine": 0.1}],
        command="test")
    result.save(tmp_path)
    back = DirectionResult.load(tmp_path)
    assert torch.equal(back.directions["target_vs_other"]["h"], torch.arange(4.0))
    assert back.detection == result.detection and back.shifts == result.shifts
    rows = [r.to_dict() for r in back.summary_rows()]
    assert [r["group"] for r in rows] == ["projection detection", "shift"]
    assert rows[1]["value"] == 0.3 and rows[1]["control_value"] == 0.0
    assert set(back.figures()) == {"detection", "shift"}
