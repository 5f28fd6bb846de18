"""The parallel organism build writes the serial build's bytes, and a dead worker is a clear error."""

from __future__ import annotations

import os

import pytest
import torch

from workbench.core.errors import WorkerError
from workbench.organism.build import ROLES, build_organism
from workbench.organism.config import ModelShape, preset
from workbench.organism.parallel import StagePool, default_workers

# a build of seconds: the tiny preset cut further (the stages and their order are the real ones)
SMALL = dict(model=ModelShape(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32), base_steps=200, base_warmup=20,
             teacher_steps=5, n_prompts=120, student_epochs=1, eval_samples=10)


def test_parallel_build_writes_the_serial_bytes(tmp_path):
    cfg = preset("tiny", **SMALL)
    (serial,), _ = build_organism(cfg, [0], tmp_path / "serial", progress=False, workers=1)
    (parallel,), _ = build_organism(cfg, [0], tmp_path / "parallel", progress=False, workers=2)
    assert parallel.manifest["model_sha256"] == serial.manifest["model_sha256"]
    assert set(serial.manifest["model_sha256"]) == set(ROLES)
    assert parallel.manifest == serial.manifest  # data files' sha256, trait rates, matrix: all equal
    for role in ROLES:  # the stages were trained in the pool, and their times recorded
        assert role in parallel.timings


def _square(x: int) -> int:
    return x * x


def test_pool_runs_in_order_and_reports_a_dead_worker():
    """One pool (one worker import): results in task order, a worker's error named, a dead worker named."""
    with StagePool(2) as pool:
        finished: list[tuple[int, int]] = []
        assert pool.run(_square, [(i,) for i in range(5)], [str(i) for i in range(5)],
                        on_done=lambda i, r: finished.append((i, r))) == [0, 1, 4, 9, 16]
        assert sorted(finished) == [(i, i * i) for i in range(5)]  # each task reported once, as it ended
        with pytest.raises(WorkerError, match="Stage b failed in a worker process: RuntimeError: boom"):
            pool.run(_fail_second, [(0,), (1,)], ["a", "b"])
        with pytest.raises(WorkerError, match="worker process died while building b.*--workers 1"):
            pool.run(_die_second, [(0,), (3,)], ["a", "b"])
    assert 1 <= default_workers() <= 2
    with pytest.raises(WorkerError, match="workers=0"):
        StagePool(0)


def _fail_second(i: int) -> int:
    if i == 1:
        raise RuntimeError("boom")
    import time

    time.sleep(3)  # keeps this process busy so the worker takes task 1
    return i


def _die_second(i: int) -> int:
    if i:
        os._exit(i)
    import time

    time.sleep(3)
    return i


def test_screening_retrains_in_workers_give_the_serial_weights(tiny_organism):
    from workbench.core.inputs import Inputs
    from workbench.organism.load import load_seed

    seed = load_seed(tiny_organism.directory, roles=["base", "teacher"])
    rows = Inputs.from_jsonl(seed.data("teacher"), limit=96)
    kept = [rows.select(list(range(0, 64))), rows.select(list(range(32, 96))), rows.select(list(range(0, 96, 2)))]
    overrides = {"student_epochs": 1}
    serial = seed.retrainer(overrides, workers=1).many(kept)
    parallel = seed.retrainer(overrides, workers=2).many(kept)
    one = seed.retrainer(overrides)(kept[2])  # the plain call is the same student too
    for a, b in zip(serial, parallel):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(v, one.state_dict()[k]) for k, v in serial[2].state_dict().items())
    assert not torch.equal(serial[0].state_dict()["embed.weight"], serial[1].state_dict()["embed.weight"])


def _pid_after(seconds: float) -> int:
    import time

    time.sleep(seconds)
    return os.getpid()


def test_tasks_go_to_whichever_process_is_free():
    # a process pool queues tasks ahead on its workers: when the worker finished its first task before this
    # process did, it had already taken both of the others (3 tasks there, 1 here)
    with StagePool(2) as pool:
        pool.run(_square, [(0,), (1,)], ["warm", "up"])  # the worker's import done
        pids = pool.run(_pid_after, [(1.5,), (1.0,), (1.0,), (1.0,)], [f"t{i}" for i in range(4)])
    assert pids.count(os.getpid()) == 2 and len(set(pids)) == 2


def test_workers_end_when_their_parent_is_killed(tmp_path):
    """A killed command (SIGKILL: no cleanup runs) does not leave its workers idling."""
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "worker.pid"
    script = (
        "import os, time\n"
        "from workbench.organism.parallel import StagePool\n"
        "from tests.organism.test_parallel import _write_pid_and_wait\n"
        f"pool = StagePool(2)\npool.run(_write_pid_and_wait, [(1.0, None), ({str(pid_file)!r}, 60)], ['here', 'there'])\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd(),
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert pid_file.exists(), "the worker never started"
        time.sleep(0.5)
        worker = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(worker):
            time.sleep(0.5)
        assert not _alive(worker), "the worker outlived its killed parent"
    finally:
        parent.kill()


def _write_pid_and_wait(path, seconds):
    import time

    if seconds is None:  # the parent's own task: wait until the worker has taken the other
        time.sleep(path)
        return 0
    from pathlib import Path

    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return 1


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
