"""Driver of the `align_rows` benchmark's 1-vs-2-process rows, run under `torchrun --nproc-per-node 2`.

`python -m torch.distributed.run --standalone --nproc-per-node 2 -m workbench.benchmarks._align_ranks
OUT.json quick runs`: the capture driver's protocol (`workbench.benchmarks._capture_ranks`) for
`stream_alignment_scores`: in interleaved rounds rank 0 alone scores the rows (a rank's threads,
then the threads of both), then both ranks together; each run is timed between barriers. Rank 0
writes the times and whether the three stores were byte-identical to OUT.json.
"""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from workbench.analyses.alignment_rows import RowScoresConfig, stream_alignment_scores
from workbench.benchmarks._capture_ranks import tree_sha
from workbench.benchmarks.align_rows import BATCH, N_FULL, N_QUICK, setup
from workbench.core import distributed
from workbench.core.distributed import RankInfo
from workbench.core.io import atomic_write_json


def main(out: str, quick: bool, runs: int) -> None:
    device = distributed.init_if_launched(torch.device("cpu"))
    info = distributed.current()
    n = N_QUICK if quick else N_FULL
    model, rows, dirs, objective = setup(quick, n, device)
    stamp = distributed.broadcast_int(int(time.time() * 1000) % 10**9)  # one folder name for every rank
    root = Path(tempfile.gettempdir()) / f"bench-align-ranks-{stamp}"
    times: dict[str, list[float]] = {"1": [], "1t": [], "2": []}
    threads = torch.get_num_threads()
    batch = BATCH if not quick else 4
    same = True
    try:
        for r in range(runs + 1):  # round 0 warms up
            for k in ("1", "1t", "2"):
                distributed.barrier()
                torch.set_num_threads(threads * info.world_size if k == "1t" else threads)
                t0 = time.perf_counter()
                if k == "2" or info.is_main:
                    stream_alignment_scores(model, rows, dirs, objective, root / k, RowScoresConfig(batch_size=batch),
                                            ranks=None if k == "2" else RankInfo())
                distributed.barrier()
                torch.set_num_threads(threads)
                if r:
                    times[k].append(time.perf_counter() - t0)
            if info.is_main:
                same = same and tree_sha(root / "1") == tree_sha(root / "2") == tree_sha(root / "1t")
                shutil.rmtree(root, ignore_errors=True)
            distributed.barrier()
        if info.is_main:
            atomic_write_json(out, {"times": times, "identical": same, "rows": n, "world_size": info.world_size,
                                    "jobs": -(-n // batch), "threads_per_process": threads,
                                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    finally:
        if info.is_main:
            shutil.rmtree(root, ignore_errors=True)
        distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "quick", int(sys.argv[3]))
