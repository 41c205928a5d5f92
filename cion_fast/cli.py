"""The ``cion-fast`` command line. Only wiring: every subcommand calls into the library.

Run ``cion-fast --help`` for the list of subcommands and ``cion-fast <command> --help`` for each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable

from cion_fast._io import OutputError

# Each entry: name -> (help, function adding the subcommand's arguments, function running it).
_COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str):
    """Registers ``run(args) -> exit code`` as subcommand ``name``. The function's
    ``add_arguments(parser)`` attribute, if any, adds its arguments; it is read when the parser is
    built, so it may be set before or after decorating."""

    def register(run: Callable[[argparse.Namespace], int]):
        _COMMANDS[name] = (help, run)
        return run

    return register


@command("info", "print what was compiled (OpenMP, CUDA, architectures) and whether a GPU is usable")
def _info(args: argparse.Namespace) -> int:
    import cion_fast

    info = cion_fast.build_info()
    info["cuda_available"] = cion_fast.cuda_available()
    print(json.dumps(info, indent=2))
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    """argparse type: "HxW" with both sides >= 2 pixels."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 128x64 or 256x128, got {text!r}") from None
    if min(h, w) < 2:
        raise argparse.ArgumentTypeError(f"size must be at least 2x2 pixels, got {text!r}")
    return h, w


_REPORT_DEFAULTS = {"report_steps": 300, "report_arch": "test_resnet"}


def _synth_arguments(parser: argparse.ArgumentParser) -> None:
    from cion_fast.data.synth import WorldConfig

    default, quick = WorldConfig(), WorldConfig.quick()
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory: DIR/tracklets (tracklet directory), DIR/market (Market-1501 layout), "
                             "DIR/summary.json")
    parser.add_argument("--quick", action="store_true", help="small world that renders in seconds (tests, smoke runs)")
    for name, what in (("identities", "people walking through the videos"), ("cameras", "cameras"), ("videos", "videos")):
        parser.add_argument(f"--{name}", type=int,
                            help=f"{what} (default {getattr(default, name)}; quick {getattr(quick, name)})")
    parser.add_argument("--size", type=_parse_size, help="crop size HxW: 128x64 (default) or 256x128")
    parser.add_argument("--seed", type=int, help=f"world seed (default {default.seed})")
    parser.add_argument("--camera-strength", type=float, metavar="S",
                        help=f"how much the cameras differ, 0 = identical (default {default.camera_strength}, calibrated: "
                             "see --report)")
    parser.add_argument("--image-format", choices=("png", "jpg"), default="png",
                        help="Market-1501 image files: png (lossless, default) or jpg")
    parser.add_argument("--samples", metavar="PNG", help="also write a contact sheet of rendered samples")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR/tracklets and DIR/market if they exist")
    parser.add_argument("--report", action="store_true",
                        help="also measure the difficulty: retrieval mAP of the stripe descriptor, of a random-init backbone "
                             "and of the same backbone trained on the true identities (needs the [torch] extra; ~1-2 min "
                             "on a CPU)")
    parser.add_argument("--report-steps", type=_positive_int, metavar="N",
                        help=f"supervised steps for --report (default {_REPORT_DEFAULTS['report_steps']})")
    parser.add_argument("--report-arch", metavar="NAME",
                        help=f"timm backbone for --report (default {_REPORT_DEFAULTS['report_arch']}, the demo's)")


