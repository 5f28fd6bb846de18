"""Driver of the `align_rows` benchmark's 1-vs-2-process rows, run under `torchrun --nproc-per-node 2`.

`python -m torch.distributed.run --standalone --nproc-per-node 2 -m workbench.benchmarks._align_ranks
OUT.json quick runs`: the capture driver's protocol (`workbench.benchmarks._capture_ranks`) for
`stream_alignment_scores`: in interleaved rounds rank 0 alone scores the rows (a rank's threads,
then the threads of both), then both ranks together; each run is timed between barriers. Rank 0
writes the times and whether the three stores were byte-identical to OUT.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from workbench.analyses.alignment_rows import RowScoresConfig, stream_alignment_scores
from workbench.benchmarks._capture_ranks import timed_rounds
from workbench.benchmarks.align_rows import BATCH, N_FULL, N_QUICK, setup
from workbench.core import distributed
from workbench.core.distributed import RankInfo


def main(out: str, quick: bool, runs: int) -> None:
    device = distributed.init_if_launched(torch.device("cpu"))
    n = N_QUICK if quick else N_FULL
    model, rows, dirs, objective = setup(quick, n, device)
    batch = BATCH if not quick else 4

    def work(target: Path, ranks: RankInfo | None) -> None:
        stream_alignment_scores(model, rows, dirs, objective, target, RowScoresConfig(batch_size=batch), ranks=ranks)

    timed_rounds(work, out, runs, label="align-ranks", rows=n, jobs=-(-n // batch))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "quick", int(sys.argv[3]))
