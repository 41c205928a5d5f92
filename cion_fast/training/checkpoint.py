"""Training checkpoints: one directory per checkpoint, written atomically.

Layout of a run directory::

    RUN/config.json                 the run's config (PretrainConfig / FinetuneConfig), written when it starts
    RUN/log.jsonl                   one JSON object per logged step
    RUN/checkpoints/step-00000500/  weights.safetensors + state.json

``weights.safetensors`` holds every tensor: the run's state dict (pre-training: ``student.*``,
``teacher.*``, ``loss.center`` or ``queue``/``queue_ptr``; fine-tuning: ``backbone.*``, ``head.*``)
and the optimiser's per-parameter state (``optimizer.<index>.<name>``, :func:`optimizer_tensors`); its ``cion_fast`` metadata names the backbone config and the
prefix of the exported backbone, so :func:`cion_fast.models.load_pretrained` reads a checkpoint
directory directly. ``state.json`` holds everything else: config, step, epoch, sampler position,
optimiser hyper-parameters, GradScaler state, data fingerprint.

A checkpoint directory is first written under a temporary name and renamed when complete, so a
crash or Ctrl-C never leaves a half checkpoint that ``--resume`` would pick up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from cion_fast._checks import check_choice
from cion_fast._io import atomic_directory
from cion_fast.models.pretrained import METADATA_KEY

__all__ = ["export_backbone", "latest_checkpoint", "list_checkpoints", "load_optimizer_tensors", "optimizer_tensors",
           "read_checkpoint", "write_checkpoint"]

_NAME = re.compile(r"^step-(\d{8,})$")
WEIGHTS = "weights.safetensors"
STATE = "state.json"


def _is_complete(path: Path) -> bool:
    """A checkpoint directory holding both of its files (they are renamed into place together)."""
    return (path / STATE).exists() and (path / WEIGHTS).exists()


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first.

    Example:
        >>> import tempfile
        >>> list_checkpoints(tempfile.mkdtemp())
        []
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and _is_complete(p)]
    return [p for _, p in sorted(found)]


def latest_checkpoint(path: str | os.PathLike) -> Path | None:
    """The newest checkpoint directory of a run directory, or ``path`` itself when it is one.

    Example:
        >>> import tempfile
        >>> latest_checkpoint(tempfile.mkdtemp()) is None
        True
    """
    path = Path(path)
    if _is_complete(path):
        return path
    found = list_checkpoints(path)
    return found[-1] if found else None


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Deletes what a killed run (``kill -9``) leaves behind: half-written or half-pruned
    ``checkpoints/.step-*.tmp`` directories, and ``step-*`` directories missing a file (a
    checkpoint is renamed into place whole, so an incomplete one was being deleted by an older
    version); returns what it removed. Call it only from the one process that writes the run's
    checkpoints, before it writes any.

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> (run / "checkpoints" / ".step-00000010.abc.tmp").mkdir(parents=True)
        >>> (run / "checkpoints" / "step-00000005").mkdir()
        >>> [p.name for p in remove_stale_temporaries(run)]
        ['.step-00000010.abc.tmp', 'step-00000005']
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    stale = sorted(root.glob(".step-*.tmp"))
    stale += sorted(p for p in root.glob("step-*") if p.is_dir() and _NAME.match(p.name) and not _is_complete(p))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimiser's per-parameter state as flat tensors ``optimizer.<index>.<name>`` (the hyper-
    parameters go to state.json as ``param_groups``); inverse of :func:`load_optimizer_tensors`.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2)); opt = torch.optim.Adam([w])
        >>> w.grad = torch.ones(2); opt.step()
        >>> sorted(optimizer_tensors(opt))
        ['optimizer.0.exp_avg', 'optimizer.0.exp_avg_sq', 'optimizer.0.step']
    """
    tensors = {}
    for index, values in optimizer.state_dict()["state"].items():
        for name, value in values.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimizer state {name} is not a tensor")
            tensors[f"optimizer.{index}.{name}"] = value
    return tensors


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups: list[dict],
                           where: str | os.PathLike = "checkpoint") -> None:
    """Loads the state :func:`optimizer_tensors` flattened (other keys of ``tensors`` are ignored)
    with the saved ``param_groups``; ValueError naming ``where`` when the groups do not match.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2)); opt = torch.optim.Adam([w])
        >>> w.grad = torch.ones(2); opt.step()
        >>> fresh = torch.optim.Adam([w])
        >>> load_optimizer_tensors(fresh, optimizer_tensors(opt), opt.state_dict()["param_groups"])
        >>> torch.equal(fresh.state[w]["exp_avg"], opt.state[w]["exp_avg"])
        True
    """
    if [len(g["params"]) for g in param_groups] != [len(g["params"]) for g in optimizer.param_groups]:
        raise ValueError(f"{where}: optimiser parameter groups do not match the model")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def write_checkpoint(run_dir: str | os.PathLike, step: int, tensors: dict[str, torch.Tensor], state: dict[str, Any],
                     backbone_config: dict, export_prefix: str, keep: int = 2) -> Path:
    """Writes ``RUN/checkpoints/step-<step>/`` atomically, then keeps only the newest ``keep``.

    Args:
        run_dir: the run directory.
        step: completed optimisation steps.
        tensors: every tensor to store (moved to the CPU, made contiguous).
        state: JSON-able dict (state.json).
        backbone_config: the backbone's config (for load_pretrained).
        export_prefix: key prefix of the backbone to export inside ``tensors``.
        keep: number of checkpoints to keep (older ones are deleted after the new one exists).

    Returns:
        the checkpoint directory.

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> for step in (1, 2, 3):
        ...     _ = write_checkpoint(run, step, {"w": torch.full((2,), float(step))}, {"step": step}, {"arch": "x"}, "", keep=2)
        >>> [p.name for p in list_checkpoints(run)]
        ['step-00000002', 'step-00000003']
        >>> tensors, state = read_checkpoint(run)
        >>> tensors["w"].tolist(), state["step"]
        ([3.0, 3.0], 3)
    """
    from safetensors.torch import save_file

    root = Path(run_dir) / "checkpoints"
    target = root / f"step-{step:08d}"
    if target.exists():
        return target  # this step is already saved (a resumed run stopped before its first step)
    cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {"format": "cion_fast.checkpoint", "backbone_config": backbone_config, "prefix": export_prefix}

    with atomic_directory(target) as tmp:
        save_file(cpu, str(tmp / WEIGHTS), metadata={METADATA_KEY: json.dumps(meta)})
        (tmp / STATE).write_text(json.dumps(state, indent=2, sort_keys=True))
    for old in list_checkpoints(run_dir)[:-keep]:
        _remove(old)
    return target