def _synth(args: argparse.Namespace) -> int:
    """Generates a synthetic world (``cion_fast.data.synth``), writes it and prints a summary."""
    import time

    from cion_fast._progress import progress_bar
    from cion_fast.data import synth

    report_options = [name for name in _REPORT_DEFAULTS if getattr(args, name) is not None]
    if report_options and not args.report:
        raise ValueError(f"--{report_options[0].replace('_', '-')} only applies with --report")
    for name, default in _REPORT_DEFAULTS.items():
        setattr(args, name, default if getattr(args, name) is None else getattr(args, name))
    overrides = {k: getattr(args, k) for k in ("identities", "cameras", "videos", "seed", "camera_strength")
                 if getattr(args, k) is not None}
    if args.size is not None:
        overrides["image_size"] = args.size
    config = synth.WorldConfig.quick(**overrides) if args.quick else synth.WorldConfig(**overrides)
    from pathlib import Path

    existing = [str(Path(args.out) / d) for d in ("tracklets", "market") if (Path(args.out) / d).exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    if args.samples:  # first: a bad path fails before the world is rendered and written
        synth.sample_sheet(config, path=args.samples)
    bar = []

    def progress(done: int, total: int) -> None:
        if not bar:
            bar.append(progress_bar(total, "rendering", "frame"))
        bar[0].update(done - bar[0].n)

    try:
        world = synth.generate(config, progress=progress)
    finally:
        for opened in bar:  # closed before any error message, which then starts a line of its own
            opened.close()
    t0 = time.perf_counter()
    out = world.save(args.out, image_format=args.image_format, overwrite=args.overwrite)
    write_seconds = time.perf_counter() - t0
    _print_world(world, config, out, write_seconds, args.samples)
    if args.report:
        _difficulty(world, out, args.report_steps, args.report_arch)
    return 0


def _print_world(world, config, out, write_seconds: float, samples: str | None) -> None:
    """The summary of a written synthetic world: counts, tracker noise, rendering speed, files."""
    s = world.summary()
    c, noise, speed = s["counts"], s["tracker_noise"], s["speed"]
    measured, configured = noise["measured"], noise["configured"]
    print(f"synthetic world (seed {config.seed}, {config.image_size[0]}x{config.image_size[1]}) -> {out}")
    print(f"  tracklets : {c['tracklets']} tracklets, {c['tracklet_frames']} frames, {c['videos']} videos, "
          f"{config.cameras} cameras, {c['identities_in_videos']} identities")
    print(f"  train     : {c['train_images']} images of {c['train_identities']} identities")
    print(f"  query     : {c['query_images']} images; gallery: {c['gallery_images']} images "
          f"({c['gallery_distractors']} distractors) of {c['eval_identities']} identities")
    print("  tracker noise, measured (configured): " + ", ".join(
        f"{k.replace('_', ' ')} {measured[k]:.3f} ({configured[k]:.3f})" for k in measured)
        + f"; purity {noise['purity']:.3f}")
    print(f"  rendering : {speed['frames_rendered']} frames in {speed['render_seconds']:.2f} s = "
          f"{speed['frames_per_second']:.0f} frames/s, {speed['frames_per_cpu_second']:.0f} frames per CPU-second "
          f"(planning {speed['plan_seconds']:.2f} s, writing {write_seconds:.2f} s)")
    print(f"  wrote     : {out / 'tracklets'}, {out / 'market'}, {out / 'summary.json'}" + (f", {samples}" if samples else ""))


def _difficulty(world, out, steps: int, arch: str) -> None:
    """``synth --report``: retrieval mAP of the stripe descriptor, random init and a supervised run."""
    from cion_fast._io import atomic_write_json
    from cion_fast.finetune import difficulty_report

    report = difficulty_report(world.train, world.query, world.gallery, out / "difficulty_run", steps=steps, arch=arch,
                               progress=True)
    atomic_write_json(out / "difficulty.json", {"steps": steps, "arch": arch, **report})
    print(f"  difficulty ({arch}, query/gallery, %): " + "; ".join(
        f"{name} mAP {100 * r['mAP']:.1f} (camera-normalised {100 * r['mAP_camnorm']:.1f})"
        for name, r in (("stripe descriptor", report["stripe"]), ("random init", report["random"]),
                        (f"trained on true identities {steps} steps", report["trained"]))))
    print(f"  wrote     : {out / 'difficulty.json'}")


_synth.add_arguments = _synth_arguments
command("synth", "generate the synthetic pedestrian world: noisy tracklets + a Market-1501-style labelled split")(_synth)


def _extract_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="tracklet directory (cion-fast synth writes DIR/tracklets)")
    from cion_fast.features import MODEL_SPECS

    parser.add_argument("--model", required=True, help=MODEL_SPECS)
    parser.add_argument("--out", required=True, help="output .npz (features, offsets and the index)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--batch-size", type=_positive_int, default=256)
    parser.add_argument("--size", type=_parse_size, metavar="HxW",
                        help="network models: resize the crops to the training size first (64x32 for the demo's backbones; "
                             "a network built for one input size needs it, e.g. 224x224 for timm:vit_tiny_patch16_224)")
    parser.add_argument("--device", default=None, help="network models: cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--flip", action="store_true", help="network models: average with the flipped crop")
    parser.add_argument("--float16", action="store_true", help="store the features as float16 (half the size)")


def _extract(args: argparse.Namespace) -> int:
    """Frame features of a tracklet directory; under torchrun, sharded across the ranks."""
    from pathlib import Path

    from cion_fast.data import Tracklets
    from cion_fast.features import extract_to_file

    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists (pass --overwrite to replace it)")
    tracklets = Tracklets.load(args.data)
    done = extract_to_file(args.model, tracklets, args.out, args.batch_size, args.device, flip=args.flip, size=args.size,
                           float16=args.float16, name="--model")
    if done["rank"] == 0:
        ranks = f" on {done['world_size']} ranks" if done["world_size"] > 1 else ""
        print(f"{tracklets.num_frames} frames -> {done['shape']}{' float16' if args.float16 else ''}{ranks} in {done['seconds']:.1f} s "
              f"({tracklets.num_frames / max(done['seconds'], 1e-9):.0f} frames/s); wrote {done['path']}")
    return 0


_extract.add_arguments = _extract_arguments
command("extract", "frame features of a tracklet directory (stripe descriptor or a timm backbone); torchrun shards the frames")(_extract)


