"""The digits experiment: build base, base_x, teacher, student and cross for each seed, and evaluate them."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from workbench.cli.common import parse_seeds
from workbench.core.errors import ConfigError
from workbench.core.io import atomic_write_json
from workbench.core.models import resolve_device
from workbench.core.progress import progress_bar
from workbench.organism.digits.config import ROLES, DigitsConfig, derive_seed
from workbench.organism.digits.data import DigitsData, load_data
from workbench.organism.digits.files import save_seed
from workbench.organism.digits.model import make_model
from workbench.organism.digits.results import DigitsResult, SeedResult
from workbench.organism.digits.train import accuracy, train_student, train_teacher

def build_seed(
    config: DigitsConfig,
    seed: int,
    data: DigitsData | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> SeedResult:
    """Build base, base_x, teacher, same-init student and cross student for one seed; evaluate all."""
    with torch_threads(config.threads):
        return _build_seed(config, seed, data, resolve_device(config.device if device is None else device), progress)


def _build_seed(
    config: DigitsConfig, seed: int, data: DigitsData | None, dev: torch.device, progress: bool
) -> SeedResult:
    data = (data or load_data(config.test_fraction, config.split_seed)).to(dev)
    t0 = time.perf_counter()
    init_seeds = {"base": derive_seed(seed, "base"), "base_x": derive_seed(seed, "base_x")}
    base = make_model(config, init_seeds["base"], dev)
    base_x = make_model(config, init_seeds["base_x"], dev)
    seconds: dict[str, float] = {}
    final: dict[str, float] = {}

    t = time.perf_counter()
    teacher = base.clone()
    final["teacher"] = train_teacher(
        teacher, data.x_train, data.y_train, config, derive_seed(seed, "teacher"), dev, progress
    )[-1]
    seconds["teacher"] = time.perf_counter() - t
    models = {"base": base, "base_x": base_x, "teacher": teacher}
    for role, parent in (("student", base), ("cross", base_x)):
        t = time.perf_counter()
        models[role] = parent.clone()
        final[role] = train_student(models[role], teacher, config, seed, dev, progress, desc=role)[-1]
        seconds[role] = time.perf_counter() - t
    acc = {role: accuracy(models[role], data.x_test, data.y_test) for role in ROLES}
    seconds["total"] = time.perf_counter() - t0
    for model in models.values():
        model.eval()
    return SeedResult(seed, acc, seconds, init_seeds, final, {r: models[r] for r in ROLES})

@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with `n` torch CPU threads (0: unchanged), restoring the previous count afterwards."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _parse_seeds(seeds: int | str | Iterable[int] | None, default: int) -> list[int]:
    if seeds is None:
        return [default]
    if isinstance(seeds, int):
        return [seeds]
    if isinstance(seeds, str):
        seeds = parse_seeds(seeds)
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"seeds={seeds!r} must be a non-empty list of integers >= 0, e.g. [0, 1, 2] or '0-4'.")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={seeds!r} repeats a seed. List each seed once.")
    return seeds


def build_digits(
    config: DigitsConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    seeds: int | str | Sequence[int] | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> DigitsResult:
    """Build the digits organism for each seed (default: `config.seed`); write files if `out_dir`.

    Returns accuracies of teacher, same-init `student`, other-init `cross`, and the inits `base`,
    `base_x` (chance reference) per seed, with mean ± sd; models stay in memory on the result.
    """
    config = config or DigitsConfig()
    config.validate()
    dev = resolve_device(config.device if device is None else device)
    seed_list = _parse_seeds(seeds, config.seed)
    show = progress  # bars on a terminal, stage lines elsewhere (workbench.core.progress)
    data = load_data(config.test_fraction, config.split_seed, dev)
    results: list[SeedResult] = []
    bar = progress_bar(seed_list, desc="digits seeds", enabled=show, leave=True)
    with torch_threads(config.threads):
        for seed in bar:
            bar.set_postfix(seed=seed)
            res = build_seed(config, seed, data, dev, show)
            results.append(res)
            if out_dir is not None:
                save_seed(res, config, Path(out_dir) / f"seed{seed}")
    result = DigitsResult(config, results)
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_json(out / "summary.json", result.to_json())
        timings = {"device": str(dev), "seconds": {str(s.seed): s.seconds for s in results}}
        atomic_write_json(out / "timings.json", timings)
    return result
