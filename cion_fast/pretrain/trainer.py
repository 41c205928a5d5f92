"""The one trainer behind ``cion``, ``dino`` and ``upreid``.

Single process on the CPU or one GPU; many GPUs or nodes through ``torchrun`` (DDP: NCCL on GPUs,
gloo on CPUs; BatchNorm becomes SyncBatchNorm on GPUs — PyTorch's SyncBatchNorm has no CPU kernel,
so CPU ranks keep per-rank BatchNorm). Views come from the fused multicrop op
(:func:`cion_fast.ops.multicrop`) on the training device, fed uint8 batches.

Reproducibility: the sampler is a pure function of (seed, epoch); the multicrop op is keyed by
(seed, rank, step); torch's RNG (dropout, drop-path, random erasing, shuffle BN) is re-seeded from
(seed, step, rank) before every step. A checkpoint therefore needs only the tensors and the step
to continue exactly the same run: with ``deterministic=True`` on the CPU, a resumed run ends with
the same parameters, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cion_fast import ops
from cion_fast._io import atomic_write, atomic_write_json
from cion_fast.models import build_backbone
from cion_fast.pretrain.checkpoint import (latest_checkpoint, list_checkpoints, read_checkpoint, remove_stale_temporaries,
                                          write_checkpoint)
from cion_fast.pretrain.config import PretrainConfig
from cion_fast.pretrain.distill import DistillationMethod
from cion_fast.pretrain.optim import cosine_schedule, ema_update, optimizer_step, param_groups
from cion_fast.pretrain.sampler import IdentityBatchSampler, TrainingPlan
from cion_fast.pretrain.upreid import UPReIDMethod
from cion_fast.pretrain.views import ViewBatch

__all__ = ["Trainer", "pretrain"]


def _mix(*values: int) -> int:
    """A 32-bit seed derived from several integers (stable across runs and machines)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


# Collapse thresholds (DINO's two failure modes): a teacher whose per-image entropy is within 2 % of
# ln(out_dim) gives every image the same flat target; fewer effective prototypes than this means
# the outputs fell onto a handful of dimensions.
UNIFORM_ENTROPY_SHARE = 0.98
MIN_PROTOTYPES = 8.0


def collapse_warnings(record: dict[str, Any], out_dim: int) -> list[str]:
    """The collapse warnings a log record calls for (empty when the monitors look healthy).

    Args:
        record: a log line with ``teacher_entropy`` and ``prototypes`` (distillation methods).
        out_dim: the head's output width.

    Example:
        >>> collapse_warnings({"step": 10, "teacher_entropy": 6.9, "prototypes": 900.0}, 1024)[0][:31]
        'step 10: the teacher is uniform'
        >>> collapse_warnings({"step": 10, "teacher_entropy": 1.0, "prototypes": 300.0}, 1024)
        []
    """
    found = []
    if "teacher_entropy" in record and record["teacher_entropy"] > UNIFORM_ENTROPY_SHARE * math.log(out_dim):
        found.append(f"step {record['step']}: the teacher is uniform (entropy {record['teacher_entropy']:.3f} of "
                     f"ln(out_dim) = {math.log(out_dim):.3f}): every image gets the same flat target")
    if "prototypes" in record and record["prototypes"] < MIN_PROTOTYPES:
        found.append(f"step {record['step']}: the outputs collapsed onto {record['prototypes']:.1f} effective prototypes")
    return found


