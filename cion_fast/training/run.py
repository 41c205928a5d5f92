"""The one training loop: every run (pre-training with CION, DINO or UP-ReID, fine-tuning) is a
:class:`TrainingRun` that supplies its networks and one step; the loop, checkpoints, resume, log,
progress bar, signals and determinism are written here once.

A subclass implements:

* ``_build()``: networks, optimiser, ``self.plan`` (a :class:`~cion_fast.training.sampler.TrainingPlan`),
  ``self.scaler`` (a ``torch.amp.GradScaler``, disabled when there is no AMP), ``self.backbone_config``;
  it may read ``self.resume_state`` (the checkpoint's state.json, None for a new run) to rebuild the
  network of a resumed run;
* ``_train_step(step)``: data, forward, :func:`cion_fast.training.optim.optimizer_step`; returns
  (loss, metrics) as tensors; calls ``self.timer.views_done()`` once its inputs are ready;
* ``_checkpoint_module()``: the module whose state dict is the checkpoint (with the optimiser's);
* ``export_prefix`` and ``checkpoint_format`` (class attributes), ``_data_fingerprint()``;
* optionally ``_log_fields(step)`` (schedule values for the log line), ``_extra_state()``,
  ``_record_warnings(record)``, ``_progress_postfix(record)``, ``_summary(record)``,
  ``_step_seed(step)``, ``deterministic``.

Reproducibility: the sampler is a pure function of (seed, epoch) and torch's RNG is re-seeded from
``_step_seed(step)`` before every step, so a checkpoint needs only its tensors and step to continue
the same run: on the CPU (with deterministic algorithms where the run asks for them) a resumed run
ends with the same parameters, bit for bit, as an uninterrupted one.

Layout of a run directory: see :mod:`cion_fast.training.checkpoint`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from cion_fast._io import atomic_write, atomic_write_json
from cion_fast._progress import progress_bar
from cion_fast.training.checkpoint import (latest_checkpoint, list_checkpoints, load_optimizer_tensors, optimizer_tensors,
                                          read_checkpoint, remove_stale_temporaries, write_checkpoint)
from cion_fast.training.distributed import Distributed, StepTimer

__all__ = ["TrainingRun"]


class TrainingRun:
    """A training run in a directory: resume, the step loop, checkpoints, log (see the module doc).

    Args:
        config: the run's config (a dataclass with ``to_dict`` / ``from_dict`` / ``differences``
            and the fields ``device``, ``checkpoint_every``, ``keep_checkpoints``, ``log_every``,
            ``progress``). With ``resume=True`` it may be None (the checkpoint's is used); when
            given it must agree with the checkpoint's except for the fields its ``differences``
            ignores.
        out_dir: the run directory. A new run refuses one that already holds checkpoints; a
            path that is a file is refused at once.
        resume: continue from the newest checkpoint in ``out_dir`` (FileNotFoundError if none).

    Subclasses call ``super().__init__`` after checking their data (``_data_fingerprint`` is
    compared with the checkpoint's); nothing is written before :meth:`fit`.
    """

    config_class: type = object
    checkpoint_format = "cion_fast.training.checkpoint/1"
    export_prefix = ""
    progress_name = "train"
    deterministic = False

    def __init__(self, config: Any, out_dir: str | os.PathLike, resume: bool = False):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():  # refused now, not when fit writes its first file
            raise NotADirectoryError(f"out_dir {self.out_dir} is a file, not a run directory")
        self.resume_state: dict[str, Any] | None = None
        self._resume_tensors: dict[str, torch.Tensor] | None = None
        if resume:
            found = latest_checkpoint(self.out_dir)
            if found is None:
                raise FileNotFoundError(f"out_dir {self.out_dir}: no checkpoint to resume from")
            self._resume_tensors, self.resume_state = read_checkpoint(found)
            saved = self.config_class.from_dict(self.resume_state["config"])
            if config is None:
                config = saved
            elif isinstance(config, self.config_class):
                diff = saved.differences(config)
                if diff:
                    listed = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
                    raise ValueError(f"config differs from the checkpoint's in {found}: {listed}")
        else:
            if config is None:
                raise ValueError("config is required for a new run (it may be None only with resume=True)")
            if list_checkpoints(self.out_dir):
                raise ValueError(f"out_dir {self.out_dir} already holds checkpoints: pass resume=True (--resume) or choose another directory")
        if not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}, got {type(config).__name__}")
        config.validate()
        self.config = config

    def _start(self) -> None:
        """Data fingerprint check, process group, networks (``_build``), restored state: the second
        half of a subclass's constructor."""
        self.fingerprint = self._data_fingerprint()
        if self.resume_state is not None and self.resume_state.get("data") != self.fingerprint:
            raise ValueError(f"data/labels differ from the ones the checkpoint was trained on: checkpoint "
                             f"{self.resume_state.get('data')}, now {self.fingerprint}")
        if self.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
        self.dist = Distributed(self.config.device)
        try:
            self._build()
            self.timer = StepTimer(self.dist.device)
            self.step = 0
            if self.resume_state is not None:
                self._restore()
        except BaseException:
            self.dist.close()
            raise

    # ------------------------------------------------------------ hooks
    def _build(self) -> None:
        raise NotImplementedError

    def _train_step(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def _checkpoint_module(self) -> torch.nn.Module:
        raise NotImplementedError

    def _data_fingerprint(self) -> Any:
        raise NotImplementedError

    def _step_seed(self, step: int) -> int:
        raise NotImplementedError

    def _log_fields(self, step: int) -> dict[str, Any]:
        """Schedule values at ``step`` for the log line."""
        return {}

    def _extra_state(self) -> dict[str, Any]:
        """More JSON-able state for state.json."""
        return {}

    def _record_warnings(self, record: dict[str, Any]) -> list[str]:
        """Warnings a log record calls for (the collapse monitors of distillation)."""
        return []

    def _progress_postfix(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"loss": f"{record['loss']:.4f}"}

    def _summary(self, record: dict[str, Any]) -> dict[str, Any]:
        """More entries for :meth:`fit`'s return value from the last log record."""
        return {}

    # ------------------------------------------------------------ checkpoint
    def _state(self) -> dict[str, Any]:
        return {
            "format": self.checkpoint_format,
            "config": self.config.to_dict(),
            "step": self.step,
            "epoch": self.plan.state(self.step)["epoch"],
            "sampler": self.plan.state(self.step),
            "optimizer": {"param_groups": self.optimizer.state_dict()["param_groups"]},
            "scaler": self.scaler.state_dict(),
            "data": self.fingerprint,
            "world_size": self.dist.world_size,
            "backbone_config": self.backbone_config,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **self._extra_state(),
        }

    def save_checkpoint(self) -> Path | None:
        """Writes a checkpoint of the current step (rank 0 writes; every rank waits for it)."""
        path = None
        if self.dist.is_main:
            tensors = {**self._checkpoint_module().state_dict(), **optimizer_tensors(self.optimizer)}
            path = write_checkpoint(self.out_dir, self.step, tensors, self._state(), self.backbone_config,
                                    self.export_prefix, keep=self.config.keep_checkpoints)
        self.dist.barrier()
        return path

    def _restore(self) -> None:
        state, tensors = self.resume_state, self._resume_tensors
        if state.get("world_size", 1) != self.dist.world_size:
            raise ValueError(f"the checkpoint was trained with {state.get('world_size')} processes, this run has "
                             f"{self.dist.world_size}: the global batch and sampler would change")
        module = self._checkpoint_module()
        own = module.state_dict()
        missing = sorted(k for k in own if k not in tensors)
        if missing:
            raise ValueError(f"checkpoint {state['path']} is missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''} "
                             f"({len(missing)} in all)")
        wrong = [k for k in own if tensors[k].shape != own[k].shape]
        if wrong:
            raise ValueError(f"checkpoint {state['path']} has tensors of the wrong shape: {wrong[:8]}")
        module.load_state_dict({k: tensors[k] for k in own}, strict=True)
        load_optimizer_tensors(self.optimizer, tensors, state["optimizer"]["param_groups"], state["path"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        if self.step > self.plan.total_steps:
            raise ValueError(f"the checkpoint is at step {self.step}, past this run's length of {self.plan.total_steps} steps: "
                             "a resumed run may grow, not shrink")
        # The same plan must stand where the checkpoint left it; a run whose length changed on resume
        # (FinetuneConfig allows it) has a new plan, whose epochs no longer end where the old one's did.
        saved_plan = state.get("sampler", {})
        if (self.step < self.plan.total_steps and saved_plan.get("total_steps") == self.plan.total_steps
                and saved_plan != self.plan.state(self.step)):
            raise ValueError(f"sampler state differs from the checkpoint's: {state['sampler']} vs {self.plan.state(self.step)}")
        self._resume_tensors = None  # the tensors now live in the networks

    # -------------------------------------------------------------- training
    def train_step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimisation step at ``self.step`` (then ``self.step += 1``); returns the detached loss and metrics."""
        step = self.step
        torch.manual_seed(self._step_seed(step))
        self.timer.start()
        loss, metrics = self._train_step(step)
        self.timer.step_done()
        self.step += 1
        return loss.detach(), metrics

    @contextmanager
    def _signals(self):
        """SIGINT/SIGTERM set a flag; the loop writes a checkpoint and returns at the next step."""
        self.stop_signal: int | None = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            self.stop_signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    @contextmanager
    def _determinism(self):
        if not self.deterministic:
            yield
            return
        previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        # Exact on the CPU. On GPUs some kernels (roi_align's backward, scatter-adds) have no
        # deterministic version: warn instead of failing there.
        torch.use_deterministic_algorithms(True, warn_only=self.dist.device.type == "cuda")
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])

    def _truncate_log(self, step: int) -> None:
        """Drops the log lines after ``step`` (where this call starts): a resumed run logs those
        steps again, so each step appears once. A line cut by a kill is dropped too."""
        path = self.out_dir / "log.jsonl"
        if not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        atomic_write(path, lambda tmp: tmp.write_text("".join(f"{line}\n" for line in kept)))

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _write_config_copy(self) -> None:
        """RUN/config.json: the run's config for people and tools. The checkpoint holds the config a
        resume uses; a copy that a resume finds missing, unreadable or stale is rewritten from it
        (with a warning when it was damaged), so the directory always describes the run."""
        path = self.out_dir / "config.json"
        current = json.loads(json.dumps(self.config.to_dict()))
        if self.resume_state is not None and path.exists():
            try:
                if json.loads(path.read_text()) == current:
                    return
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                warnings.warn(f"{path} was unreadable ({error}); rewritten from the checkpoint's config", stacklevel=4)
        atomic_write_json(path, current)

    def fit(self, until_step: int | None = None) -> dict[str, Any]:
        """Trains from the current step to the end of the plan (or to ``until_step``).

        A checkpoint is written every ``checkpoint_every`` steps and when the run stops (end,
        ``until_step``, SIGINT/SIGTERM); the log line of every ``log_every``-th step (means over
        the interval) goes to ``log.jsonl``. After a signal the method returns normally with
        ``interrupted`` set.

        Returns:
            dict with ``step``, ``total_steps``, ``finished``, ``interrupted`` (signal number or
            None), ``rank``, ``world_size``, ``checkpoint`` (path str of the last checkpoint),
            ``loss`` (mean over the last log interval), ``images_per_s`` (global images per second
            of step time, checkpoint writes excluded), ``view_share`` (share of step time spent
            producing the inputs), ``seconds`` (wall time of the call), plus the subclass's entries.
        """
        cfg, total = self.config, self.plan.total_steps
        stop_at = total if until_step is None else int(until_step)
        if not self.step <= stop_at <= total:
            raise ValueError(f"until_step must be in [{self.step}, {total}], got {until_step}")
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.out_dir)
            self._truncate_log(self.step)  # a resumed run (or a new one after a kill before its first checkpoint)
            self._write_config_copy()
        self.timer.reset()
        whole = StepTimer(self.dist.device)
        progress = None
        if cfg.progress and self.dist.is_main:
            progress = progress_bar(total, self.progress_name, "step", initial=self.step)
        start_time = time.perf_counter()
        start_step = self.step
        interval_start, interval_steps = time.perf_counter(), 0
        loss_sum: torch.Tensor | None = None
        metric_sums: dict[str, torch.Tensor] = {}
        last: dict[str, Any] = {"loss": float("nan")}
        checkpoint = None
        warned = False
        global_batch = cfg.batch_size * self.dist.world_size
        self._checkpoint_module().train()
        try:
            with self._signals(), self._determinism():
                while self.step < stop_at:
                    loss, metrics = self.train_step()
                    loss_sum = loss if loss_sum is None else loss_sum + loss
                    for name, value in metrics.items():
                        metric_sums[name] = metric_sums.get(name, 0) + value
                    interval_steps += 1
                    if progress is not None:
                        progress.update(1)
                    stopping = self.dist.any(self.stop_signal is not None)
                    if self.step % cfg.log_every == 0 or self.step == stop_at or stopping:
                        self.timer.collect()
                        whole.view_s += self.timer.view_s
                        whole.step_s += self.timer.step_s
                        elapsed = time.perf_counter() - interval_start
                        mean_loss = float(self.dist.mean(loss_sum.float() / interval_steps).item())
                        if not math.isfinite(mean_loss):
                            raise FloatingPointError(f"loss is {mean_loss} at step {self.step}; last checkpoint: "
                                                     f"{checkpoint or latest_checkpoint(self.out_dir)}")
                        last = {
                            "step": self.step, "epoch": self.plan.epoch_at_step(self.step - 1), "k": self.plan.k_at_step(self.step - 1),
                            "loss": mean_loss, **{n: float(self.dist.mean(v.float() / interval_steps).item()) for n, v in metric_sums.items()},
                            **self._log_fields(self.step - 1), "images_per_s": interval_steps * global_batch / elapsed,
                            "view_share": self.timer.view_share, "elapsed_s": time.perf_counter() - start_time,
                        }
                        found = self._record_warnings(last)
                        if found:
                            last["warnings"] = found
                        if self.dist.is_main:
                            self._log(last)
                            if found and not warned:  # once per call; every line is in the log
                                warnings.warn(found[0] + " (further reports go to log.jsonl only)", stacklevel=2)
                                warned = True
                        if progress is not None:
                            progress.set_postfix(**self._progress_postfix(last), img_s=f"{last['images_per_s']:.1f}",
                                                 data=f"{100 * last['view_share']:.0f}%")
                        self.timer.reset()
                        interval_start, interval_steps, loss_sum, metric_sums = time.perf_counter(), 0, None, {}
                    if stopping:
                        self.stop_signal = self.stop_signal or signal.SIGTERM
                        break
                    if self.step % cfg.checkpoint_every == 0 and self.step < stop_at:
                        self._check_finite(loss_sum, checkpoint)  # never checkpoint weights a NaN step wrote
                        checkpoint = self.save_checkpoint()
                checkpoint = self.save_checkpoint()
        finally:
            if progress is not None:
                progress.close()
        done = self.step - start_step
        return {
            "step": self.step, "total_steps": total, "finished": self.step >= total, "interrupted": self.stop_signal,
            "rank": self.dist.rank, "world_size": self.dist.world_size,
            "checkpoint": str(checkpoint) if checkpoint else None, "loss": last["loss"],
            "images_per_s": done * global_batch / whole.step_s if whole.step_s > 0 else float("nan"),
            "view_share": whole.view_share, "seconds": time.perf_counter() - start_time, **self._summary(last),
        }

    def _check_finite(self, loss_sum: torch.Tensor | None, checkpoint: Path | None) -> None:
        """FloatingPointError on every rank when a loss of the current (unlogged) interval is not finite."""
        if loss_sum is not None and self.dist.any(not bool(torch.isfinite(loss_sum).all().item())):
            raise FloatingPointError(f"a loss between the last log line and step {self.step} is not finite; last checkpoint: "
                                     f"{checkpoint or latest_checkpoint(self.out_dir)}")

    def close(self) -> None:
        """Leaves the process group if this run created it."""
        self.dist.close()