def _tracklets_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mot", required=True, metavar="TXT",
                        help="tracker output in MOTChallenge text: frame,id,x,y,w,h,conf,... (1-based frames, pixels)")
    parser.add_argument("--frames", required=True, metavar="DIR|VIDEO",
                        help="the frames: a folder of images (000001.jpg = frame 1) or a video file (needs PyAV: pip install av)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the tracklet directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--size", type=_parse_size, default=(256, 128), metavar="HxW", help="crop size (default 256x128)")
    parser.add_argument("--min-height", type=int, default=0, metavar="N", help="drop boxes less than N pixels high (after clipping)")
    parser.add_argument("--min-length", type=int, default=1, metavar="N", help="drop tracks left with fewer than N boxes")
    parser.add_argument("--min-confidence", type=float, default=None, metavar="X", help="drop boxes of confidence below X")
    parser.add_argument("--video", type=int, default=0, help="the video id of the tracklets (default 0)")
    parser.add_argument("--camera", type=int, default=0, help="the camera id of the tracklets (default 0)")


def _tracklets(args: argparse.Namespace) -> int:
    """Tracker output (MOTChallenge text + frames) -> a tracklet directory."""
    from pathlib import Path

    from cion_fast.data import tracklets_from_mot

    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists (pass --overwrite to replace it)")
    t = tracklets_from_mot(args.mot, args.frames, args.out, size=args.size, min_height=args.min_height,
                           min_length=args.min_length, min_confidence=args.min_confidence, video=args.video,
                           camera=args.camera, overwrite=args.overwrite, log=print)
    print(f"{t.num_tracklets} tracklets, {t.num_frames} crops {args.size[0]}x{args.size[1]}; wrote {args.out}")
    return 0


_tracklets.add_arguments = _tracklets_arguments
command("tracklets", "tracker output in MOTChallenge text + its frames (folder or video) -> a tracklet directory")(_tracklets)


def _denoise_arguments(parser: argparse.ArgumentParser) -> None:
    from dataclasses import fields

    from cion_fast.denoise import DenoiseConfig
    from cion_fast.denoise.config import THRESHOLD_MODES

    parser.add_argument("--tracklets", required=True, help="tracklet directory (index and ground truth)")
    parser.add_argument("--features", required=True, help="features .npz from cion-fast extract")
    parser.add_argument("--out", required=True, help="output directory: labels.npy, levels.npz, report.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--scratch", metavar="DIR", type=_existing_directory,
                        help="keep the video-centred copy of the features in a memory-mapped file there, not in memory "
                             "(LUPerson-NL: 5 GB of disk instead of 5 GB of RAM); removed at the end")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the levels run (default cpu); cuda uploads the features to the GPU and centres and "
                             "denoises them there (needs a CUDA build and torch; not with --scratch)")
    group = parser.add_argument_group("the levels (cion_fast.denoise.DenoiseConfig)")
    # user data: the thresholds are chosen from the data unless fixed values are asked for
    group.add_argument("--thresholds", choices=THRESHOLD_MODES,
                       help="auto: the four thresholds from the data (tracklet positives vs same-frame negatives); "
                            "fixed: the values below (default auto, or fixed when any of the four is given)")
    config_arguments(group, DenoiseConfig, tuple(f.name for f in fields(DenoiseConfig) if f.name != "thresholds"))


