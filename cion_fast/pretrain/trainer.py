"""The one pre-trainer behind ``cion``, ``dino`` and ``upreid``: a :class:`cion_fast.training.TrainingRun`.

Single process on the CPU or one GPU; many GPUs or nodes through ``torchrun`` (DDP: NCCL on GPUs,
gloo on CPUs; BatchNorm becomes SyncBatchNorm on GPUs — PyTorch's SyncBatchNorm has no CPU kernel,
so CPU ranks keep per-rank BatchNorm). Views come from the fused multicrop op
(:func:`cion_fast.ops.multicrop`) on the training device, fed uint8 batches.

Data path: each step's uint8 batch is gathered (or decoded, for image files) by read-ahead
threads, pinned when training on a GPU and uploaded once, non-blocking; the views are made there
by the fused multicrop op. Our ops run before the networks' forward, outside any module, and the
step itself (teacher, monitors, student, loss) traces as one graph with no break (test in
``test_pretrain_loss.py``), so ``torch.compile`` of the step or of the networks sees no break.

Reproducibility: the sampler is a pure function of (seed, epoch); the multicrop op is keyed by
(seed, rank, step); torch's RNG (dropout, drop-path, random erasing, shuffle BN) is re-seeded from
(seed, step, rank) before every step. A checkpoint therefore needs only the tensors and the step
to continue exactly the same run: with ``deterministic=True`` on the CPU, a resumed run ends with
the same parameters, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import warnings
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from cion_fast import ops
from cion_fast.models import build_backbone
from cion_fast.pretrain.config import PretrainConfig
from cion_fast.pretrain.distill import DistillationMethod
from cion_fast.pretrain.ema import ema_update
from cion_fast.pretrain.upreid import UPReIDMethod
from cion_fast.pretrain.views import ViewBatch
from cion_fast.training import IdentityBatchSampler, TrainingPlan, TrainingRun, cosine_schedule, mix_seed, optimizer_step, param_groups

__all__ = ["Trainer", "pretrain"]


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


class Trainer(TrainingRun):
    """A pre-training run: data, method, optimiser, schedules, checkpoints.

    Args:
        config: the run's :class:`PretrainConfig`. With ``resume=True`` it may be None (taken from
            the checkpoint); when given, it must agree with the checkpoint's except for the
            bookkeeping keys (device, checkpoint_every, keep_checkpoints, log_every, progress).
        frames: the training images: a uint8 [M, H, W, 3] numpy array (in memory or memory-mapped),
            or a sequence of M image paths (a tracklet directory stored as files: never scanned
            or loaded whole; each step's crops are decoded and resized to the global view size
            by a few threads, the next steps' ahead of time).
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

    config_class = PretrainConfig
    checkpoint_format = "cion_fast.pretrain.checkpoint/1"

    def __init__(self, config: PretrainConfig | None, frames: np.ndarray, labels: np.ndarray | None, out_dir: str | os.PathLike,
                 resume: bool = False):
        super().__init__(config, out_dir, resume)
        self.frames, self.labels = self._check_data(frames, labels)
        self.multicrop_config = self._multicrop_config()
        self._start()

    @property
    def deterministic(self) -> bool:
        return self.config.deterministic

    @property
    def export_prefix(self) -> str:
        return self.method.export_prefix

    @property
    def progress_name(self) -> str:
        return f"pretrain {self.config.method}"

    def _data_fingerprint(self) -> dict[str, Any]:
        shape = list(self.frames.shape[1:]) if isinstance(self.frames, np.ndarray) else "files"
        return {"num_frames": len(self.frames), "frame_shape": shape, "labels_sha1": _labels_fingerprint(self.labels)}

    # ---------------------------------------------------------------- set-up
    def _check_data(self, frames: Any, labels: Any) -> tuple[Any, np.ndarray]:
        if isinstance(frames, (list, tuple)):
            if not all(isinstance(p, str) or hasattr(p, "__fspath__") for p in frames):
                raise TypeError("frames: a sequence of frames must hold image paths (str or os.PathLike)")
            frames = [os.fspath(p) for p in frames]
        elif not isinstance(frames, np.ndarray):
            raise TypeError(f"frames must be a numpy array (uint8 [M, H, W, 3], memory-mapped is fine) or a list of image "
                            f"paths, got {type(frames).__name__}")
        elif frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [M, H, W, 3], got {frames.dtype} {frames.shape}")
        m = len(frames)
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
        from cion_fast.data.prefetch import StepReader

        # The next steps' batches are read while this one trains (decoded by threads for image files).
        files = not isinstance(self.frames, np.ndarray)
        self.reader = StepReader(self._read_batch, self.plan.total_steps, workers=4 if files else 1, depth=2)

    # ------------------------------------------------------------ checkpoint
    def _checkpoint_module(self) -> nn.Module:
        return self.method

    def _extra_state(self) -> dict[str, Any]:
        return {"multicrop": {f.name: getattr(self.multicrop_config, f.name) for f in dataclasses.fields(self.multicrop_config) if f.init}}

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
    def _read_batch(self, step: int) -> torch.Tensor:
        """uint8 [B, H, W, 3] host pixels of this rank's batch at ``step``, in pinned memory when
        training on a GPU (run by the read-ahead threads, as a DataLoader's pin-memory thread)."""
        index = self.plan.batch(step)
        if isinstance(self.frames, np.ndarray):
            pixels = np.ascontiguousarray(self.frames[index])
        else:
            from cion_fast.data import read_images

            pixels = read_images([self.frames[int(i)] for i in index], size=tuple(self.multicrop_config.global_size),
                                 resize_all=True)
        host = torch.from_numpy(pixels)
        return host.pin_memory() if self.dist.device.type == "cuda" else host

    def _views(self, step: int) -> ViewBatch:
        host = self.reader.get(step)
        device = self.dist.device
        images = host.to(device, non_blocking=True) if device.type == "cuda" else host  # one upload per batch
        need_boxes = self.config.method == "upreid" and "icc" in self.config.upreid_terms
        out = ops.multicrop(images, self.multicrop_config, seed=mix_seed(self.config.seed, self.dist.rank), step=step, return_params=need_boxes)
        boxes = None
        if need_boxes:
            boxes = torch.as_tensor(out.params["box"], device=device)
        return ViewBatch(images, out.global_views, out.local_views, boxes)

    def _step_seed(self, step: int) -> int:
        return mix_seed(self.config.seed, step, self.dist.rank, 1)

    def _train_step(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        sched = self.schedules(step)
        for group in self.optimizer.param_groups:
            group["lr"] = sched["lr"]
            if group.get("name") == "decay":
                group["weight_decay"] = sched["weight_decay"]
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
        return loss, metrics

    # -------------------------------------------------------------- logging
    def _log_fields(self, step: int) -> dict[str, Any]:
        return self.schedules(step)

    def _record_warnings(self, record: dict[str, Any]) -> list[str]:
        return collapse_warnings(record, self.config.out_dim)

    def _progress_postfix(self, record: dict[str, Any]) -> dict[str, Any]:
        monitors = {"H_t": f"{record['teacher_entropy']:.2f}", "protos": f"{record['prototypes']:.0f}"} if "prototypes" in record else {}
        return {"loss": f"{record['loss']:.4f}", "lr": f"{record['lr']:.2e}", "K": record["k"], **monitors}

    def _summary(self, record: dict[str, Any]) -> dict[str, Any]:
        # The last interval's collapse monitors (distillation only) and their warnings: a run that
        # ends collapsed says so in its result, not only in log.jsonl.
        monitors = {k: record[k] for k in ("teacher_entropy", "prototypes") if k in record}
        return {"k": record.get("k"), **monitors, "collapse_warnings": record.get("warnings", [])}

    def fit(self, until_step: int | None = None) -> dict[str, Any]:
        """Trains from the current step to the end of the plan (or to ``until_step``): the shared
        loop (:meth:`cion_fast.training.TrainingRun.fit`; its return value, plus ``k``), after a
        warning when the EMA schedule would leave the teacher near its random initialisation."""
        if self.dist.is_main and self.resume_state is None:
            kept = self.initial_weight_share()
            if kept > 0.5:
                warnings.warn(f"the EMA momentum schedule {self.config.momentum} keeps {100 * kept:.0f} % of the teacher's random "
                              f"initialisation after {self.plan.total_steps} steps: the exported teacher will barely have learned; lower "
                              "the momentum for short runs (1 / (1 - m) well below the number of steps)", stacklevel=2)
        return super().fit(until_step)

    def close(self) -> None:
        """Stops the read-ahead threads and leaves the process group if this run created it."""
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.close()
        super().close()


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
