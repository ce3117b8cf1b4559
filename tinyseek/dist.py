"""Ranks and worlds: torchrun's environment, the process group, and the few collectives every command shares.

Every command can run under `torchrun` (one process per device; gloo on CPU, NCCL on GPUs). What a command
needs to know about the other processes is here, below everything that uses it (the engines' evaluation,
rejection sampling, the training loop), so that none of them imports the training code to find its rank:

- `DistInfo` / `init_distributed`: this process's rank, the world size and its device; the process group is
  started once, when WORLD_SIZE > 1, reused by every later stage in the same process, and destroyed at exit
  (left to the interpreter's teardown, gloo's worker threads abort the process now and then: SIGABRT,
  "terminate called without an active exception", after the work is done).
- `world_size()` reads torchrun's environment without starting anything, so configs can refuse a world
  size that does not divide their global batch before any work (`check_divides`).
- `shard(n)`: the contiguous slice of n items (prompts, problems) this rank takes; `gather(items)`: every
  rank's items, concatenated in rank order, on every rank. Together they make a sharded loop give the same
  list as the one-process loop, in the same order.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from tinyseek.config import ConfigError
from tinyseek.errors import TinyseekError


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def world_size() -> int:
    """Processes in this run, from torchrun's environment (1 outside torchrun); starts nothing."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank from torchrun's environment (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def check_divides(n: int, field: str, per: int = 1, what: str = "processes") -> None:
    """Refuse a global count `n` that `per` x the world size does not divide: a one-line error naming the field,
    raised on every rank alike (they all read the same config and environment) before any work."""
    w = world_size()
    if n % (per * w):
        unit = f"grad_accum x {what} = {per} x {w} = {per * w}" if per > 1 else f"the number of {what}, {w}"
        raise ConfigError(f"{field}: {n} is not a multiple of {unit} (each process takes an equal share)")


def init_distributed(device: str = "auto") -> DistInfo:
    """Read torchrun's environment; start the process group (NCCL on GPU, gloo on CPU) when world > 1."""
    world = world_size()
    rank_ = rank()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise TinyseekError("device: cuda was asked for but no GPU is available")
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not torch_dist.is_initialized():
        _check_restart_store()
        torch_dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        atexit.register(_destroy_process_group)
    return DistInfo(rank=rank_, world=world, local_rank=local, device=dev)


def _check_restart_store() -> None:
    """Refuse, in one line, to start the process group in workers that `torchrun --max-restarts` restarted on the
    rendezvous store it shares with them (torch's default): the store still holds the previous attempt's keys, so
    gloo connects to the dead workers' addresses and every rank waits for the 30-minute timeout (seen on torch 2.13;
    pytorch/pytorch#135712). TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 gives each rendezvous round its own keys."""
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if restarted and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        raise TinyseekError(
            "torchrun restarted the workers on its shared rendezvous store, where the process group would hang on "
            "the previous attempt's addresses: run torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 set"
        )


def _destroy_process_group() -> None:
    """Tear the process group down while the interpreter is whole (registered at exit by `init_distributed`)."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def shard(n: int, d: DistInfo) -> range:
    """The indices of n items this rank takes: contiguous, the first n % world ranks one more (none: empty)."""
    base, extra = divmod(n, d.world)
    start = d.rank * base + min(d.rank, extra)
    return range(start, start + base + (d.rank < extra))


def gather(items: list, d: DistInfo) -> list:
    """Every rank's `items` (picklable), concatenated in rank order, on every rank (identity on one process)."""
    if not d.enabled:
        return list(items)
    parts: list = [None] * d.world
    torch_dist.all_gather_object(parts, list(items))
    return [x for part in parts for x in part]


def all_sum(x, d: DistInfo):
    """A float or tensor summed over ranks (float64 for floats), on every rank."""
    if not d.enabled:
        return x
    t = torch.as_tensor(x, dtype=torch.float64 if not torch.is_tensor(x) else x.dtype, device=d.device).clone()
    torch_dist.all_reduce(t)
    return t if torch.is_tensor(x) else t.item()


def barrier(d: DistInfo) -> None:
    if d.enabled:
        torch_dist.barrier()
