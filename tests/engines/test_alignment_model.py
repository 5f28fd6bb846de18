"""AlignmentModel holds no copies of a model: its params (and a teacher's) are views of the live
parameters, and scoring along a path through them leaves the live models untouched."""

from __future__ import annotations

import pytest
import torch

from workbench.analyses.path_scores import path_scores
from workbench.core.inputs import Inputs
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective
from workbench.engines.teacher import WeightTeacher, teacher_logits
from workbench.organism.load import load_lineage


@pytest.fixture(scope="module")
def lin(tiny_organism):
    return load_lineage(tiny_organism.directory, roles=["base", "teacher"])


def shares_storage(views: dict[str, torch.Tensor], live: dict[str, torch.Tensor]) -> bool:
    return views.keys() == live.keys() and all(views[k].data_ptr() == live[k].data_ptr() for k in live)


@pytest.mark.parametrize("backend", ["functional", "bridge"])
def test_params_and_the_teachers_are_views_of_the_live_parameters(lin, backend):
    model = AlignmentModel(lin, backend=backend)
    assert shares_storage(model.params, lin.params("base"))
    assert all(not p.requires_grad for p in model.params.values())  # detached: no autograd into the live model
    teacher = teacher_logits(model, "teacher")
    assert isinstance(teacher, WeightTeacher)
    assert shares_storage(teacher.params, lin.params("teacher"))


def test_path_scores_leave_the_live_models_and_the_views_unchanged(lin, tiny_organism):
    data = tiny_organism.directory / "data"
    rows = Inputs.from_jsonl([data / "teacher.jsonl"]).select([0, 1, 2])
    before = {f"{n}/{k}": v.detach().clone() for n in lin.names for k, v in lin.params(n).items()}
    model = AlignmentModel(lin)
    teacher = teacher_logits(model, "teacher")
    path_scores(model, rows, lin.delta("teacher"), Objective("soft", teacher=teacher), points=3, batch_size=2)
    after = {f"{n}/{k}": v.detach() for n in lin.names for k, v in lin.params(n).items()}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert shares_storage(model.params, lin.params("base"))
