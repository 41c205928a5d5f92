"""Saving and loading pre-trained backbones.

Our format: one ``.safetensors`` file holding the backbone's tensors, whose metadata entry
``"cion_fast"`` is a JSON object ``{"format": ..., "backbone_config": {...}, "prefix": "..."}``
(the architecture and options :func:`~cion_fast.models.build_backbone` rebuilds it from, and the
key prefix of the backbone's tensors inside the file). :func:`save_backbone` writes it with the
prefix ``""`` plus a human-readable sidecar ``<name>.json`` with the same config; the pre-training
checkpoints' ``weights.safetensors`` carry the same metadata with prefix ``"teacher.backbone."``,
so a checkpoint loads directly too.

Official CION / DINO checkpoints (``torch.load(path)["teacher"]``, keys ``module.backbone.*``)
and plain state dicts load as well, given the architecture ``name`` (read from a CION checkpoint's
``args.arch`` where it names one network: ResNet-IBN-a and the families of ``CION_ZOO_NAMES``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from cion_fast._checks import check_type
from cion_fast._io import DAMAGED_FILE_ERRORS, atomic_write, atomic_write_json
from cion_fast.models.backbone import backbone_from_config, build_backbone
from cion_fast.models.heads import _load_strict

__all__ = ["METADATA_KEY", "load_pretrained", "read_safetensors_config", "save_backbone"]

METADATA_KEY = "cion_fast"


def save_backbone(model: nn.Module, path: str | os.PathLike) -> Path:
    """Exports a backbone: ``path`` (safetensors, config in its metadata) + ``path.with_suffix('.json')``.

    Both files are written atomically. Tensors are saved as float32 on the CPU, contiguous.

    Args:
        model: a backbone from :func:`~cion_fast.models.build_backbone` (has ``backbone_config``).
        path: destination ending in ``.safetensors``.

    Returns:
        the safetensors path.

    Example:
        >>> import tempfile
        >>> from cion_fast.models import build_backbone, load_pretrained
        >>> net = build_backbone("resnet18")
        >>> p = save_backbone(net, Path(tempfile.mkdtemp()) / "backbone.safetensors")
        >>> load_pretrained(p).backbone_config == net.backbone_config
        True
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path must end in .safetensors, got {path}")
    config = getattr(model, "backbone_config", None)
    if not isinstance(config, dict):
        raise TypeError("model must be a backbone from cion_fast.models.build_backbone (no backbone_config attribute)")
    tensors = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "cion_fast.backbone", "backbone_config": config, "prefix": ""}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)}))
    atomic_write_json(path.with_suffix(".json"), meta)
    return path


def read_safetensors_config(path: str | os.PathLike) -> dict | None:
    """The ``cion_fast`` metadata of a safetensors file (dict), or None when it has none.

    Example:
        >>> import tempfile
        >>> from cion_fast.models import build_backbone
        >>> p = save_backbone(build_backbone("resnet18"), Path(tempfile.mkdtemp()) / "b.safetensors")
        >>> read_safetensors_config(p)["backbone_config"]["arch"]
        'resnet18'
    """
    with open_safetensors(path) as f:
        meta = f.metadata() or {}
    if METADATA_KEY not in meta:
        return None
    try:
        config = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError:
        config = None
    if not _is_export_metadata(config):
        raise ValueError(f"weights file {path}: its metadata entry {METADATA_KEY!r} is not our export's JSON object "
                         f"{{'backbone_config': {{'arch': str, ...}}, 'prefix': str}}, got {meta[METADATA_KEY][:80]!r}")
    return config


def _is_export_metadata(meta: Any) -> bool:
    """The fields :func:`load_pretrained` reads have the types it reads them as."""
    config = meta.get("backbone_config") if isinstance(meta, dict) else None
    return (isinstance(config, dict) and isinstance(config.get("arch"), str) and isinstance(meta.get("prefix", ""), str)
            and isinstance(config.get("timm_kwargs") or {}, dict))