def _denoise(args: argparse.Namespace) -> int:
    from dataclasses import fields

    import numpy as np

    from cion_fast.data import Tracklets
    from cion_fast.denoise import DenoiseConfig, format_quality_table
    from cion_fast.denoise.io import THRESHOLD_NAMES, denoise_to_directory, estimate_items
    from cion_fast.features.io import load_features

    given = [name for name in THRESHOLD_NAMES if getattr(args, name) is not None]
    if given and args.thresholds == "auto":
        raise ValueError(f"--thresholds auto chooses {', '.join(given)} from the data; drop them or use --thresholds fixed")
    values = config_overrides(args, tuple(field.name for field in fields(DenoiseConfig) if field.name != "thresholds"))
    config = DenoiseConfig(**values, thresholds=args.thresholds or ("fixed" if given else "auto"))
    tracklets = Tracklets.load(args.tracklets)
    stored = load_features(args.features)
    if not (np.array_equal(stored.offsets, tracklets.offsets) and np.array_equal(stored.frame_index, tracklets.frame_index)):
        raise ValueError(f"{args.features} was not extracted from {args.tracklets} (offsets / frame indices differ)")
    inputs = {"tracklet_directory": str(args.tracklets), "features_file": str(args.features), "model": stored.model,
              "frames": int(tracklets.num_frames), "tracklets": int(tracklets.num_tracklets), "device": args.device}
    done = denoise_to_directory(args.out, tracklets, stored.features, config, progress=not args.no_progress,
                                scratch=args.scratch, device=args.device, inputs=inputs, overwrite=args.overwrite)
    if done.quality is not None:
        print(format_quality_table(done.quality))
    for summary in done.result.summary:
        print("  ".join(f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}" for key, value in summary.items()))
    if done.result.estimate is not None:
        print("label-free estimate: " + "  ".join(f"{k}={v}" for k, v in estimate_items(done.result.estimate)))
    final = done.result.summary[-1]
    print(f"{final['images']} frames in {final['identities']} identities; wrote {done.directory}")
    return 0


_denoise.add_arguments = _denoise_arguments
command("denoise", "CION's three denoising levels: tracklets + features -> pseudo-identity labels")(_denoise)


def _csv(kind):
    """argparse type: comma-separated values of ``kind`` ("2,4,6,8" -> (2, 4, 6, 8))."""

    def parse(text: str):
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None

    return parse


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


_EXPLICIT_NONE = object()  # "none" given for an optional field (None itself means "not given")


def config_arguments(parser, cls, names: tuple[str, ...], flags: dict[str, str] | None = None,
                     types: dict[str, Callable] | None = None) -> None:
    """Adds one ``--flag`` per config field in ``names``: type, choices and help come from the
    field's declaration (:func:`cion_fast._checks.checked`), the default shown is the config's.

    Every flag defaults to None, meaning "not given": the config's own default applies (or, on
    ``--resume``, the checkpoint's value); :func:`config_overrides` collects the given ones.
    ``flags`` renames (field -> flag name), ``types`` parses (field -> argparse type).
    """
    from dataclasses import MISSING, fields

    from cion_fast._checks import check_choice, describe

    flags, types = flags or {}, types or {}
    by_name = {field.name: field for field in fields(cls)}
    for name in names:
        field = by_name[name]
        flag = "--" + flags.get(name, name).replace("_", "-")
        default = field.default if field.default is not MISSING else field.default_factory()
        check, args = field.metadata.get("check", (None, ()))
        accepted = "" if check is check_choice else describe(field)  # argparse lists the choices itself
        text = "; ".join(part for part in (field.metadata.get("help", ""), accepted) if part)
        if isinstance(default, tuple):  # shown as typed: 2,4,6,8 or 256x128
            default = ("x" if types.get(name) is _parse_size else ",").join(map(str, default))
        text += f" (default {default})" if default is not None else ""
        text = text.replace("%", "%%")
        if field.type.startswith("bool"):
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        kind = types.get(name) or (int if field.type.startswith("int") else float if field.type.startswith("float") else str)
        if field.metadata.get("optional"):  # "none" sets None explicitly (e.g. to switch an option off on --resume)
            kind = (lambda text, kind=kind: _EXPLICIT_NONE if text.lower() == "none" else kind(text))
            text += "; none = off"
        choices = args[0] if check is check_choice else None
        parser.add_argument(flag, dest=name, type=kind, choices=choices, default=None, help=text,
                            metavar=None if choices else flags.get(name, name).upper())


def config_overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The config fields among ``names`` given on the command line (see :func:`config_arguments`)."""
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return {name: None if value is _EXPLICIT_NONE else value for name, value in given.items()}


# PretrainConfig fields with a flag of their own (--lr for base_lr); the rest are set in Python.
_PRETRAIN_FIELDS = ("method", "arch", "last_stride", "ibn", "steps", "epochs", "batch_size", "seed", "k_values",
                    "k_boundaries", "base_lr", "min_lr", "warmup", "clip_grad", "freeze_last_layer", "out_dim",
                    "teacher_temp", "teacher_temp_final", "upreid_terms", "queue_size", "amp", "deterministic", "device",
                    "checkpoint_every", "keep_checkpoints", "log_every", "progress")


def _pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    from cion_fast.ops import MultiCropConfig
    from cion_fast.pretrain import PretrainConfig

    parser.add_argument("--data", required=True, metavar="DIR", help="tracklet directory (cion_fast.data.Tracklets.load)")
    parser.add_argument("--labels", metavar="LABELS",
                        help="int64 .npy, one identity per frame (-1 = dropped), e.g. the denoised labels; 'tracklet' uses "
                             "the raw tracklet index (the tracklet-level baseline); omit for dino/upreid")
    parser.add_argument("--out", required=True, metavar="DIR", help="run directory: config.json, log.jsonl, checkpoints/")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    parser.add_argument("--timm-kwarg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="extra timm.create_model argument, repeatable (e.g. drop_path_rate=0.1); VALUE is read as "
                             "JSON when it parses (0.1, true, null), else as text; the model's constructor checks it")
    views = MultiCropConfig.cion()
    for name, what in (("global_size", "global view size"), ("local_size", "local view size")):
        size = getattr(views, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=_parse_size, metavar="HxW",
                            help=f"{what} (default {size[0]}x{size[1]})")
    parser.add_argument("--n-local", type=int, help=f"local views per image (default {views.n_local}; upreid 0)")
    group = parser.add_argument_group("the run (cion_fast.pretrain.PretrainConfig)")
    config_arguments(group, PretrainConfig, _PRETRAIN_FIELDS, flags={"base_lr": "lr"},
                     types={"k_values": _csv(int), "k_boundaries": _csv(float), "upreid_terms": _csv(str)})


def _pretrain_config_overrides(args: argparse.Namespace) -> dict:
    overrides = config_overrides(args, _PRETRAIN_FIELDS)
    if args.timm_kwarg:
        overrides["timm_kwargs"] = dict(args.timm_kwarg)
    multicrop = {name: getattr(args, name) for name in ("global_size", "local_size", "n_local") if getattr(args, name) is not None}
    if multicrop:
        overrides["multicrop"] = multicrop
    return overrides


def _load_training_data(args: argparse.Namespace):
    """(frames uint8 [M, H, W, 3], labels or None) from --data and --labels, as read: the trainer
    checks the labels against the frames (``cion_fast.pretrain.Trainer``)."""
    import numpy as np

    from cion_fast.data import Tracklets

    tracklets = Tracklets.load(args.data)
    if not tracklets.has_pixels:
        raise ValueError(f"--data {args.data}: the tracklets store image paths; pre-training reads one uint8 pixel array "
                         "(save them with array storage first)")
    if args.labels is None:
        return tracklets.frames, None
    if args.labels == "tracklet":
        return tracklets.frames, tracklets.tracklet_of_frame.astype(np.int64)
    try:
        labels = np.load(args.labels, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"--labels {args.labels}: cannot read an int64 .npy array ({error})") from error
    if not isinstance(labels, np.ndarray):  # np.load opens an .npz archive (e.g. a features file) as NpzFile
        labels.close()
        raise ValueError(f"--labels {args.labels} is an .npz archive, not an .npy array of one label per frame "
                         "(cion-fast denoise writes labels.npy)")
    return tracklets.frames, labels


def _pretrain(args: argparse.Namespace) -> int:
    """Runs ``cion_fast.pretrain.pretrain`` from command-line options."""
    from cion_fast.pretrain import PretrainConfig, pretrain

    overrides = _pretrain_config_overrides(args)
    if args.resume:
        from cion_fast.training import read_checkpoint

        _, state = read_checkpoint(args.out, with_tensors=False)
        saved = PretrainConfig.from_dict(state["config"])
        config = PretrainConfig.from_dict({**saved.to_dict(), **overrides})
    else:
        if args.method is None:
            raise ValueError("--method is required for a new run")
        if overrides.get("steps") is None and overrides.get("epochs") is None:
            raise ValueError("give --steps or --epochs")
        config = PretrainConfig(**overrides)
    frames, labels = _load_training_data(args)
    summary = pretrain(config, frames, labels, args.out, resume=args.resume)
    if summary["rank"] == 0:
        print(json.dumps(summary, indent=2))
    if summary["interrupted"]:
        print(f"interrupted at step {summary['step']}; checkpoint {summary['checkpoint']}; continue with --resume", file=sys.stderr)
        return 128 + int(summary["interrupted"])
    return 0


_pretrain.add_arguments = _pretrain_arguments
command("pretrain", "pre-train a backbone: CION (identity-guided distillation), DINO or UP-ReID; torchrun for many GPUs")(_pretrain)


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="C",
                        help="a checkpoint directory, a run directory (newest) or an exported backbone .safetensors")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="backbone .safetensors (a .json config is written beside) or, with --format onnx, .onnx")
    parser.add_argument("--format", choices=("safetensors", "onnx"), default="safetensors",
                        help="safetensors (default; cion_fast.models.load_pretrained reads it) or onnx: input 'images' float32 "
                             "[B, 3, H, W] RGB in [0, 1] normalised with the ImageNet mean/std by the caller, dynamic B, fixed "
                             "HxW; output 'features' float32 [B, D], the pooled features (needs pip install 'cion_fast[onnx]')")
    parser.add_argument("--size", type=_parse_size, metavar="HxW",
                        help="onnx: the input size fixed in the graph (default: the size the checkpoint was trained at; "
                             "required when it does not say, e.g. a CNN's .safetensors export)")
    parser.add_argument("--opset", type=int, metavar="N", help="onnx: the ONNX operator set (default 18, >= 18)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _export(args: argparse.Namespace) -> int:
    """Writes a checkpoint's backbone for ``cion_fast.models.load_pretrained`` or as ONNX."""
    from cion_fast.training import export_backbone

    from pathlib import Path

    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists (pass --overwrite to replace it)")
    path = export_backbone(args.checkpoint, args.out, args.format, args.size, args.opset)
    print(f"wrote {path}" + (f" and {path.with_suffix('.json')}" if args.format == "safetensors" else ""))
    return 0


_export.add_arguments = _export_arguments
command("export", "export a checkpoint's backbone as safetensors + JSON config (load_pretrained) or as ONNX")(_export)


# FinetuneConfig fields with a flag of their own (--lr for base_lr, --size for image_size).
_FINETUNE_FIELDS = ("arch", "ibn", "init", "steps", "epochs", "batch_size", "image_size", "base_lr", "seed",
                    "checkpoint_every", "device", "progress")


_RERANK_HELP = ("also evaluate with k-reciprocal re-ranking (k1=20, k2=6, lambda 0.3, the paper's; a split of at most 20 "
                "query + gallery images is refused: too small for k1=20)")

_DATASET_HELP = ("a ReID dataset as it ships (cion_fast.data.read_dataset): Market-1501, DukeMTMC-reID, CUHK03-NP "
                 "(labeled subset) or MSMT17 V1/V2")


def _finetune_arguments(parser: argparse.ArgumentParser) -> None:
    from cion_fast.finetune import FinetuneConfig

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="DATASET_DIR", help=_DATASET_HELP)
    source.add_argument("--synth-quick", action="store_true", help="train and evaluate on the quick synthetic world (no files)")
    parser.add_argument("--out", required=True, metavar="DIR", help="run directory: config.json, log.jsonl, checkpoints/, results.json")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint (its config; --steps/--epochs may extend it)")
    parser.add_argument("--rerank", action="store_true", help=_RERANK_HELP)
    group = parser.add_argument_group("the run (cion_fast.finetune.FinetuneConfig)")
    config_arguments(group, FinetuneConfig, _FINETUNE_FIELDS, flags={"base_lr": "lr", "image_size": "size"},
                     types={"image_size": _parse_size})