def _remove(checkpoint: Path) -> None:
    """Deletes a checkpoint so that a kill at any moment leaves either it whole or a temporary
    name that :func:`remove_stale_temporaries` clears: renamed first (atomic), then deleted."""
    doomed = checkpoint.with_name(f".{checkpoint.name}.{os.getpid()}.pruned.tmp")
    try:
        os.replace(checkpoint, doomed)
    except FileNotFoundError:  # already gone (another prune, a user): nothing to do
        return
    shutil.rmtree(doomed, ignore_errors=True)


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                    with_tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, state) of a checkpoint directory (or the newest one of a run directory).

    Args:
        path: checkpoint or run directory.
        device: where the tensors are loaded.
        with_tensors: False reads only ``state.json`` (tensors come back as ``{}``).

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: a file that cannot be parsed.
    """
    from safetensors.torch import load_file

    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"no checkpoint in {path} (expected {STATE} and {WEIGHTS}, or checkpoints/step-*/)")
    try:
        state = json.loads((found / STATE).read_text())
        tensors = load_file(str(found / WEIGHTS), device=str(device)) if with_tensors else {}
    except Exception as error:  # safetensors raises its own SafetensorError
        raise ValueError(f"checkpoint {found} cannot be read: {error}") from error
    state["path"] = str(found)
    return tensors, state


EXPORT_FORMATS = ("safetensors", "onnx")


def export_backbone(checkpoint: str | os.PathLike, out: str | os.PathLike, format: str = "safetensors",
                    image_size: tuple[int, int] | None = None, opset: int | None = None) -> Path:
    """Writes the exported backbone of a checkpoint (the teacher for cion/dino, the query encoder
    for upreid, the backbone of a fine-tuning run) as ``out``.

    Args:
        checkpoint: a checkpoint directory, a run directory (its newest checkpoint), or a backbone
            file :func:`cion_fast.models.load_pretrained` reads without a name (a ``.safetensors``
            export).
        out: destination, ending in ``.safetensors`` or ``.onnx`` (the ``format``).
        format: ``"safetensors"``: ``out`` + ``out.with_suffix('.json')`` (its config), for
            :func:`cion_fast.models.load_pretrained`; ``"onnx"``: one ONNX file, see
            :func:`cion_fast.models.export_onnx` (float32 [B, 3, H, W] ImageNet-normalised input,
            dynamic B, pooled float32 [B, D] output; needs the ``onnx`` extra).
        image_size: onnx only: (H, W) fixed in the graph. Default: the size the checkpoint was
            trained at (the global views of a pre-training run, ``image_size`` of a fine-tuning
            run), else the ``img_size`` of a fixed-grid backbone's config (ViT); required when
            none says (a CNN's ``.safetensors`` export).
        opset: onnx only: the ONNX operator set (default
            :data:`cion_fast.models.onnx_export.DEFAULT_OPSET`, 18).

    Returns:
        the written path.

    Raises:
        FileNotFoundError: no checkpoint there. ValueError: unreadable or incomplete checkpoint,
            an unknown ``format``, ``image_size`` / ``opset`` with ``format="safetensors"``, no
            ``image_size`` known for ONNX, a bad ``out`` suffix.

    Example:
        >>> import tempfile
        >>> from cion_fast.models import build_backbone, load_pretrained
        >>> net, run = build_backbone("resnet18"), Path(tempfile.mkdtemp())
        >>> tensors = {"teacher.backbone." + k: v for k, v in net.state_dict().items()}
        >>> _ = write_checkpoint(run, 1, tensors, {"step": 1}, net.backbone_config, "teacher.backbone.")
        >>> path = export_backbone(run, run / "backbone.safetensors")
        >>> torch.equal(load_pretrained(path).conv1.weight, net.conv1.weight)
        True
        >>> export_backbone(run, run / "backbone.onnx", format="onnx")
        Traceback (most recent call last):
        ...
        ValueError: image_size: ... does not record the size its backbone was trained at; give image_size=(H, W) (--size HxW)
    """
    from cion_fast.models import export_onnx, load_pretrained, save_backbone
    from cion_fast.models.onnx_export import DEFAULT_OPSET

    check_choice(format, "format", EXPORT_FORMATS)
    if format != "onnx" and (image_size is not None or opset is not None):
        raise ValueError("image_size (--size) and opset (--opset) apply to format 'onnx' only")
    found = latest_checkpoint(checkpoint)
    if found is None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint: no checkpoint in {checkpoint}")
    model = load_pretrained(found or checkpoint)
    if format == "safetensors":
        return save_backbone(model, out)
    if image_size is None:
        image_size = _training_size(found, model)
    if image_size is None:
        raise ValueError(f"image_size: {checkpoint} does not record the size its backbone was trained at; "
                         "give image_size=(H, W) (--size HxW)")
    return export_onnx(model, out, image_size, DEFAULT_OPSET if opset is None else opset)


def _training_size(found: Path | None, model: torch.nn.Module) -> tuple[int, int] | None:
    """(H, W) a backbone was trained at: the global views of a pre-training checkpoint, the
    ``image_size`` of a fine-tuning one, else its config's ``img_size`` (a fixed-grid backbone:
    ViT, Swin, VOLO); None when nothing says (a CNN's export)."""
    if found is not None:
        _, state = read_checkpoint(found, with_tensors=False)
        size = (state.get("multicrop") or {}).get("global_size") or (state.get("config") or {}).get("image_size")
        if size is not None:
            return tuple(size)
    size = (model.backbone_config.get("timm_kwargs") or {}).get("img_size")
    if isinstance(size, int):  # timm takes one int for a square input
        return size, size
    return None if size is None else tuple(size)