@contextlib.contextmanager
def open_safetensors(path: str | os.PathLike) -> Iterator[Any]:
    """``safetensors.safe_open(path)`` for torch; a truncated or damaged file is a ValueError naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as error:
        raise ValueError(f"weights file {path} is unreadable (truncated or corrupt?): {error}") from error
    with handle as f:
        yield f


def _torch_load(path: Path) -> Any:
    """torch.load restricted to tensors and plain containers (plus argparse.Namespace, which
    official DINO/CION checkpoints store as ``args``); a file it cannot read so is a ValueError."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    # UnpicklingError: not a pickle, or objects outside the allow-list (a damaged zip: RuntimeError)
    except DAMAGED_FILE_ERRORS + (pickle.UnpicklingError,) as error:
        raise ValueError(f"weights file {path} is not a checkpoint torch.load reads with weights_only=True (truncated, "
                         "corrupt, or holding objects other than tensors and plain containers): "
                         f"{type(error).__name__}: {_load_failure(error)}") from error


def _load_failure(error: Exception) -> str:
    """The reason in torch.load's error, without its advice to load with weights_only=False
    (which runs whatever code the file holds)."""
    text = " ".join(str(error).split())
    reason = text.partition("WeightsUnpickler error:")[2].partition(" Check the documentation")[0].strip()
    return reason or text[:200]


# CION's ReIDZoo ResNet-IBN-a names (its run.py stores them as args.arch): IBN-a with a stride-1
# layer4 (CION_Pretrain/models/ResNet_IBN.py), not timm's stride 2.
_CION_IBN_ARCH = re.compile(r"resnet(18|34|50|101|152)_ibn(_a)?")

# CION's other ReIDZoo names whose networks are timm's (CION_Pretrain/models/*.py copy each family's
# reference code), with what builds them as CION trained them: 256 x 128 input for VOLO and Swin,
# and Swin's detection variant (window 8, every stage partitioned). Not listed: plain ResNets
# (DINO's official ResNet-50 has the same name and a stride-2 layer4: pass last_stride=1), CION's
# ViT (a convolution stem with IBN before the patch projection) and RepViT (its own squeeze-excite):
# other networks than timm's.
_SWIN_AS_CION = {"img_size": (256, 128), "window_size": 8, "always_partition": True}
CION_ZOO_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "ghostnet_0_5": ("ghostnet_050", {}), "ghostnet_1_0": ("ghostnet_100", {}), "ghostnet_1_3": ("ghostnet_130", {}),
    **{f"volo_d{d}": (f"volo_d{d}_224", {"img_size": (256, 128)}) for d in (1, 2, 3)},
    **{f"convnext_{size}": (f"convnext_{size}", {}) for size in ("tiny", "small", "base")},
    **{f"edgenext_{size}": (f"edgenext_{size}", {}) for size in ("x_small", "small", "base")},
    **{name: (name, {}) for name in ("fastvit_s12", "fastvit_sa12", "fastvit_sa24")},
    **{f"swin_{size}": (f"swin_{size}_patch4_window7_224", _SWIN_AS_CION) for size in ("tiny", "small", "base")},
}


def _cion_defaults(checkpoint: Any) -> tuple[str | None, dict[str, Any]]:
    """(timm name, build options) for an official CION checkpoint, from its ``args.arch``; (None, {})
    for any other. ResNet-IBN-a: IBN with ``last_stride=1`` (timm's stride 2 would load every key and
    silently give other features); the names of :data:`CION_ZOO_NAMES`: their timm network."""
    args = checkpoint.get("args") if isinstance(checkpoint, Mapping) else None
    arch = str(getattr(args, "arch", ""))
    match = _CION_IBN_ARCH.fullmatch(arch)
    if match:
        return f"resnet{match.group(1)}", {"ibn": True, "last_stride": 1}
    name, kwargs = CION_ZOO_NAMES.get(arch, (None, {}))
    return name, dict(kwargs)