def _finetune_data(args: argparse.Namespace, config):
    """The quick synthetic world of the run's seed, or a dataset whose train crops are read into
    memory at the run's training size (``ImageSet.in_memory``)."""
    if args.synth_quick:
        from cion_fast.data.synth import WorldConfig, generate

        return generate(WorldConfig.quick(seed=config.seed))
    from cion_fast.data import read_dataset

    data = read_dataset(args.data)
    data.train = data.train.in_memory(size=tuple(config.image_size))
    return data


def _finetune_config(args: argparse.Namespace):
    """A new run's config from the flags, or the checkpoint's with the flags a resume may change."""
    from cion_fast.finetune import FinetuneConfig

    if not args.resume:
        if args.steps is None and args.epochs is None:
            raise ValueError("give --steps or --epochs")
        return FinetuneConfig(**config_overrides(args, _FINETUNE_FIELDS))
    from cion_fast.training import read_checkpoint

    _, state = read_checkpoint(args.out, with_tensors=False)
    saved = {**state["config"], "device": args.device, **({} if args.progress is None else {"progress": args.progress})}
    if args.steps is not None or args.epochs is not None:
        saved.update(steps=args.steps, epochs=args.epochs)
    return FinetuneConfig.from_dict(saved)


def _finetune(args: argparse.Namespace) -> int:
    """Runs ``cion_fast.finetune.finetune`` on a train split, then evaluates on query/gallery."""
    from cion_fast._io import atomic_write_json
    from cion_fast.finetune import evaluate_finetuned, finetune

    config = _finetune_config(args)  # the flags checked before any data is read
    data = _finetune_data(args, config)
    summary = finetune(config, data.train, args.out, resume=args.resume)
    if summary["interrupted"]:
        if summary["rank"] == 0:
            print(f"interrupted at step {summary['step']}; checkpoint {summary['checkpoint']}; continue with --resume", file=sys.stderr)
        return 128 + int(summary["interrupted"])
    if summary["rank"] != 0:  # torchrun: one process evaluates and reports
        return 0
    results = evaluate_finetuned(summary["checkpoint"], data.query, data.gallery, device=args.device, rerank=args.rerank,
                                 size=tuple(config.image_size))  # the training size, as torchreid's test transform
    atomic_write_json(f"{args.out}/results.json", {"train": summary, "evaluation": results})
    print(json.dumps(summary, indent=2))
    print(f"{'feature':10s} {'mAP':>7s} {'mINP':>7s} {'Rank-1':>7s}" + (f" {'mAP_rr':>7s} {'R1_rr':>7s}" if args.rerank else ""))
    for name, metrics in results.items():
        keys = ("mAP", "mINP", "rank1") + (("mAP_rerank", "rank1_rerank") if args.rerank else ())
        print(f"{name:10s} " + " ".join(f"{100 * metrics[k]:7.2f}" for k in keys))
    return 0


