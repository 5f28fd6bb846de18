"""Driver of the capture benchmark's 1-vs-2-process rows, run under `torchrun --nproc-per-node 2`.

`python -m torch.distributed.run --standalone --nproc-per-node 2 -m workbench.benchmarks._capture_ranks
OUT.json quick runs`: in interleaved rounds, rank 0 alone captures the rows (`ranks=RankInfo()`,
rank 1 waiting at a barrier; once with a rank's threads, once with the threads of both), then
both ranks capture the same rows together; each capture is timed between barriers, so process start-up and imports are not counted. Rank 0 writes the
times and whether the two artifacts' files were byte-identical (sha256 of every file) to OUT.json.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from workbench.benchmarks.capture import FULL, QUICK, _inputs, _lineage
from workbench.capture.capture import capture
from workbench.core import distributed
from workbench.core.distributed import RankInfo
from workbench.core.io import atomic_write_json


def tree_sha(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def timed_rounds(work: Callable[[Path, RankInfo | None], None], out: str, runs: int, *, label: str,
                 rows: int, jobs: int) -> None:
    """The 1-vs-2-process protocol, shared by the drivers: in interleaved rounds (round 0 warms up)
    rank 0 alone runs `work(folder, RankInfo())` with a rank's threads ("1") and with the threads
    of all ranks ("1t"), then every rank runs `work(folder, None)` together ("2"); each run is timed
    between barriers. Rank 0 writes the times and whether the three folders' files were
    byte-identical (sha256) to `out`."""
    info = distributed.current()
    stamp = distributed.broadcast_int(int(time.time() * 1000) % 10**9)  # one folder name for every rank
    root = Path(tempfile.gettempdir()) / f"bench-{label}-{stamp}"
    times: dict[str, list[float]] = {"1": [], "1t": [], "2": []}
    threads = torch.get_num_threads()
    same = True
    try:
        for r in range(runs + 1):
            for k in ("1", "1t", "2"):
                distributed.barrier()
                torch.set_num_threads(threads * info.world_size if k == "1t" else threads)
                t0 = time.perf_counter()
                if k == "2" or info.is_main:
                    work(root / k, None if k == "2" else RankInfo())
                distributed.barrier()
                torch.set_num_threads(threads)
                if r:
                    times[k].append(time.perf_counter() - t0)
            if info.is_main:
                same = same and tree_sha(root / "1") == tree_sha(root / "2") == tree_sha(root / "1t")
                shutil.rmtree(root, ignore_errors=True)
            distributed.barrier()
        if info.is_main:
            atomic_write_json(out, {"times": times, "identical": same, "rows": rows, "world_size": info.world_size,
                                    "jobs": jobs, "threads_per_process": threads,
                                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    finally:
        if info.is_main:
            shutil.rmtree(root, ignore_errors=True)
        distributed.shutdown()


def main(out: str, quick: bool, runs: int) -> None:
    device = distributed.init_if_launched(torch.device("cpu"))
    shape = QUICK if quick else FULL
    n, batch = (16, 4) if quick else (256, 32)
    lin, rows = _lineage(shape, device), _inputs(n, shape)
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(shape["n_layers"])]

    def work(target: Path, ranks: RankInfo | None) -> None:
        capture(lin, rows, hooks, positions="last", out_dir=target, batch_size=batch, shard_rows=batch,
                device=device, progress=False, ranks=ranks)

    timed_rounds(work, out, runs, label="ranks", rows=n, jobs=2 * -(-n // batch))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "quick", int(sys.argv[3]))
