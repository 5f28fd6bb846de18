"""Independent organism stages in worker processes (spawn start, one torch thread each).

Each stage is deterministic from its seed and writes its result to disk (models as safetensors,
data as JSONL), so a stage built in a worker is byte-for-byte the one a serial build writes; the
build then reads them back as it reads a resumed build's stages. `StagePool(1)` runs everything
in this process (the serial path). The calling process takes the first task itself and any task
no worker has started yet, so N workers means N - 1 extra processes (each pays the ~10 s import).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, TypeVar

import torch

from workbench.core.errors import WorkbenchError, WorkerError

T = TypeVar("T")


def available_cores() -> int:
    """The cores this process may use (its CPU affinity where the OS reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """min(2, the cores this process may use): two processes of one thread each are what a
    2-core machine gains from (measured: the organism's tiny models gain nothing from a second
    torch thread, but two independent trainings run side by side)."""
    return min(2, available_cores())


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


class StagePool:
    """Run lists of independent tasks on `workers` processes (this one included)."""

    def __init__(self, workers: int = 1, threads: int | None = None) -> None:
        if workers < 1:
            raise WorkerError(f"workers={workers}; use 1 (one process, the serial build) or more.")
        self.workers = workers
        self.threads = threads
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            threads = self.threads or torch.get_num_threads()
            self._executor = ProcessPoolExecutor(self.workers - 1, mp_context=get_context("spawn"),
                                                 initializer=_init_worker, initargs=(threads,))
        return self._executor

    def run(self, fn: Callable[..., T], tasks: Sequence[tuple[Any, ...]], names: Sequence[str]) -> list[T]:
        """[fn(*task) for task in tasks], in that order: the first task here, the rest in workers,
        except those no worker has started by the time this process is free, which run here. A
        worker's error is re-raised (a WorkbenchError as it is, anything else as WorkerError
        naming the task); a worker that dies is a WorkerError."""
        if self.workers <= 1 or len(tasks) <= 1:
            return [fn(*t) for t in tasks]
        pool = self._pool()
        futures: dict[int, Future[T]] = {}
        try:
            for i, task in enumerate(tasks[1:], 1):
                futures[i] = pool.submit(fn, *task)
        except BrokenProcessPool as e:
            raise self._died(names[len(futures) + 1], e) from e
        results: dict[int, T] = {0: fn(*tasks[0])}
        for i, future in futures.items():
            if future.cancel():  # not started by a worker: run it here
                results[i] = fn(*tasks[i])
        for i, future in futures.items():
            if i not in results:
                results[i] = self._result(future, names[i])
        return [results[i] for i in range(len(tasks))]

    def _result(self, future: Future[T], name: str) -> T:
        try:
            return future.result()
        except BrokenProcessPool as e:
            raise self._died(name, e) from e
        except WorkbenchError:
            raise
        except Exception as e:
            raise WorkerError(f"Stage {name} failed in a worker process: {type(e).__name__}: {e}") from e

    def _died(self, name: str, e: BaseException) -> WorkerError:
        self.close()
        return WorkerError(f"A worker process died while building {name} ({e}); out of memory or killed? Rerun the "
                           "same command to resume (built stages are reused), or pass --workers 1 to build in one process.")

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> StagePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
