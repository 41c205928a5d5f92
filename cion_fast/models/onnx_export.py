"""ONNX export of a backbone, for inference outside PyTorch (onnxruntime, TensorRT, OpenVINO).

The file holds one graph: input ``images``, float32 [B, 3, H, W] (a dynamic batch B, the fixed
H x W given at export), RGB in [0, 1] normalised with the ImageNet mean and std by the caller,
exactly what the network takes in PyTorch; output ``features``, float32 [B, feature_dim], the pooled
backbone features (not L2-normalised). The normalisation is not baked in, so the ONNX model and the
PyTorch model take the same tensor. Its ``cion_fast`` metadata entry is a JSON object recording the
input (size, layout, normalisation) and the backbone's config.

Needs the ``onnx`` extra (``pip install 'cion_fast[onnx]'``: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from cion_fast._checks import check_int, check_type
from cion_fast._io import atomic_write

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "export_onnx"]

INPUT_NAME = "images"
OUTPUT_NAME = "features"
# The exporter's own operator set (the torch.export-based exporter writes 18 and newer without a
# version conversion); the oldest it writes is the one the most runtimes read.
DEFAULT_OPSET = 18
ONNX_METADATA_KEY = "cion_fast"
INPUT_DESCRIPTION = ("float32 [B, 3, H, W] RGB, (pixel / 255 - mean) / std with the ImageNet mean (0.485, 0.456, 0.406) "
                     "and std (0.229, 0.224, 0.225)")
# torch.onnx's ONNXProgram.save moves weights above 1.5 GiB to a second file (one protobuf holds at
# most 2 GiB); the export is one file written atomically, so such a model is refused up front.
_SINGLE_FILE_BYTES = 3 * 2**29


def _image_size(value: Any) -> tuple[int, int]:
    check_type(value, "image_size", (tuple, list))
    if len(value) != 2:
        raise ValueError(f"image_size must be (H, W), got {value!r}")
    return check_int(value[0], "image_size[0]", 1), check_int(value[1], "image_size[1]", 1)


def _import_exporter() -> Any:
    """onnx, after checking that the torch.export-based exporter's packages are installed."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx.export(dynamo=True) translates the graph with it)
    except ImportError as error:
        raise ImportError(f"ONNX export needs onnx and onnxscript ({error}): pip install 'cion_fast[onnx]'") from error
    return onnx


def export_onnx(model: nn.Module, path: str | os.PathLike, image_size: Sequence[int], opset: int = DEFAULT_OPSET) -> Path:
    """Writes ``model`` (in eval mode) as an ONNX file with a dynamic batch axis and a fixed H x W.

    The file is written atomically (a reader sees no half file) and in one piece (no external data).
    The graph is traced by ``torch.onnx.export(dynamo=True)`` from a float32 CPU copy of the model;
    ``model`` itself is not changed. IBN models (InstanceNorm) export as they run in eval mode: the
    InstanceNorm halves normalise each image with its own statistics, the BatchNorm halves use the
    running ones.

    Args:
        model: an ``nn.Module`` mapping float [B, 3, H, W] to pooled float [B, D], any device and
            float dtype: a backbone from :func:`~cion_fast.models.build_backbone` or
            :func:`~cion_fast.models.load_pretrained` (its ``backbone_config`` goes into the metadata).
        path: destination ending in ``.onnx``.
        image_size: (H, W) of the input, fixed in the graph: the size the backbone was trained at
            (``cion-fast export`` reads it from the checkpoint).
        opset: ONNX operator set, 18 (default: read by onnxruntime >= 1.14) or newer.

    Returns:
        the written path. Its input ``images`` is float32 [B, 3, H, W]: RGB scaled to [0, 1], then
        normalised with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) by
        the caller (not baked in: the ONNX model takes what the PyTorch model takes). Its output
        ``features`` is float32 [B, D], the pooled features (not L2-normalised).

    Raises:
        TypeError: ``model`` not an ``nn.Module``, ``image_size`` not a pair of ints, ``opset`` not an int.
        ValueError: ``path`` not ending in ``.onnx``; an ``image_size`` the model does not take or
            that gives no pooled [B, D] features; an ``opset`` the exporter cannot write; weights
            of more than 1.5 GiB.
        ImportError: onnx or onnxscript is not installed.

    Example:
        >>> import tempfile
        >>> from cion_fast.models import build_backbone
        >>> net = build_backbone("test_resnet", ibn=True)
        >>> export_onnx(net, Path(tempfile.mkdtemp()) / "net.onnx", image_size=(64, 0))
        Traceback (most recent call last):
        ...
        ValueError: image_size[1] must be >= 1, got 0

        With the ``onnx`` extra installed (``pip install 'cion_fast[onnx]'``)::

            path = export_onnx(net, "net.onnx", image_size=(64, 32))
            session = onnxruntime.InferenceSession(str(path))
            features = session.run(None, {"images": normalised})[0]  # float32 [B, 3, 64, 32] -> [B, 96]
    """
    check_type(model, "model", (nn.Module,))
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"path must end in .onnx, got {path}")
    height, width = _image_size(image_size)
    opset = check_int(opset, "opset", DEFAULT_OPSET)
    onnx = _import_exporter()
    if opset > onnx.defs.onnx_opset_version():
        raise ValueError(f"opset must be <= {onnx.defs.onnx_opset_version()} (the newest the installed onnx knows), got {opset}")
    weight_bytes = sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
    if weight_bytes > _SINGLE_FILE_BYTES:
        raise ValueError(f"model: its {weight_bytes / 2**30:.2f} GiB of float32 weights exceed the 1.5 GiB a single-file ONNX "
                         "export holds")
    # A copy: export needs eval mode (BatchNorm's running statistics), the CPU and float32 (the
    # documented input), none of which should change the caller's model.
    net = copy.deepcopy(model).to("cpu", torch.float32).eval()
    # Batch 2, not 1: torch.export specialises a dimension whose example size is 1 to a constant.
    example = torch.zeros(2, 3, height, width)
    with torch.no_grad():
        try:
            out = net(example)
        # timm asserts a fixed-grid model's input size; a kernel larger than a too small input is a RuntimeError
        except (AssertionError, RuntimeError) as error:
            raise ValueError(f"image_size: the model does not take {height}x{width} inputs ({error})") from error
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model must return pooled [B, D] features, got {shape} for a [2, 3, {height}, {width}] input")
    program = torch.onnx.export(net, (example,), dynamo=True, verbose=False, opset_version=opset,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    written = program.model.opset_imports.get("", None)
    if written != opset:  # the exporter keeps its own version when converting to the requested one fails
        raise ValueError(f"opset {opset}: the exporter could not convert the graph to it (it has opset {written}); "
                         f"use opset={DEFAULT_OPSET}")
    program.model.metadata_props[ONNX_METADATA_KEY] = json.dumps({
        "format": "cion_fast.backbone.onnx", "backbone_config": getattr(model, "backbone_config", None),
        "image_size": [height, width], "input": INPUT_DESCRIPTION, "output": "float32 [B, D] pooled features"})
    return atomic_write(path, lambda tmp: program.save(tmp, external_data=False))
