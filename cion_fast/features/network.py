"""Feature extraction with a network (its embeddings of many person crops, batched, AMP on GPU) or
from a named source (:data:`MODEL_SPECS`), into memory or into the features file."""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import numpy as np

from cion_fast import _arrays
from cion_fast._checks import check_bytes
from cion_fast._progress import progress_bar
from cion_fast.ops.multicrop import IMAGENET_MEAN, IMAGENET_STD


def _image_source(images: Any) -> Any:
    """The uint8 [M, H, W, 3] array (or sequence of image paths) behind ``images``: its
    ``.images``, ``.frames`` or ``.paths`` when it has one, else itself."""
    for attribute in ("images", "frames", "paths"):
        inner = getattr(images, attribute, None)
        if inner is not None and not callable(inner):
            return inner
    return images


def _load_paths(paths: Sequence[Any], size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [B, H, W, 3] of the image files (:func:`cion_fast.data.read_images`): a batch of
    mixed sizes is resized to ``size`` there; a batch of one size is left to the caller's resize,
    as in-memory arrays are."""
    from cion_fast.data import read_images

    return read_images(list(paths), hint="give size=(H, W) (--size HxW) to resize them", size=size)


def _batches(source: Any, batch_size: int, size: tuple[int, int] | None = None) -> tuple[int, Iterator[np.ndarray]]:
    """(M, iterator of uint8 [B, H, W, 3] host batches)."""
    if _arrays.framework_of(source) is not None:
        _arrays.require_dtype(source, "images", ("uint8",))
        _arrays.require_ndim(source, "images", 4, "[M, H, W, 3]")
        if source.shape[-1] != 3:
            raise ValueError(f"images must be [M, H, W, 3] RGB, got shape {tuple(source.shape)}")
        host = _arrays.to_numpy(source)
        return host.shape[0], (host[i : i + batch_size] for i in range(0, host.shape[0], batch_size))
    if isinstance(source, (list, tuple)) and all(isinstance(p, (str, bytes)) or hasattr(p, "__fspath__") for p in source):
        from cion_fast.data.prefetch import prefetch

        # Image files are decoded by a few threads, the next batches while the network runs on this one.
        paths = list(source)
        workers = max(1, min(4, os.cpu_count() or 1))
        return len(paths), prefetch(lambda i: _load_paths(paths[i : i + batch_size], size), range(0, len(paths), batch_size),
                                    workers=workers, depth=workers + 1)
    raise TypeError(
        "images must be a uint8 [M, H, W, 3] array, a list of image paths, or an object with "
        f"an .images/.frames attribute holding one; got {type(source).__name__}"
    )


def extract_features(
    model: Any,
    images: Any,
    batch_size: int = 256,
    device: Any = None,
    flip: bool = False,
    progress: bool = False,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Embeds person crops with a network.

    Args:
        model: a ``torch.nn.Module`` mapping float [B, 3, H, W] (ImageNet-normalised RGB) to
            [B, D]. It is moved to ``device`` and put in eval mode for the call (its training
            flag is restored afterwards).
        images: uint8 [M, H, W, 3] RGB (numpy or torch), a list of image paths, or an object
            with ``.images`` / ``.frames`` holding either (``ImageSet``, ``Tracklets``).
        batch_size: images per forward pass.
        device: torch device; default CUDA when available, else CPU. On CUDA the forward pass
            runs under ``torch.autocast`` (float16).
        flip: also embed the horizontally flipped crops and average the two features.
        progress: show a progress bar (:mod:`cion_fast._progress`).
        size: (H, W) the crops are resized to first (bilinear, antialiased), e.g. the size the
            network was trained at; None keeps their size.

    Returns:
        float32 numpy [M, D] (not normalised).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> crops = np.full((5, 16, 8, 3), 255, dtype=np.uint8)
        >>> f = extract_features(net, crops, batch_size=2, device="cpu")
        >>> f.shape, f.dtype, [round(float(v), 3) for v in f[0]]
        ((5, 3), dtype('float32'), [2.249, 2.429, 2.64])
    """
    import torch

    from cion_fast.training.distributed import torch_device

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    device = torch_device(device)
    if size is not None:
        size = tuple(size)
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
            raise ValueError(f"size must be (H, W) with positive ints, got {size!r}")
        # refused here, not by the allocator halfway through: one batch of resized float32 crops
        check_bytes(4 * 3 * batch_size * size[0] * size[1], f"size {size[0]}x{size[1]}", f"a batch of {batch_size} resized crops")
    total, batches = _batches(_image_source(images), batch_size, size)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0
    was_training = model.training
    model.to(device).eval()
    outputs = []
    try:
        with progress_bar(total, "extract", "img", enabled=progress) as bar, torch.inference_mode(), \
                torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            for batch in batches:
                batch = np.ascontiguousarray(batch) if batch.flags.writeable else np.array(batch)  # e.g. memory-mapped
                x = torch.from_numpy(batch).to(device, non_blocking=True)
                x = x.permute(0, 3, 1, 2).float()
                if size is not None and tuple(x.shape[2:]) != size:
                    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
                features = _embed(model, (x - mean) / std, flip)
                if features.ndim != 2 or features.shape[0] != x.shape[0]:
                    raise ValueError(f"model must return [B, D] features, got shape {tuple(features.shape)}")
                outputs.append(features.cpu().numpy())
                bar.update(x.shape[0])
    finally:
        batches.close()  # the generator's: stops the read-ahead threads on an error too
        model.train(was_training)
    if not outputs:
        return np.empty((0, 0), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32, copy=False)


def _embed(model: Any, x: Any, flip: bool) -> Any:
    """float [B, D] features of the normalised crops ``x``, averaged with the mirrored crops' when
    ``flip``. A network built for one input size (a ViT's patch grid: timm asserts it) refusing
    the crops' size is a ValueError that says which size to give."""
    try:
        features = model(x).float()
        return (features + model(x.flip(3)).float()) / 2 if flip else features
    except AssertionError as error:
        raise ValueError(f"size: the model does not take crops of {x.shape[2]}x{x.shape[3]} ({error}); give size=(H, W) "
                         "(--size HxW) of its input") from error


# The feature sources `cion-fast extract --model` and extract_by_spec accept, with what each means.
MODEL_SPECS = ("stripe (training-free colour/texture descriptor), timm:NAME (a timm backbone, random weights: nothing is "
               "downloaded), checkpoint:PATH (an exported backbone .safetensors, a pre-training checkpoint or its run directory: the newest, see cion-fast "
               "export) or oracle (ground truth + camera shift + noise: only to measure denoising on synthetic data)")


def extract_by_spec(spec: str, tracklets: Any, batch_size: int = 256, device: str | None = None, flip: bool = False,
                    size: tuple[int, int] | None = None, progress: bool = True, name: str = "model",
                    frames: tuple[int, int] | None = None) -> np.ndarray:
    """Frame features of a tracklet set from a feature source named by ``spec`` (see :data:`MODEL_SPECS`).

    Args:
        spec: ``"stripe"``, ``"oracle"``, ``"timm:NAME"`` (random weights, seeded with 0 so every
            run and every rank has the same network) or ``"checkpoint:PATH"``.
        tracklets: a :class:`cion_fast.data.Tracklets` (frames in memory, memory-mapped or paths).
        batch_size, device, flip, size: network sources only, as :func:`extract_features`.
        progress: a progress bar over the chunks / batches.
        name: what errors call ``spec`` (the CLI passes ``"--model"``).
        frames: ``(start, stop)``: only these frames (a shard), default all.

    Returns:
        float32 [stop - start, D] numpy array, one row per frame in the tracklets' order.

    Raises:
        ValueError: an unknown ``spec``, or ``oracle`` on tracklets without ground truth.

    Example:
        >>> from cion_fast.data.synth import WorldConfig, generate
        >>> tracklets = generate(WorldConfig.quick(identities=4, train_identities=2, eval_identities=2, videos=1)).tracklets
        >>> extract_by_spec("stripe", tracklets, progress=False).shape[0] == tracklets.num_frames
        True
        >>> extract_by_spec("stripe", tracklets, progress=False, frames=(2, 5)).shape[0]
        3
        >>> extract_by_spec("resnet", tracklets)
        Traceback (most recent call last):
        ...
        ValueError: model must be stripe, oracle, timm:NAME or checkpoint:PATH, got 'resnet'
    """
    kind, _, source = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    start, stop = (0, tracklets.num_frames) if frames is None else (int(frames[0]), int(frames[1]))
    if not 0 <= start <= stop <= tracklets.num_frames:
        raise ValueError(f"frames must be a range inside [0, {tracklets.num_frames}], got {frames!r}")
    if spec == "stripe":
        from cion_fast.features.stripe import stripe_histogram

        # Chunks of about 2 MB of pixels (the descriptor needs ~20x that): frames may be memory-mapped
        # and larger than memory.
        frame_bytes = max(1, int(np.prod(tracklets.frames.shape[1:]))) if tracklets.has_pixels else 128 * 64 * 3
        chunk = max(1, min(4096, (2 << 20) // frame_bytes))
        firsts = range(start, stop, chunk)
        parts = []
        with progress_bar(len(firsts), "stripe", "chunk", enabled=progress) as bar:
            for first in firsts:
                parts.append(stripe_histogram(tracklets.images(np.arange(first, min(first + chunk, stop)))))
                bar.update(1)
        return np.concatenate(parts) if parts else np.empty((0, 0), np.float32)
    if spec == "oracle":
        from cion_fast.features.oracle import oracle_features

        if not (tracklets.identity >= 0).any():
            raise ValueError(f"{name} oracle needs ground-truth identities (a synthetic world)")
        return oracle_features(tracklets.identity, np.repeat(tracklets.camera, tracklets.lengths))[start:stop]
    if kind in ("timm", "checkpoint") and source:
        import torch

        from cion_fast.models import build_backbone, load_pretrained
        from cion_fast.training import latest_checkpoint

        if kind == "timm":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = build_backbone(source)
        else:
            model = load_pretrained(latest_checkpoint(source) or source)  # a run directory: its newest
        return extract_features(model, tracklets.frames[start:stop], batch_size, device, flip=flip, progress=progress, size=size)
    raise ValueError(f"{name} must be stripe, oracle, timm:NAME or checkpoint:PATH, got {spec!r}")


def extract_to_file(spec: str, tracklets: Any, out: str | os.PathLike, batch_size: int = 256, device: str | None = None,
                    flip: bool = False, size: tuple[int, int] | None = None, float16: bool = False, progress: bool = True,
                    name: str = "model") -> dict[str, Any]:
    """Extracts the frame features of ``tracklets`` (:func:`extract_by_spec`) into the features file
    ``out`` (:func:`cion_fast.features.io.save_features`), on one process or sharded under ``torchrun``.

    With ``WORLD_SIZE`` > 1 (torchrun, one node or many with its usual rendezvous) each rank embeds
    one contiguous range of frames (whole batches, so every batch is the one a single process
    would run: the features are identical), writes it atomically to ``OUT.shards/`` with a manifest,
    and rank 0 merges the shards into ``out`` and removes them. A rerun skips the shards already
    written for the same spec, frames and settings (an interrupted job keeps its finished ranks'
    work). Ranks meet on a gloo process group (the device's, NCCL, is not needed: nothing but
    files is exchanged).

    Args:
        spec, tracklets, batch_size, device, flip, size, progress, name: as :func:`extract_by_spec`.
        out: the features file (``.npz``); written atomically.
        float16: store the features as float16 (half the size).

    Returns:
        dict with ``path`` (``out``; None on ranks other than 0), ``frames`` (this rank's count),
        ``shape`` (the merged features' shape on rank 0), ``seconds``, ``rank``, ``world_size``,
        ``skipped`` (True when this rank's shard was already there).

    Example:
        >>> import tempfile, os
        >>> from cion_fast.data.synth import WorldConfig, generate
        >>> from cion_fast.features.io import load_features
        >>> tracklets = generate(WorldConfig.quick(identities=4, train_identities=2, eval_identities=2, videos=1)).tracklets
        >>> done = extract_to_file("stripe", tracklets, os.path.join(tempfile.mkdtemp(), "f.npz"), progress=False)
        >>> load_features(done["path"]).features.shape[0] == tracklets.num_frames, done["world_size"]
        (True, 1)
    """
    import json
    import shutil
    import time
    from pathlib import Path

    from cion_fast._io import atomic_write, atomic_write_json, load_numpy
    from cion_fast.features.io import save_features

    start_time = time.perf_counter()
    out = Path(out)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        features = extract_by_spec(spec, tracklets, batch_size, device, flip=flip, size=size, progress=progress, name=name)
        features = features.astype(np.float16) if float16 else features
        path = save_features(out, features, tracklets, spec)
        return {"path": path, "frames": tracklets.num_frames, "shape": tuple(features.shape),
                "seconds": time.perf_counter() - start_time, "rank": 0, "world_size": 1, "skipped": False}

    from cion_fast.training.distributed import Distributed

    # device None: this rank's GPU (cuda:LOCAL_RANK) when there is one. Ranks meet only at the end,
    # after uneven work (a rerun skips finished shards): the barrier may wait as long as a shard takes.
    dist = Distributed(device, backend="gloo", timeout_s=7 * 24 * 3600.0)
    device = str(dist.device)
    try:
        rank, world = dist.rank, dist.world_size
        batches = -(-tracklets.num_frames // batch_size)
        bounds = [min(tracklets.num_frames, (batches * r // world) * batch_size) for r in range(world + 1)]
        shard_dir = out.with_name(out.name + ".shards")
        settings = {"spec": spec, "num_frames": int(tracklets.num_frames), "batch_size": batch_size, "flip": bool(flip),
                    "size": list(size) if size else None, "float16": bool(float16), "world_size": world}

        def shard_paths(r: int) -> tuple[Path, Path]:
            stem = f"shard-{bounds[r]:012d}-{bounds[r + 1]:012d}"
            return shard_dir / f"{stem}.npy", shard_dir / f"{stem}.json"

        def finished(r: int) -> bool:
            data, manifest = shard_paths(r)
            try:
                return data.is_file() and json.loads(manifest.read_text()) == settings
            except (OSError, ValueError):
                return False

        skipped = finished(rank)
        if not skipped:
            features = extract_by_spec(spec, tracklets, batch_size, device, flip=flip, size=size, progress=progress and rank == 0,
                                       name=name, frames=(bounds[rank], bounds[rank + 1]))
            features = features.astype(np.float16) if float16 else features
            data, manifest = shard_paths(rank)
            shard_dir.mkdir(parents=True, exist_ok=True)
            def write_shard(temporary: Path) -> None:
                with open(temporary, "wb") as f:  # a file object: np.save would append ".npy" to a name
                    np.save(f, np.ascontiguousarray(features))

            atomic_write(data, write_shard)
            atomic_write_json(manifest, settings)  # after the data: a manifest means a whole shard
        dist.barrier()
        path, shape = None, None
        if dist.is_main:
            missing = [r for r in range(world) if not finished(r)]
            if missing:
                raise RuntimeError(f"shards of ranks {missing} are missing in {shard_dir}")
            parts = [load_numpy(shard_paths(r)[0], "feature shard", mmap_mode="r") for r in range(world)]
            parts = [p for p in parts if p.shape[0]] or [np.empty((0, 0), np.float32)]
            path = save_features(out, parts, tracklets, spec)  # streamed from the mapped shards
            shape = (sum(p.shape[0] for p in parts), parts[0].shape[1])
            del parts
            shutil.rmtree(shard_dir, ignore_errors=True)
        dist.barrier()
        return {"path": path, "frames": bounds[rank + 1] - bounds[rank], "shape": shape, "seconds": time.perf_counter() - start_time,
                "rank": rank, "world_size": world, "skipped": skipped}
    finally:
        dist.close()