_finetune.add_arguments = _finetune_arguments
command("finetune", "supervised fine-tuning (BoT strong baseline: ID + triplet, BNNeck), then query/gallery evaluation")(_finetune)


def _existing_directory(text: str) -> str:
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing directory")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# Fine-tuning steps of `compare` when --finetune-steps is not given (the demo does not fine-tune).
_COMPARE_FINETUNE_STEPS = {"quick": 100, "default": 300}


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    from cion_fast.demo import SMALL_BUDGET_RECIPE

    parser.add_argument("--out", metavar="DIR",
                        help="run directory (default ./cion_demo, ./cion_demo_quick with --quick); re-running reuses "
                             "every stage whose inputs did not change and recomputes the rest")
    parser.add_argument("--quick", action="store_true", help="a small world and a short training (~2-3 min on 2 cores)")
    parser.add_argument("--steps", type=_positive_int, help="pre-training steps (overrides the preset)")
    parser.add_argument("--seeds", type=_positive_int, default=1, metavar="N",
                        help="pre-train every method with seeds 0..N-1; the report gives mean +- std (default 1)")
    parser.add_argument("--rounds", type=_positive_int, metavar="R",
                        help="denoising rounds (default: the preset's): 1 = stripe features only, 2 = again on CION's "
                             "learned features")
    parser.add_argument("--arch", help=f"timm backbone for pre-training (default {SMALL_BUDGET_RECIPE['arch']})")
    parser.add_argument("--finetune-steps", type=int, metavar="N",
                        help="also fine-tune every backbone N steps on the labelled train split and evaluate it (0 = off; "
                             f"default: off for demo, {_COMPARE_FINETUNE_STEPS['default']} for compare, "
                             f"{_COMPARE_FINETUNE_STEPS['quick']} with --quick)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--no-rerank", action="store_true", help="skip k-reciprocal re-ranking in the evaluation")


