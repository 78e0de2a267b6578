"""Training under ``torchrun``: the process group, the device of each rank, and gathering
evaluation results so every rank takes the same decisions while rank 0 alone writes files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process' place in the job (rank 0 of 1 outside ``torchrun``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(device_type: str) -> Ranks:
    """Join the ``torchrun`` job named by the environment (RANK, WORLD_SIZE, LOCAL_RANK):
    NCCL on GPUs, gloo on CPUs. Without those variables, a single process."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return Ranks()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), local)


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def sum_all(ranks: Ranks, *values: float) -> tuple[float, ...]:
    """Sum numbers over ranks (loss totals, sample counts)."""
    if not ranks.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return tuple(t.tolist())


def gather_predictions(ranks: Ranks, out: dict[str, Any]) -> dict[str, Any]:
    """Every rank's predictions joined in rank order, on every rank (evaluation is small)."""
    if not ranks.distributed:
        return out
    parts: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(parts, out)
    total = sum(p["loss"] * p["weights"].sum() for p in parts)
    weight = sum(p["weights"].sum() for p in parts)
    joined: dict[str, Any] = {
        name: np.concatenate([p[name] for p in parts])
        for name, value in out.items()
        if isinstance(value, np.ndarray)  # scores, targets, weights; segmentation's probs
    }
    keys = [k for p in parts for k in p["keys"]]
    return {**joined, "keys": keys, "loss": float(total / max(weight, 1.0))}
