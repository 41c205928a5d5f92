"""Process set-up shared by every training run: torchrun's environment, the stop flag, seeds, step timing.

Single process on the CPU or one GPU; many GPUs or nodes through ``torchrun`` (NCCL on GPUs, gloo
on CPUs). Nothing here synchronises the device per step: the stop flag travels on a CPU (gloo)
group and step times are CUDA events read at log intervals.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Distributed", "StepTimer", "mix_seed", "torch_device"]


def mix_seed(*values: int) -> int:
    """A 32-bit seed derived from several integers (stable across runs and machines)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


def torch_device(device: str | torch.device | None, local_rank: int | None = None) -> torch.device:
    """The torch device of a run or an extraction, checked: the one rule of every ``device`` argument.

    Args:
        device: "cpu", "cuda", "cuda:N", a ``torch.device``, or None (CUDA when torch sees a GPU,
            else the CPU).
        local_rank: this process's GPU under torchrun: "cuda" and None then mean cuda:LOCAL_RANK.

    Raises:
        ValueError: a device other than the CPU or a CUDA GPU, or a GPU torch does not see.

    Example:
        >>> torch_device("cpu")
        device(type='cpu')
        >>> torch_device("tpu")
        Traceback (most recent call last):
        ...
        ValueError: device must be cpu, cuda or cuda:N, got 'tpu'
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and local_rank is not None:
        device = f"cuda:{local_rank}"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        seen = f"{torch.cuda.device_count()} CUDA devices" if torch.cuda.is_available() else "no CUDA device"
        raise ValueError(f"device {device!r} asked for but torch sees {seen} (cion-fast info)")
    return resolved


class Distributed:
    """torch.distributed set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).

    Args:
        device: "cpu", "cuda" (this process's GPU, cuda:LOCAL_RANK), "cuda:N" or None (CUDA when available).
        backend: the process group's backend; default NCCL on GPUs, gloo on CPUs (gloo for jobs
            that only meet at barriers, such as sharded extraction).
        timeout_s: how long a collective may wait (default torch's); jobs whose ranks meet only
            once at the end of long, uneven work (a rerun of sharded extraction) need more.
    """

    def __init__(self, device: str | None, backend: str | None = None, timeout_s: float | None = None):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.world_size = world
        self.owns_group = False
        self.device = torch_device(device, self.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.enabled = world > 1
        self.flag_group = None
        if self.enabled:
            if not dist.is_initialized():
                backend = backend or ("nccl" if self.device.type == "cuda" else "gloo")
                if timeout_s is None:
                    dist.init_process_group(backend=backend)
                else:
                    import datetime

                    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
                self.owns_group = True
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
            # A CPU group for the stop flag: checking it every step needs no GPU synchronisation.
            self.flag_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.enabled:
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.flag_group)
        return bool(value.item())

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world_size
        return value

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


class StepTimer:
    """Time spent producing views and whole steps (CUDA events on GPUs, so no per-step sync)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.reset()

    def reset(self) -> None:
        self.pending: list[tuple[Any, Any, Any]] = []
        self.view_s = 0.0
        self.step_s = 0.0
        self.steps = 0

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self):
        self._start = self._mark()

    def views_done(self):
        self._views = self._mark()

    def step_done(self):
        self.pending.append((self._start, self._views, self._mark()))
        self.steps += 1

    def collect(self) -> None:
        for start, views, end in self.pending:
            if self.cuda:
                end.synchronize()
                self.view_s += start.elapsed_time(views) / 1e3
                self.step_s += start.elapsed_time(end) / 1e3
            else:
                self.view_s += views - start
                self.step_s += end - start
        self.pending = []

    @property
    def view_share(self) -> float:
        return self.view_s / self.step_s if self.step_s > 0 else float("nan")