def _demo_config(args: argparse.Namespace):
    """The preset with the flags' overrides."""
    from dataclasses import replace

    from cion_fast.demo import DemoConfig

    config = DemoConfig.quick() if args.quick else DemoConfig.default()
    given = {"steps": args.steps, "arch": args.arch}
    pretrain = replace(config.pretrain, **{k: v for k, v in given.items() if v is not None})
    given = {"rounds": args.rounds, "finetune_steps": args.finetune_steps}
    return replace(config, pretrain=pretrain, seeds=tuple(range(args.seeds)), device=args.device, rerank=not args.no_rerank,
                   **{k: v for k, v in given.items() if v is not None})


def _demo_out(args: argparse.Namespace) -> str:
    """--out, or the preset's own directory (the quick and the default world never share one)."""
    return args.out or ("cion_demo_quick" if args.quick else "cion_demo")


@command("demo", "the whole pipeline on the built-in synthetic world: synth -> denoise -> CION pre-training -> evaluation -> report")
def _demo(args: argparse.Namespace) -> int:
    from cion_fast.demo import run_demo

    out = _demo_out(args)
    report = run_demo(out, _demo_config(args))
    print(f"report: {out}/report.md, {out}/report.html, {out}/report.json")
    return 0 if report["methods"] else 1


_demo.add_arguments = _demo_arguments


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    from cion_fast.demo import METHODS

    _demo_arguments(parser)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    parser.add_argument("--protocol", choices=("both", "shared"), default="both",
                        help="both (default): every method with the one shared recipe, then each at its own recipe "
                             "(the presets chosen by `cion-fast search`, or --recipes); shared: the first only")
    parser.add_argument("--recipes", metavar="SEARCH_JSON",
                        help="the recipes of a `cion-fast search` run (its search.json) instead of the presets")


@command("compare", "random init vs DINO vs tracklet-level vs CION vs UP-ReID at the same pre-training budget: one table + plots")
def _compare(args: argparse.Namespace) -> int:
    from cion_fast.demo import run_demo

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.finetune_steps is None:
        args.finetune_steps = _COMPARE_FINETUNE_STEPS["quick" if args.quick else "default"]
    out = _demo_out(args)
    recipes = None
    if args.protocol == "both":
        from cion_fast._demo.recipes import TUNED_RECIPES, load_recipes

        recipes = load_recipes(args.recipes) if args.recipes else TUNED_RECIPES
    elif args.recipes:
        raise ValueError("--recipes needs --protocol both (the shared protocol has one recipe for all)")
    report = run_demo(out, _demo_config(args), methods=methods, recipes=recipes)
    print(f"report: {out}/report.md, {out}/report.html, {out}/report.json")
    return 0 if report["methods"] else 1


_compare.add_arguments = _compare_arguments


def _search_arguments(parser: argparse.ArgumentParser) -> None:
    from cion_fast._demo.recipes import SEARCH_SEED, SEARCH_SPACES

    parser.add_argument("--out", metavar="DIR",
                        help="run directory (default ./cion_demo, ./cion_demo_quick with --quick: the comparison's, "
                             "so the world and the denoising are shared); finished configurations are reused")
    parser.add_argument("--quick", action="store_true", help="the quick world")
    parser.add_argument("--configs", type=_positive_int, default=6, metavar="N",
                        help="configurations per method, the shared recipe first (the same budget for all; default 6)")
    parser.add_argument("--steps", type=_positive_int,
                        help="pre-training steps per configuration (default: half the shared recipe's)")
    parser.add_argument("--seed", type=int, default=SEARCH_SEED,
                        help=f"the search's pre-training seed (default {SEARCH_SEED}: not a comparison seed)")
    parser.add_argument("--methods", default=",".join(SEARCH_SPACES),
                        help=f"comma-separated subset of {','.join(SEARCH_SPACES)} (default: all)")
    parser.add_argument("--arch", help="timm backbone (default: the shared recipe's)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")


@command("search", "each pre-training method's recipe chosen on a validation split (train identities) with the same budget")
def _search(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from cion_fast.demo import DemoConfig, run_search

    config = DemoConfig.quick() if args.quick else DemoConfig.default()
    if args.arch:
        config = replace(config, pretrain=replace(config.pretrain, arch=args.arch))
    config = replace(config, device=args.device)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    out = _demo_out(args)
    run_search(out, config, methods, configurations=args.configs, steps=args.steps, seed=args.seed)
    print(f"search: {out}/search.md, {out}/search.json (compare --recipes {out}/search.json uses its choices)")
    return 0


_search.add_arguments = _search_arguments


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="exported backbone (.safetensors), a pre-training checkpoint or a run directory (newest)")
    parser.add_argument("--data", required=True, metavar="DATASET_DIR", help=_DATASET_HELP)
    parser.add_argument("--rerank", action="store_true", help=_RERANK_HELP)
    parser.add_argument("--camera-norm", action="store_true",
                        help="also evaluate after test-time camera normalisation (each camera's mean feature removed)")
    parser.add_argument("--metric", choices=("euclidean", "cosine"), default="cosine")
    parser.add_argument("--flip", action="store_true", help="average features of the image and its mirror")
    parser.add_argument("--size", type=_parse_size, metavar="HxW",
                        help="resize the crops to the network's training size first (e.g. 64x32 for the demo's backbones)")
    parser.add_argument("--network", choices=("exported", "student", "teacher"), default="exported",
                        help="of a pre-training checkpoint: the exported network (default), the student or the teacher")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")