def _labels_fingerprint(labels: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()


class _Distributed:
    """torch.distributed set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK)."""

    def __init__(self, device: str | None):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.world_size = world
        self.owns_group = False
        if device is None:
            device = f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"
        elif device == "cuda":
            device = f"cuda:{self.local_rank}"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device {device!r} asked for but torch sees no CUDA device")
            torch.cuda.set_device(self.device)
        self.enabled = world > 1
        self.flag_group = None
        if self.enabled:
            if not dist.is_initialized():
                backend = "nccl" if self.device.type == "cuda" else "gloo"
                dist.init_process_group(backend=backend)
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


class _StepTimer:
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


class Trainer:
    """A pre-training run: data, method, optimiser, schedules, checkpoints.

    Args:
        config: the run's :class:`PretrainConfig`. With ``resume=True`` it may be None (taken from
            the checkpoint); when given, it must agree with the checkpoint's except for the
            bookkeeping keys (device, checkpoint_every, keep_checkpoints, log_every, progress).
        frames: uint8 [M, H, W, 3] numpy array (in memory or memory-mapped), the training images.
        labels: int [M] identity per frame, -1 = dropped. Required for ``cion``; optional for
            ``dino``/``upreid`` (instance level: only its -1 entries matter, every other frame is
            its own instance).
        out_dir: the run directory (config.json, log.jsonl, checkpoints/). A new run refuses a
            directory that already holds checkpoints.
        resume: continue from the newest checkpoint in ``out_dir`` (error if there is none).

    Nothing is written before :meth:`fit`; every input is checked in the constructor.

    Example:
        >>> import numpy as np, tempfile
        >>> frames = np.random.default_rng(0).integers(0, 255, (48, 64, 32, 3), dtype=np.uint8)
        >>> labels = np.repeat(np.arange(12), 4)
        >>> cfg = PretrainConfig(method="cion", arch="test_vit", steps=2, batch_size=8, k_values=(2, 4),
        ...     k_boundaries=(0.5,), out_dim=256, head_hidden_dim=64, head_bottleneck_dim=32, progress=False,
        ...     device="cpu", multicrop={"global_size": (64, 32), "local_size": (32, 16), "n_local": 2})
        >>> trainer = Trainer(cfg, frames, labels, tempfile.mkdtemp())
        >>> [trainer.plan.k_at_step(s) for s in range(2)], trainer.schedules(0)["momentum"]
        ([2, 4], 0.996)
        >>> summary = trainer.fit()
        >>> summary["step"], summary["finished"], summary["k"]
        (2, True, 4)
    """

    def __init__(self, config: PretrainConfig | None, frames: np.ndarray, labels: np.ndarray | None, out_dir: str | os.PathLike,
                 resume: bool = False):
        self.out_dir = Path(out_dir)
        self._resume_state: dict[str, Any] | None = None
        self._resume_tensors: dict[str, torch.Tensor] | None = None
        if resume:
            found = latest_checkpoint(self.out_dir)
            if found is None:
                raise FileNotFoundError(f"out_dir {self.out_dir}: no checkpoint to resume from")
            self._resume_tensors, self._resume_state = read_checkpoint(found)
            saved = PretrainConfig.from_dict(self._resume_state["config"])
            if config is None:
                config = saved
            else:
                diff = saved.differences(config)
                if diff:
                    listed = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
                    raise ValueError(f"config differs from the checkpoint's in {found}: {listed}")
        else:
            if config is None:
                raise ValueError("config is required for a new run (it may be None only with resume=True)")
            if list_checkpoints(self.out_dir):
                raise ValueError(f"out_dir {self.out_dir} already holds checkpoints: pass resume=True (--resume) or choose another directory")
        if not isinstance(config, PretrainConfig):
            raise TypeError(f"config must be a PretrainConfig, got {type(config).__name__}")
        self.config = config
        self.frames, self.labels = self._check_data(frames, labels)
        self.fingerprint = {"num_frames": int(self.frames.shape[0]), "frame_shape": list(self.frames.shape[1:]),
                            "labels_sha1": _labels_fingerprint(self.labels)}
        if self._resume_state is not None and self._resume_state.get("data") != self.fingerprint:
            raise ValueError(
                f"data/labels differ from the ones the checkpoint was trained on: checkpoint {self._resume_state.get('data')}, "
                f"now {self.fingerprint}"
            )
        self.multicrop_config = self._multicrop_config()
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
        self.dist = _Distributed(config.device)
        try:
            self._build()
        except BaseException:
            self.dist.close()
            raise

    # ---------------------------------------------------------------- set-up
    def _check_data(self, frames: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(frames, np.ndarray):
            raise TypeError(f"frames must be a numpy array (uint8 [M, H, W, 3], memory-mapped is fine), got {type(frames).__name__}")
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [M, H, W, 3], got {frames.dtype} {frames.shape}")
        m = frames.shape[0]
        if labels is None:
            if self.config.method == "cion":
                raise ValueError("labels are required for method 'cion' (one identity per frame, -1 = dropped)")
            return frames, np.arange(m, dtype=np.int64)
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"labels must be a 1-D integer array (int64 per frame), got {labels.dtype} {labels.shape}")
        if labels.shape[0] != m:
            raise ValueError(f"labels has {labels.shape[0]} entries but the data has {m} frames: they must match one to one")
        labels = labels.astype(np.int64)
        if labels.min(initial=0) < -1:
            raise ValueError(f"labels must be >= -1 (-1 = dropped), found {int(labels.min())}")
        if self.config.method != "cion":
            labels = np.where(labels >= 0, np.arange(m, dtype=np.int64), -1)
        return frames, labels

    def _multicrop_config(self):
        overrides = self.config.multicrop_overrides()
        names = {f.name for f in dataclasses.fields(ops.MultiCropConfig) if f.init}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"multicrop: unknown MultiCropConfig fields {unknown} (known: {sorted(names)})")
        if self._amp_enabled() and "out_dtype" not in overrides:
            overrides = {**overrides, "out_dtype": "float16"}
        mc = ops.MultiCropConfig.cion(**overrides)
        if mc.n_global != 2:
            raise ValueError(f"multicrop: n_global must be 2 (the teacher sees two global views), got {mc.n_global}")
        return mc

    def _amp_enabled(self) -> bool:
        device = self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        return self.config.amp if self.config.amp is not None else device.startswith("cuda")

    def _build(self) -> None:
        cfg, device = self.config, self.dist.device
        self.amp = self._amp_enabled()
        if device.type == "cuda":
            import cion_fast

            if not cion_fast.cuda_available():
                raise ValueError(f"device {device} is a GPU but cion_fast's kernels were built without CUDA, so the multicrop op "
                                 "cannot make the views there; reinstall with CION_FAST_CUDA=ON (nvcc on PATH) or use device='cpu'")
        if self.amp and device.type != "cuda":
            raise ValueError("amp=True needs a CUDA device (float16 autocast + GradScaler)")
        self.sampler = IdentityBatchSampler(self.labels, cfg.batch_size, seed=cfg.seed, rank=self.dist.rank, world_size=self.dist.world_size)
        self.plan = TrainingPlan(self.sampler, cfg.k_schedule(), steps=cfg.steps, epochs=cfg.epochs)
        torch.manual_seed(cfg.seed)
        mc = self.multicrop_config
        img_size = tuple(mc.global_size)
        timm_kwargs = dict(cfg.timm_kwargs)
        backbone = build_backbone(cfg.arch, last_stride=cfg.last_stride, ibn=cfg.ibn,
                                  img_size=None if "img_size" in timm_kwargs else img_size, **timm_kwargs)
        if cfg.method in ("cion", "dino"):
            method: nn.Module = DistillationMethod(
                backbone, n_crops=mc.n_global + mc.n_local, out_dim=cfg.out_dim, hidden_dim=cfg.head_hidden_dim,
                bottleneck_dim=cfg.head_bottleneck_dim, student_temp=cfg.student_temp, teacher_temp=cfg.teacher_temp,
                center_momentum=cfg.center_momentum)
        else:
            method = UPReIDMethod(
                backbone, terms=cfg.upreid_terms, global_size=img_size, mean=mc.mean, std=mc.std, queue_size=cfg.queue_size,
                proj_dim=cfg.proj_dim, moco_temp=cfg.moco_temp, gc_weight=cfg.gc_weight, icc_weight=cfg.icc_weight,
                n_stripes=cfg.n_stripes, stripe_temp=cfg.stripe_temp, stripe_min_overlap=cfg.stripe_min_overlap,
                erase_p=cfg.erase_p, key_bn_splits=cfg.key_bn_splits)
        self.backbone_config = backbone.backbone_config
        if self.dist.enabled and device.type == "cuda" and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in method.modules()):
            method.student = nn.SyncBatchNorm.convert_sync_batchnorm(method.student)
            method.teacher = nn.SyncBatchNorm.convert_sync_batchnorm(method.teacher)
        self.method = method.to(device)
        self.student = self.method.student
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.student = DistributedDataParallel(self.method.student, device_ids=[device.index] if device.type == "cuda" else None)
            self.method.teacher.load_state_dict(self.method.student.state_dict())
        self.optimizer = torch.optim.AdamW(param_groups(self.method.student), lr=0.0, weight_decay=0.0)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step = 0
        if self._resume_state is not None:
            self._restore()

    # ------------------------------------------------------------ checkpoint
    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = dict(self.method.state_dict())
        for index, values in self.optimizer.state_dict()["state"].items():
            for name, value in values.items():
                if not isinstance(value, torch.Tensor):
                    raise TypeError(f"optimizer state {name} is not a tensor")
                tensors[f"optimizer.{index}.{name}"] = value
        return tensors

    def _state(self) -> dict[str, Any]:
        groups = [{k: v for k, v in g.items()} for g in self.optimizer.state_dict()["param_groups"]]
        return {
            "format": "cion_fast.pretrain.checkpoint/1",
            "config": self.config.to_dict(),
            "step": self.step,
            "epoch": self.plan.state(self.step)["epoch"],
            "sampler": self.plan.state(self.step),
            "optimizer": {"param_groups": groups},
            "scaler": self.scaler.state_dict(),
            "data": self.fingerprint,
            "world_size": self.dist.world_size,
            "multicrop": {f.name: getattr(self.multicrop_config, f.name) for f in dataclasses.fields(self.multicrop_config) if f.init},
            "backbone_config": self.backbone_config,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def save_checkpoint(self) -> Path | None:
        """Writes a checkpoint of the current step (rank 0 writes; every rank waits for it)."""
        path = None
        if self.dist.is_main:
            path = write_checkpoint(self.out_dir, self.step, self._tensors(), self._state(), self.backbone_config,
                                    self.method.export_prefix, keep=self.config.keep_checkpoints)
        self.dist.barrier()
        return path

    def _restore(self) -> None:
        state, tensors = self._resume_state, self._resume_tensors
        if state.get("world_size") != self.dist.world_size:
            raise ValueError(f"the checkpoint was trained with {state.get('world_size')} processes, this run has "
                             f"{self.dist.world_size}: the global batch and sampler would change")
        own = self.method.state_dict()
        missing = sorted(k for k in own if k not in tensors)
        if missing:
            raise ValueError(f"checkpoint {state['path']} is missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''} "
                             f"({len(missing)} in all)")
        wrong = [k for k in own if tensors[k].shape != own[k].shape]
        if wrong:
            raise ValueError(f"checkpoint {state['path']} has tensors of the wrong shape: {wrong[:8]}")
        self.method.load_state_dict({k: tensors[k] for k in own}, strict=True)
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                opt_state.setdefault(int(index), {})[name] = value
        groups = state["optimizer"]["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.optimizer.param_groups]:
            raise ValueError(f"checkpoint {state['path']}: optimiser parameter groups do not match the model")
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        if self.step < self.plan.total_steps and state["sampler"] != self.plan.state(self.step):
            raise ValueError(f"sampler state differs from the checkpoint's: {state['sampler']} vs {self.plan.state(self.step)}")

    # ------------------------------------------------------------- schedules
    def initial_weight_share(self) -> float:
        """Share of the teacher's initial weights left after the whole run: the product of the
        EMA momenta over every step (0.996 -> 1 over 100 steps keeps ~0.8: the teacher is still
        its random init)."""
        return float(math.exp(sum(math.log(max(self.schedules(s)["momentum"], 1e-300)) for s in range(self.plan.total_steps))))

    def schedules(self, step: int) -> dict[str, float]:
        """lr, weight decay, EMA momentum and teacher temperature at ``step`` (see :class:`Trainer`'s example)."""
        cfg, total = self.config, self.plan.total_steps
        global_batch = cfg.batch_size * self.dist.world_size
        peak = cfg.base_lr * global_batch / 256.0
        warmup_steps = int(round(cfg.warmup * total))
        temp = cfg.teacher_temp
        if cfg.teacher_temp_final is not None:
            warm = max(1, int(round(cfg.teacher_temp_warmup * total)))
            temp = cfg.teacher_temp + (cfg.teacher_temp_final - cfg.teacher_temp) * min(1.0, step / warm)
        return {
            "lr": cosine_schedule(step, total, peak, cfg.min_lr, warmup_steps=warmup_steps),
            "weight_decay": cosine_schedule(step, total, cfg.weight_decay[0], cfg.weight_decay[1]),
            "momentum": cosine_schedule(step, total, cfg.momentum[0], cfg.momentum[1]),
            "teacher_temp": temp,
        }

    # -------------------------------------------------------------- training
    def _views(self, step: int) -> ViewBatch:
        index = self.plan.batch(step)
        host = torch.from_numpy(np.ascontiguousarray(self.frames[index]))
        device = self.dist.device
        images = host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host
        need_boxes = self.config.method == "upreid" and "icc" in self.config.upreid_terms
        out = ops.multicrop(images, self.multicrop_config, seed=_mix(self.config.seed, self.dist.rank), step=step, return_params=need_boxes)
        boxes = None
        if need_boxes:
            boxes = torch.as_tensor(out.params["box"], device=device)
        return ViewBatch(images, out.global_views, out.local_views, boxes)

    def train_step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimisation step at ``self.step`` (then ``self.step += 1``); returns the detached loss and metrics."""
        cfg, step = self.config, self.step
        sched = self.schedules(step)
        for group in self.optimizer.param_groups:
            group["lr"] = sched["lr"]
            if group.get("name") == "decay":
                group["weight_decay"] = sched["weight_decay"]
        torch.manual_seed(_mix(cfg.seed, step, self.dist.rank, 1))
        self.timer.start()
        views = self._views(step)
        self.timer.views_done()
        k = self.plan.k_at_step(step)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()
        with autocast:
            loss, metrics = self.method.training_step(self.student, views, k, teacher_temp=sched["teacher_temp"])
        frozen = self.method.last_layer_parameters() if step < round(cfg.freeze_last_layer * self.plan.total_steps) else []
        trainable = [p for p in self.method.student.parameters() if p.requires_grad]
        optimizer_step(loss, self.optimizer, self.scaler, trainable, cfg.clip_grad, frozen)
        teacher, student = self.method.ema_pairs()
        ema_update(teacher, student, sched["momentum"])
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
        if not self.config.deterministic:
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
        """Drops the log lines after ``step`` (the resumed checkpoint): the resumed run logs those
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
        if self._resume_state is not None and path.exists():
            try:
                if json.loads(path.read_text()) == current:
                    return
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                warnings.warn(f"{path} was unreadable ({error}); rewritten from the checkpoint's config", stacklevel=3)
        atomic_write_json(path, current)

    def fit(self, until_step: int | None = None) -> dict[str, Any]:
        """Trains from the current step to the end of the plan (or to ``until_step``).

        A checkpoint is written every ``checkpoint_every`` steps, when the run stops (end,
        ``until_step``, SIGINT/SIGTERM) and the log line of every ``log_every``-th step goes to
        ``log.jsonl``. After a signal the method returns normally with ``interrupted`` set.

        Returns:
            dict with ``step``, ``total_steps``, ``finished``, ``interrupted`` (signal number or
            None), ``rank``, ``world_size``, ``checkpoint`` (path of the last checkpoint), ``loss`` (mean over the last log
            interval), ``k``, ``images_per_s`` (global images per second of step time, checkpoint
            writes excluded), ``view_share`` (share of step time spent producing views) and
            ``seconds`` (wall time of the call).
        """
        cfg, total = self.config, self.plan.total_steps
        stop_at = total if until_step is None else int(until_step)
        if not self.step <= stop_at <= total:
            raise ValueError(f"until_step must be in [{self.step}, {total}], got {until_step}")
        if self.dist.is_main:
            remove_stale_temporaries(self.out_dir)
            if self._resume_state is not None:
                self._truncate_log(self.step)
        if self.dist.is_main:
            self._write_config_copy()
        if self.dist.is_main and self._resume_state is None:
            kept = self.initial_weight_share()
            if kept > 0.5:
                warnings.warn(f"the EMA momentum schedule {cfg.momentum} keeps {100 * kept:.0f} % of the teacher's random "
                              f"initialisation after {total} steps: the exported teacher will barely have learned; lower "
                              "the momentum for short runs (1 / (1 - m) well below the number of steps)", stacklevel=2)
        self.timer = _StepTimer(self.dist.device)
        whole = _StepTimer(self.dist.device)
        progress = None
        if cfg.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            progress = tqdm(total=total, initial=self.step, desc=f"pretrain {cfg.method}", unit="step", dynamic_ncols=True, file=sys.stderr)
        start_time = time.perf_counter()
        start_step = self.step
        interval_start, interval_steps = time.perf_counter(), 0
        loss_sum: torch.Tensor | None = None
        metric_sums: dict[str, torch.Tensor] = {}
        last = {"loss": float("nan")}
        checkpoint = None
        warned_collapse = False
        global_batch = cfg.batch_size * self.dist.world_size
        self.method.train()
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
                            raise FloatingPointError(f"loss is {mean_loss} at step {self.step}; last checkpoint: {checkpoint or latest_checkpoint(self.out_dir)}")
                        sched = self.schedules(self.step - 1)
                        last = {
                            "step": self.step, "epoch": self.plan.epoch_at_step(self.step - 1), "k": self.plan.k_at_step(self.step - 1),
                            "loss": mean_loss, **{n: float(self.dist.mean(v.float() / interval_steps).item()) for n, v in metric_sums.items()},
                            "lr": sched["lr"], "weight_decay": sched["weight_decay"], "momentum": sched["momentum"],
                            "teacher_temp": sched["teacher_temp"], "images_per_s": interval_steps * global_batch / elapsed,
                            "view_share": self.timer.view_share, "elapsed_s": time.perf_counter() - start_time,
                        }
                        collapse = collapse_warnings(last, cfg.out_dim)
                        if collapse:
                            last["collapse"] = collapse
                        if self.dist.is_main:
                            self._log(last)
                            if collapse and not warned_collapse:  # once per call; every line is in the log
                                warnings.warn(collapse[0] + " (further collapse reports go to log.jsonl only)", stacklevel=2)
                                warned_collapse = True
                        if progress is not None:
                            monitors = {"H_t": f"{last['teacher_entropy']:.2f}", "protos": f"{last['prototypes']:.0f}"} if "prototypes" in last else {}
                            progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{sched['lr']:.2e}", K=last["k"], **monitors,
                                                 img_s=f"{last['images_per_s']:.1f}", views=f"{100 * last['view_share']:.0f}%")
                        self.timer.reset()
                        interval_start, interval_steps, loss_sum, metric_sums = time.perf_counter(), 0, None, {}
                    if stopping:
                        self.stop_signal = self.stop_signal or signal.SIGTERM
                        break
                    if self.step % cfg.checkpoint_every == 0 and self.step < stop_at:
                        checkpoint = self.save_checkpoint()
                checkpoint = self.save_checkpoint()
        finally:
            if progress is not None:
                progress.close()
        seconds = time.perf_counter() - start_time
        done = self.step - start_step
        return {
            "step": self.step, "total_steps": total, "finished": self.step >= total, "interrupted": self.stop_signal,
            "rank": self.dist.rank, "world_size": self.dist.world_size,
            "checkpoint": str(checkpoint) if checkpoint else None, "loss": last["loss"], "k": last.get("k"),
            "images_per_s": done * global_batch / whole.step_s if whole.step_s > 0 else float("nan"),
            "view_share": whole.view_share, "seconds": seconds,
        }

    def close(self) -> None:
        """Leaves the process group if this trainer created it."""
        self.dist.close()


def pretrain(config: PretrainConfig | None, frames: np.ndarray, labels: np.ndarray | None, out_dir: str | os.PathLike,
             resume: bool = False, until_step: int | None = None) -> dict[str, Any]:
    """Builds a :class:`Trainer`, runs :meth:`Trainer.fit` and closes it.

    Args/Returns: as :class:`Trainer` and :meth:`Trainer.fit`.

    Example:
        >>> import numpy as np, tempfile
        >>> frames = np.random.default_rng(0).integers(0, 255, (48, 64, 32, 3), dtype=np.uint8)
        >>> cfg = PretrainConfig(method="dino", arch="test_vit", steps=2, batch_size=8, out_dim=256,
        ...     head_hidden_dim=64, head_bottleneck_dim=32, progress=False, device="cpu",
        ...     multicrop={"global_size": (64, 32), "local_size": (32, 16), "n_local": 2})
        >>> pretrain(cfg, frames, None, tempfile.mkdtemp())["step"]
        2
    """
    trainer = Trainer(config, frames, labels, out_dir, resume=resume)
    try:
        return trainer.fit(until_step=until_step)
    finally:
        trainer.close()
