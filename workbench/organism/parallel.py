"""Independent organism stages in worker processes (spawn start, one torch thread each).

Each stage is deterministic from its seed and writes its result to disk (models as safetensors,
data as JSONL), so a stage built in a worker is byte-for-byte the one a serial build writes; the
build then reads them back as it reads a resumed build's stages. `StagePool(1)` runs everything
in this process (the serial path). The calling process takes the first task itself, and every
process takes the next task when it is free, so N workers means N - 1 extra processes (each pays
the ~10 s import).
"""

from __future__ import annotations

import os
import threading
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


def _init_worker(threads: int, parent: int | None = None) -> None:
    torch.set_num_threads(threads)
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="exit-with-parent").start()


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """End this worker once `parent` is gone (killed, not closed: a closed pool ends its workers
    itself). Without this a killed command leaves its workers idling on a dead pipe."""
    import time

    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


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
                                                 initializer=_init_worker, initargs=(threads, os.getpid()))
        return self._executor

    def run(self, fn: Callable[..., T], tasks: Sequence[tuple[Any, ...]], names: Sequence[str],
            on_done: Callable[[int, T], None] | None = None) -> list[T]:
        """[fn(*task) for task in tasks], in that order. Tasks are handed out one at a time, in
        order, to whichever is free: this process (which takes the first) or a worker, so no
        worker holds a queue of tasks while another process idles (a process pool queues ahead on
        its own: with 4 equal tasks one worker ran 3 while this process ran 1). A worker's error
        is re-raised (a WorkbenchError as it is, anything else as WorkerError naming the task); a
        worker that dies is a WorkerError. After an error no further task starts. `on_done(i, result)`
        is called as each task ends (from this process's threads, one call at a time)."""
        done_lock = threading.Lock()

        def done(i: int, result: T) -> T:
            if on_done is not None:
                with done_lock:
                    on_done(i, result)
            return result

        if self.workers <= 1 or len(tasks) <= 1:
            return [done(i, fn(*t)) for i, t in enumerate(tasks)]
        pool = self._pool()
        lock = threading.Lock()
        queue = list(range(len(tasks)))
        results: dict[int, T] = {}
        errors: dict[int, BaseException] = {}

        def take() -> int | None:
            with lock:
                return queue.pop(0) if queue and not errors else None

        def run_here(i: int) -> None:
            try:
                results[i] = done(i, fn(*tasks[i]))
            except BaseException as e:  # noqa: BLE001 - re-raised below, after the workers' tasks end
                errors[i] = e

        def dispatch() -> None:
            while (i := take()) is not None:
                try:
                    results[i] = done(i, self._result(pool.submit(fn, *tasks[i]), names[i]))
                except BrokenProcessPool as e:
                    errors[i] = self._died(names[i], e)
                except BaseException as e:  # noqa: BLE001 - re-raised below
                    errors[i] = e

        i = take()  # the first task is this process's
        dispatchers = [threading.Thread(target=dispatch, name=f"stage-dispatch-{k}", daemon=True)
                       for k in range(self.workers - 1)]
        for thread in dispatchers:
            thread.start()
        while i is not None:
            run_here(i)
            i = take()
        for thread in dispatchers:
            thread.join()
        if errors:
            raise errors[min(errors)]
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