# Keys a family's reference code names differently from timm that timm's checkpoint_filter_fn leaves:
# the detection Swin's final norm, named after its last output stage.
_EXTRA_RENAMES = {"timm.models.swin_transformer": (("norm3.", "norm."),)}


def _timm_layout(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with a family's reference-code key names (ConvNeXt's ``downsample_layers.*``,
    FastViT's ``network.*``, the original Swin's merging at the end of a stage, ...) renamed to the
    timm network's, by timm's own ``checkpoint_filter_fn`` for that family (what timm applies to those
    repositories' weights); unchanged when the keys already fit or the renaming does not make them."""
    own = set(model.state_dict())
    module = type(model).__module__
    filter_fn = getattr(sys.modules.get(module), "checkpoint_filter_fn", None)
    if set(state) == own or filter_fn is None:
        return state
    try:
        renamed = filter_fn(dict(state), model)
    except Exception:  # a filter written for other checkpoints; the strict load then names the keys
        return state
    for old, new in _EXTRA_RENAMES.get(module, ()):
        renamed = {new + k[len(old):] if k.startswith(old) else k: v for k, v in renamed.items()}
    return renamed if set(renamed) == own else state


def _backbone_state(state: Any, source: str) -> dict[str, torch.Tensor]:
    """Backbone tensors of a checkpoint dict: takes ``["teacher"]`` (or ``["state_dict"]``,
    ``["model"]``) when present, strips ``module.`` and then keeps ``backbone.*`` keys if any."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{source} holds a {type(state).__name__}, expected a state dict (names -> tensors) "
                         "or a checkpoint with a 'teacher' entry")
    for key in ("teacher", "state_dict", "model"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{source} holds no tensors (expected a state dict or a checkpoint with a 'teacher' entry)")
    tensors = {k[len("module."):] if k.startswith("module.") else k: v for k, v in tensors.items()}
    if any(k.startswith("backbone.") for k in tensors):
        tensors = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
    return tensors


NETWORKS = ("exported", "student", "teacher")


def load_pretrained(path_or_state: str | os.PathLike | Mapping[str, Any], name: str | None = None, network: str = "exported",
                    **backbone_kwargs: Any) -> nn.Module:
    """A backbone with pre-trained weights, ready for fine-tuning or feature extraction.

    Args:
        path_or_state: one of
            - our export (``.safetensors`` from ``cion-fast export`` / :func:`save_backbone`) or a
              pre-training checkpoint directory (its ``weights.safetensors``: the teacher backbone);
              the architecture comes from the file, ``name`` may be omitted;
            - an official CION/DINO checkpoint (``.pth``: ``["teacher"]`` with ``module.backbone.``
              keys; the head is dropped) or any file ``torch.load`` reads into a state dict;
            - a state dict (mapping of tensors, same layouts as the files).
        name: timm architecture; required unless the file carries its config. When both are
            given they must agree.
        network: for a pre-training checkpoint, which of its two networks: ``"exported"`` (what
            ``cion-fast export`` writes: the teacher for cion/dino, the query encoder for
            upreid), ``"student"`` or ``"teacher"``. Other sources hold one network: "exported" only.
        **backbone_kwargs: options for :func:`~cion_fast.models.build_backbone` (``ibn=True``,
            ``last_stride=1``, ``img_size=...``); they override the stored config. CION's ResNet
            and ResNet-IBN-a were pre-trained with a stride-1 ``layer4``. A CION ResNet-IBN-a
            checkpoint says so (``args.arch`` ``resnet50_ibn`` ...): ``name``, ``ibn=True`` and
            ``last_stride=1`` are then taken from it unless given. CION's plain ResNets need
            ``last_stride=1`` passed (DINO's official ResNet-50 has the same name and stride 2);
            without it the same weights load into a stride-2 ``layer4`` and give other features.
            CION's GhostNet, VOLO, ConvNeXt, EdgeNeXt, FastViT and Swin checkpoints are recognised
            the same way (:data:`CION_ZOO_NAMES`), and their reference-code key names renamed by
            timm's ``checkpoint_filter_fn`` of the family.

    Returns:
        the backbone (``nn.Module`` on the CPU, float32, training mode) with all weights loaded.

    Raises:
        ValueError: missing/unexpected keys or shape mismatches (named), no architecture known,
            ``name`` disagreeing with the file; a file that holds no state dict (damaged, objects
            outside torch.load's weights_only allow-list, foreign safetensors metadata); a weight
            of the wrong kind (integer where the network holds floats) or with NaN/inf (named).
        TypeError: ``path_or_state`` is neither a path nor a mapping.
        FileNotFoundError: ``path_or_state`` does not exist.

    Example:
        >>> from cion_fast.models import build_backbone
        >>> net = build_backbone("resnet18", ibn=True)
        >>> official = {"teacher": {"module.backbone." + k: v for k, v in net.state_dict().items()}}
        >>> same = load_pretrained(official, "resnet18", ibn=True)
        >>> torch.equal(same.conv1.weight, net.conv1.weight)
        True
    """
    config: dict | None = None
    check_type(path_or_state, "path_or_state", (str, os.PathLike, Mapping))
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
    if network != "exported" and (isinstance(path_or_state, Mapping) or Path(path_or_state).suffix != ".safetensors"
                                  and not Path(path_or_state).is_dir()):
        raise ValueError(f"network={network!r} needs a cion_fast pre-training checkpoint (its weights.safetensors)")
    if isinstance(path_or_state, Mapping):
        source = "path_or_state"
        state = _backbone_state(path_or_state, source)
    else:
        path = Path(path_or_state)
        if path.is_dir():
            if not (path / "weights.safetensors").exists() and (path / "checkpoints").is_dir():
                raise FileNotFoundError(f"path_or_state: {path} is a run directory; pass one of its checkpoints/step-* "
                                        "directories (cion_fast.training.latest_checkpoint finds the newest)")
            path = path / "weights.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"path_or_state: {path} does not exist")
        source = str(path)
        if path.suffix == ".safetensors":
            meta = read_safetensors_config(path)
            prefix = meta.get("prefix", "") if meta else ""
            if network != "exported":
                prefix = f"{network}.backbone."
            config = meta.get("backbone_config") if meta else None
            with open_safetensors(path) as f:
                state = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
            if network != "exported" and not state:
                raise ValueError(f"network={network!r}: {source} holds no {prefix}* tensors (only a pre-training "
                                 "checkpoint holds both networks; an export holds one)")
            if meta is None:
                state = _backbone_state(state, source)
        else:
            loaded = _torch_load(path)
            state = _backbone_state(loaded, source)
            inferred_name, inferred_kwargs = _cion_defaults(loaded)
            if inferred_name:  # what the checkpoint says, unless the caller says otherwise
                name = name or inferred_name
                backbone_kwargs = {**inferred_kwargs, **backbone_kwargs}
    if config is not None:
        if name is not None and name != config["arch"]:
            raise ValueError(f"name {name!r} disagrees with the architecture stored in {source}: {config['arch']!r}")
        merged = dict(config)
        merged["timm_kwargs"] = dict(config.get("timm_kwargs") or {})
        for key in ("last_stride", "ibn"):
            if key in backbone_kwargs:
                merged[key] = backbone_kwargs.pop(key)
        merged["timm_kwargs"].update(backbone_kwargs)
        try:
            model = backbone_from_config(merged)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: its stored backbone_config does not build a backbone: {error}") from error
    else:
        if name is None:
            raise ValueError(f"{source} does not say its architecture: pass name (a timm model name)")
        model = build_backbone(name, **backbone_kwargs)
    _load_strict(model, _timm_layout(model, state), source)
    return model
