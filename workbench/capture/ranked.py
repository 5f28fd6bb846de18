"""One rank's part of a `torchrun` capture: who opens the artifact, who writes what, who finishes.

Rank 0 opens the artifact with the `StoreWriter` (the lock, the clean-up of an interrupted run,
the refusal of a different capture) and only then tells the other ranks to start, so its
clean-up never meets their files mid-write. Every rank writes the shards of its own jobs (rank
0 through its writer, rank R > 0 through a `RankWriter` with its own ledger), skipping those
any ledger vouches for. After all ranks succeed, rank 0 reads every ledger and writes the
manifest, then tells the others it is there. A rank that fails tells the others (they stop
with an error naming the cause) instead of leaving them at a barrier; a rank that is killed is
noticed by `torchrun`, which stops the rest. Rerunning the command finishes the missing shards.

Only integers are exchanged (`workbench.core.distributed`), nothing pickled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.capture.store import ActivationStore, RankWriter, ShardSpec, StoreWriter
from workbench.core import distributed
from workbench.core.distributed import RankInfo
from workbench.core.errors import ArtifactError

Job = tuple[str, int]  # (model, chunk index)
_GO, _COMPLETE, _FAILED = 0, 1, 2  # what rank 0 tells the others


def _stopped(out_dir: Path, what: str) -> ArtifactError:
    return ArtifactError(f"The torchrun capture into {out_dir} stopped: {what} (its own error message says why). "
                         "Fix that and run the same command again; the shards already written are kept.")


def _work(write: Callable[[], None], out_dir: Path) -> None:
    """Run this rank's part, then agree with the others that every rank succeeded."""
    try:
        write()
    except BaseException:
        distributed.all_ok(False)
        raise
    if not distributed.all_ok(True):
        raise _stopped(out_dir, "another rank failed")


def capture_ranked(
    out_dir: Path,
    manifest_plan: dict[str, Any],
    info: RankInfo,
    *,
    jobs: list[Job],
    specs: list[ShardSpec],
    overwrite: bool,
    write_inputs: Callable[[StoreWriter], str],
    write_jobs: Callable[[StoreWriter, list[Job], bool], None],
    announce: Callable[[], None] | None,
    progress: bool,
    reopen: Callable[[Path], Any] = ActivationStore.open,
) -> Any:
    """Capture as rank `info.rank` of `info.world_size`: job i (in capture order) is done by rank
    i % world_size. `write_jobs(writer, jobs, progress)` captures and writes those jobs' shards;
    `specs` are every shard of the capture, for the manifest; `reopen(out_dir)` opens the finished
    artifact (another store kind written with the same writers, e.g. alignment scores, gives its own)."""
    mine = [jobs[i] for i in distributed.shard_slice(len(jobs), info)]
    if info.is_main:
        with contextlib.ExitStack() as stack:
            try:
                writer = stack.enter_context(StoreWriter(out_dir, manifest_plan, overwrite=overwrite))
                state = _COMPLETE if writer.complete else _GO
            except BaseException:
                distributed.broadcast_int(_FAILED)
                raise
            distributed.broadcast_int(state)
            if state == _GO:
                sha: list[str] = []

                def write() -> None:
                    if announce is not None:
                        announce()
                    sha.append(write_inputs(writer))
                    write_jobs(writer, mine, progress)

                _work(write, out_dir)
                try:
                    writer.reload_ledger()  # the other ranks' shards, from their ledgers
                    writer.finish(specs, sha[0])
                except BaseException:
                    distributed.broadcast_int(_FAILED)
                    raise
                distributed.broadcast_int(_GO)
        return reopen(out_dir)
    state = distributed.broadcast_int(_GO)
    if state == _FAILED:
        raise _stopped(out_dir, "rank 0 could not open the artifact")
    if state == _GO:
        def write_mine() -> None:
            with RankWriter(out_dir, manifest_plan, info.rank) as writer:
                write_jobs(writer, mine, False)

        _work(write_mine, out_dir)
        if distributed.broadcast_int(_GO) != _GO:
            raise _stopped(out_dir, "rank 0 could not write the manifest")
    return reopen(out_dir)
