"""Data parallelism over rows with PyTorch's own launcher (`torchrun`), in one place.

`torchrun --nproc-per-node N -m workbench.capture ...` starts N copies of a command with RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in their environment. A command calls
`init_if_launched(device)` once: without those variables (a plain `python -m ...`) it does
nothing and the run is the one-process run of before; under the launcher it joins the process
group (`gloo` on CPU, `nccl` on CUDA, each rank on `cuda:LOCAL_RANK`). Work is split by
`shard_slice`: item i goes to rank i % world_size, so each item is computed exactly as one
process computes it and the bytes written do not depend on the number of processes.

Only tensor collectives are used (no pickled objects cross between ranks).

>>> shard_slice(5, RankInfo(rank=1, world_size=2, local_rank=1))
[1, 3]
>>> rank_info({}).world_size
1
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from workbench.core.errors import ConfigError

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class RankInfo:
    """This process's place among the processes of one run (0 of 1 without a launcher)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The rank that writes what is written once (a manifest, a report)."""
        return self.rank == 0


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} in the environment is not a whole number. It is set by torchrun; "
                          "launch with torchrun --nproc-per-node N, or unset it for a one-process run.") from None


def rank_info(env: Mapping[str, str] | None = None) -> RankInfo:
    """The launcher's RANK / WORLD_SIZE / LOCAL_RANK (0 / 1 / 0 when absent), checked."""
    env = os.environ if env is None else env
    info = RankInfo(_env_int(env, "RANK", 0), _env_int(env, "WORLD_SIZE", 1), _env_int(env, "LOCAL_RANK", 0))
    if info.world_size < 1 or not 0 <= info.rank < info.world_size or info.local_rank < 0:
        raise ConfigError(f"RANK={info.rank}, WORLD_SIZE={info.world_size}, LOCAL_RANK={info.local_rank} in the "
                          "environment are inconsistent (need 0 <= RANK < WORLD_SIZE). Launch with torchrun.")
    return info


def current() -> RankInfo:
    """This process's rank in the initialised process group, or 0 of 1 when there is none."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return RankInfo()
    return RankInfo(dist.get_rank(), dist.get_world_size(), rank_info().local_rank)


def init_if_launched(device: torch.device) -> torch.device:
    """Join the launcher's process group when run under torchrun with WORLD_SIZE > 1, and return
    the device this rank runs on (`cuda:LOCAL_RANK` for a CUDA device, else `device`)."""
    info = rank_info()
    if not info.distributed:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={info.local_rank} but this machine has {torch.cuda.device_count()} CUDA "
                              "devices. Launch at most one process per GPU (torchrun --nproc-per-node <= GPUs).")
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shard_slice(n_items: int, info: RankInfo | None = None) -> list[int]:
    """The items (0..n_items-1) this rank does: item i goes to rank i % world_size."""
    info = info or current()
    return list(range(info.rank, n_items, info.world_size))


def _device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_int(value: int, src: int = 0) -> int:
    """`value` of rank `src`, on every rank (itself without a process group)."""
    if not current().distributed:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=_device())
    dist.broadcast(t, src)
    return int(t.item())


def all_ok(ok: bool) -> bool:
    """True on every rank when every rank says True (also a barrier)."""
    if not current().distributed:
        return ok
    import torch.distributed as dist

    t = torch.tensor([int(ok)], dtype=torch.int64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def barrier() -> None:
    """Wait until every rank gets here (nothing without a process group)."""
    all_ok(True)


def shutdown() -> None:
    """Leave the process group, when this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