@command("evaluate", "mAP, mINP and Rank-1/5/10 of a backbone on a Market-1501-style query/gallery split")
def _evaluate(args: argparse.Namespace) -> int:
    from cion_fast.data import read_dataset
    from cion_fast.evaluate.retrieval import evaluate_model
    from cion_fast.models import load_pretrained
    from cion_fast.training import latest_checkpoint

    model = load_pretrained(latest_checkpoint(args.checkpoint) or args.checkpoint, network=args.network)
    market = read_dataset(args.data)  # paths: real datasets mix image sizes (--size resizes them)
    result, _ = evaluate_model(model, market.query, market.gallery, batch_size=args.batch_size, device=args.device,
                               flip=args.flip, progress=True, size=args.size, metric=args.metric, rerank=args.rerank,
                               camera_norm=args.camera_norm)
    rows = [("", "")] + ([("re-ranked", "_rerank")] if args.rerank else []) + ([("cam-norm", "_camnorm")] if args.camera_norm else [])
    print(f"{'':10s} {'mAP':>7s} {'mINP':>7s} {'Rank-1':>7s} {'Rank-5':>7s} {'Rank-10':>7s}")
    for label, suffix in rows:
        values = [100 * result[f"{k}{suffix}"] for k in ("mAP", "mINP", "rank1", "rank5", "rank10")]
        print(f"{label or 'plain':10s} " + " ".join(f"{v:7.2f}" for v in values))
    return 0


_evaluate.add_arguments = _evaluate_arguments


# Exceptions that may mean "the input is wrong", not "the program is wrong" (see is_user_error);
# OutputError: an output that could not be written (cion_fast._io names it); ImportError: an optional
# package the command needs is missing (the raise names the extra that installs it).
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, OutputError, ImportError)


def is_user_error(error: BaseException) -> bool:
    """Bad input, reported in one line: a missing, existing or unreadable path, a full disk or a
    read-only filesystem, a name too long for it (the OSError names the path; an output's is a
    ``cion_fast._io.OutputError`` naming the output, not its temporary), a kernel's input check
    (``_C.InputError`` / ``_C.InputTypeError``), or a ValueError / TypeError / ImportError (a
    missing optional package) that a check of this package raised on purpose (a ``raise``
    statement in ``cion_fast``). The same types raised anywhere else (Python finding a bug, a
    library, an ``import`` that fails) are internal errors and keep their traceback.

    Example:
        >>> from cion_fast._checks import check_int
        >>> def caught(work):
        ...     try:
        ...         work()
        ...     except Exception as error:
        ...         return is_user_error(error)
        >>> caught(lambda: check_int(0, "steps", 1)), caught(lambda: int("x")), caught(lambda: open("/nowhere"))
        (True, False, True)
        >>> import numpy as np
        >>> from cion_fast import ops
        >>> caught(lambda: ops.tracklet_similarity(np.full((2, 3), np.nan, np.float32), np.array([0, 1, 2])))
        True
    """
    import errno
    import linecache

    from cion_fast import _C

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.EFBIG):
        return True  # a full disk or quota, a read-only filesystem, a name or file too long for it: the user's to fix
    if isinstance(error, (_C.InputError, _C.InputTypeError)):
        return True
    if not isinstance(error, USER_ERRORS):
        return False
    if isinstance(error, OSError):
        return True
    last = error.__traceback__
    while last is not None and last.tb_next is not None:
        last = last.tb_next
    if last is None:
        return False
    source = last.tb_frame.f_code.co_filename
    ours = os.path.dirname(os.path.abspath(__file__))
    return source.startswith(ours) and linecache.getline(source, last.tb_lineno).lstrip().startswith("raise")


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one error format: a single line on stderr and exit 2 (as ``main``
    reports bad input found later); the usage is one ``--help`` away."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cion-fast",
        description="Fast ReID pre-training and retrieval: CION denoising, self-distillation, evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, run) in _COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        getattr(run, "add_arguments", lambda parser: None)(sub_parser)
        sub_parser.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (*USER_ERRORS, OSError) as error:
        # Bad input (a value, a type, a missing or damaged file, a full disk): one line and exit 2, as argparse does.
        # An internal error, or CION_FAST_DEBUG=1, keeps the traceback.
        if os.environ.get("CION_FAST_DEBUG") or not is_user_error(error):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"cion-fast {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
