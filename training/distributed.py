"""Training on several processes with torch's DistributedDataParallel, as `torchrun` starts
them: `torchrun --standalone --nproc-per-node N -m latentwire.runtime.cli train ...`.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and the rendezvous address) in each
process's environment; `session()` joins the process group from them (gloo on the CPU,
nccl on CUDA with device cuda:LOCAL_RANK). Without torchrun nothing here does anything:
`World()` is one process of rank 0.

What keeps the ranks in step (a rank that decides alone leaves the others waiting in a
collective for ever):
- the same shuffled order on every rank (shared seed), split by `shard()`;
- the same number of steps on every rank (the shards are padded to equal length);
- decisions (early stopping, blow-up recovery) from values that rank 0 broadcasts;
- rank 0 alone writes checkpoints (the others wait at a barrier) and the package (the
  others have ended by then, with status 0).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import torch
from torch import distributed as dist
from torch import nn

from latentwire.runtime.errors import DataError, LatentwireError

log = logging.getLogger("latentwire.training")

T = TypeVar("T")
P = ParamSpec("P")

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    local_rank: int = 0
    """Rank on this machine: the CUDA device index."""
    size: int = 1
    backend: str | None = None
    """"gloo" or "nccl" when a process group is up, else None."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, checkpoints and exports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> bool:
    """Whether torchrun (or another launcher that sets its variables) started us."""
    return all(v in os.environ for v in TORCHRUN_VARS)


def local_world_size() -> int:
    """Processes on this machine (LOCAL_WORLD_SIZE from torchrun; 1 otherwise)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def current() -> World:
    """The process group this process is in, or a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(
        rank=dist.get_rank(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        size=dist.get_world_size(),
        backend=str(dist.get_backend()),
    )


@contextlib.contextmanager
def session(device_type: str) -> Iterator[World]:
    """Join the torchrun process group for the block (gloo, or nccl for "cuda"), and leave
    it at the end; a single process without torchrun, or the group a caller already
    joined (left to that caller)."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise DataError("this torch build has no torch.distributed: run without torchrun")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(_own_gpu())
    dist.init_process_group(backend)
    world = current()
    if not world.is_main:  # rank 0 speaks for all; the others' warnings repeat its own
        logging.getLogger("latentwire").setLevel(logging.ERROR)
    try:
        yield world
    finally:
        dist.destroy_process_group()


def _own_gpu() -> int:
    """LOCAL_RANK, checked against the GPUs torch sees (nccl wants one GPU per process)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus == 0:
        raise DataError("--device cuda was asked for but torch sees no CUDA device")
    if local_world_size() > gpus:
        raise DataError(
            f"torchrun started {local_world_size()} processes on this machine and torch sees "
            f"{gpus} GPU(s): nccl needs one GPU per process (--nproc-per-node {gpus}, or "
            "--device cpu for gloo)"
        )
    return int(os.environ["LOCAL_RANK"])


def joins_torchrun(fn: Callable[P, T]) -> Callable[P, T]:
    """`fn` run inside `session()`, for the device its `device` keyword names (auto: CUDA
    when torch sees one)."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        device = str(kwargs.get("device", "auto"))
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        with session("cuda" if cuda else "cpu"):
            return fn(*args, **kwargs)

    return run


def device_of(device: torch.device, world: World) -> torch.device:
    """CUDA under torchrun: this rank's own GPU, cuda:LOCAL_RANK."""
    if device.type == "cuda" and world.backend is not None:
        return torch.device("cuda", world.local_rank)
    return device


def wrap(module: nn.Module, world: World) -> nn.Module:
    """`module` in DistributedDataParallel when there are several ranks (its parameters
    are broadcast from rank 0 here), else `module` itself. Every parameter takes part in
    each step, so unused-parameter detection stays off."""
    if not world.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    params = next(module.parameters())
    ids = [params.device.index] if params.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def shard(order: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's part of `order` (identical on every rank): padded with its own first
    entries to a multiple of the world size, then every size-th entry from `rank`, as
    torch's DistributedSampler does. The union over ranks of their j-th batches of b is
    the j-th global batch of size * b in `order`."""
    if not world.distributed:
        return order
    pad = -len(order) % world.size
    if pad:
        order = torch.cat([order, order[:pad]])
    return order[world.rank :: world.size]


def per_rank_batch(batch_size: int, world: World) -> int:
    """The per-rank batch: --batch-size stays the global batch."""
    if batch_size < world.size:
        raise DataError(
            f"--batch-size {batch_size} is the global batch and must be at least the number "
            f"of processes ({world.size})"
        )
    if batch_size % world.size:
        log.warning(
            "--batch-size %d is not a multiple of the %d processes: the global batch is %d",
            batch_size,
            world.size,
            batch_size // world.size * world.size,
        )
    return batch_size // world.size


def _tensor(values: Sequence[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.float64, device=device)


def _collective_device(world: World) -> torch.device:
    if world.backend == "nccl":
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


def broadcast_floats(values: Sequence[float], world: World) -> list[float]:
    """Rank 0's `values` on every rank (decisions then agree exactly)."""
    if not world.distributed:
        return list(values)
    t = _tensor(values, _collective_device(world))
    dist.broadcast(t, src=0)
    return [float(v) for v in t.cpu()]


def sum_floats(values: Sequence[float], world: World) -> list[float]:
    """Element-wise sums over the ranks."""
    if not world.distributed:
        return list(values)
    t = _tensor(values, _collective_device(world))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu()]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def on_main(fn: Callable[[], T], world: World) -> T:
    """`fn()` run on rank 0, its result (or its latentwire error, raised again) on every
    rank: e.g. reading a checkpoint that only rank 0's disk holds."""
    if not world.distributed:
        return fn()
    box: list[Any] = [None]
    if world.is_main:
        try:
            box[0] = ("ok", fn())
        except LatentwireError as exc:
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value  # type: ignore[no-any-return]


def finish_worker(world: World) -> None:
    """Ranks other than 0, after training (past the last checkpoint's barrier): end the
    process with status 0, leaving the process group on the way out. They do not wait for
    rank 0's export: a barrier there would time out (30 min for gloo, 10 for nccl) on a
    long export, and torchrun stops every process when one fails."""
    if not world.is_main:
        raise SystemExit(0)
