"""Multi-process data-parallel training under `torchrun` (several GPUs, or CPU processes on
the gloo backend).

Every rank builds the same batch (same seeds), trains on its own slice of it, and the
gradients are summed or averaged across ranks before the optimizer step, so all ranks hold
identical weights after every step. Only rank 0 writes anything: MLflow runs, registry
entries, files. Without `torchrun` (WORLD_SIZE unset) everything here is a no-op.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init() -> DistContext:
    """Join the process group `torchrun` set up (idempotent); gloo on CPU, NCCL on GPUs."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    ctx = DistContext(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(ctx.local_rank)
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    return ctx


def shard(items: Sequence, ctx: DistContext) -> list:
    """This rank's slice of a batch (every rank gets a disjoint share)."""
    return list(items[ctx.rank::ctx.world_size]) if ctx.enabled else list(items)


def reduce_gradients(params: Iterable[torch.nn.Parameter], ctx: DistContext, average: bool = True) -> None:
    """Sum (or average) the gradients of `params` across ranks, in place."""
    if not ctx.enabled:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)               # a rank whose slice missed this parameter
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        if average:
            p.grad /= ctx.world_size


def all_sum(value: float, ctx: DistContext) -> float:
    """A number summed over ranks (e.g. this rank's share of a loss or a token count)."""
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t)


def broadcast_parameters(module: torch.nn.Module, ctx: DistContext) -> None:
    """Start every rank from rank 0's weights."""
    if not ctx.enabled:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for p in module.parameters():
            dist.broadcast(p.data, 0)


def launch(module: str, args: Sequence[str], nproc: int, cwd: str | None = None,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <module> <args>` as `nproc` processes with torchrun (one machine)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", module, *args]
    return subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, check=True)
