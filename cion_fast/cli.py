"""The ``cion-fast`` command line. Only wiring: every subcommand calls into the library.

Run ``cion-fast --help`` for the list of subcommands and ``cion-fast <command> --help`` for each.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

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
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 128x64 or 256x128, got {text!r}") from None
    return h, w


def _synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory: DIR/tracklets (tracklet directory), DIR/market (Market-1501 layout), "
                             "DIR/summary.json")
    parser.add_argument("--quick", action="store_true", help="small world that renders in seconds (tests, smoke runs)")
    parser.add_argument("--identities", type=int, help="people walking through the videos (default 600; quick 60)")
    parser.add_argument("--cameras", type=int, help="cameras (default 8; quick 4)")
    parser.add_argument("--videos", type=int, help="videos (default 48; quick 8)")
    parser.add_argument("--size", type=_parse_size, help="crop size HxW: 128x64 (default) or 256x128")
    parser.add_argument("--seed", type=int, help="world seed (default 0)")
    parser.add_argument("--image-format", choices=("png", "jpg"), default="png",
                        help="Market-1501 image files: png (lossless, default) or jpg")
    parser.add_argument("--samples", metavar="PNG", help="also write a contact sheet of rendered samples")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR/tracklets and DIR/market if they exist")


def _progress_bar(total: int, desc: str):
    """(update(done, total), close()) with tqdm when installed, else a plain line every 10 %."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = tqdm(total=total, desc=desc, unit="frame", file=sys.stderr)

        def update(done: int, _total: int) -> None:
            bar.update(done - bar.n)

        return update, bar.close
    shown = [-1]

    def update_plain(done: int, total_: int) -> None:
        tenth = 10 * done // max(total_, 1)
        if tenth != shown[0]:
            shown[0] = tenth
            print(f"{desc}: {done}/{total_} frames ({10 * tenth}%)", file=sys.stderr)

    return update_plain, lambda: None


def _synth(args: argparse.Namespace) -> int:
    """Generates a synthetic world (``cion_fast.data.synth``), writes it and prints a summary."""
    import time

    from cion_fast.data import synth

    overrides = {k: getattr(args, k) for k in ("identities", "cameras", "videos", "seed") if getattr(args, k) is not None}
    if args.size is not None:
        overrides["image_size"] = args.size
    try:
        config = synth.WorldConfig.quick(**overrides) if args.quick else synth.WorldConfig(**overrides)
    except ValueError as err:
        print(f"cion-fast synth: {err}", file=sys.stderr)
        return 2
    from pathlib import Path

    existing = [str(Path(args.out) / d) for d in ("tracklets", "market") if (Path(args.out) / d).exists()]
    if existing and not args.overwrite:
        print(f"cion-fast synth: {', '.join(existing)} already exist(s); pass --overwrite to replace", file=sys.stderr)
        return 2
    bar = [None, None]

    def progress(done: int, total: int) -> None:
        if bar[0] is None:
            bar[0], bar[1] = _progress_bar(total, "rendering")
        bar[0](done, total)

    world = synth.generate(config, progress=progress)
    if bar[1] is not None:
        bar[1]()
    t0 = time.perf_counter()
    out = world.save(args.out, image_format=args.image_format, overwrite=args.overwrite)
    write_seconds = time.perf_counter() - t0
    if args.samples:
        synth.sample_sheet(config, path=args.samples)
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
    print(f"  wrote     : {out / 'tracklets'}, {out / 'market'}, {out / 'summary.json'}"
          + (f", {args.samples}" if args.samples else ""))
    return 0


_synth.add_arguments = _synth_arguments
command("synth", "generate the synthetic pedestrian world: noisy tracklets + a Market-1501-style labelled split")(_synth)


def _extract_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="tracklet directory (cion-fast synth writes DIR/tracklets)")
    parser.add_argument(
        "--model",
        required=True,
        help="stripe (training-free colour/texture descriptor), timm:NAME (a timm backbone, random "
        "weights: nothing is downloaded) or oracle (ground truth + camera shift + noise: only to "
        "measure denoising on synthetic data)",
    )
    parser.add_argument("--out", required=True, help="output .npz (features, offsets and the index)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default=None, help="torch device for network models (default: cuda if available)")
    parser.add_argument("--flip", action="store_true", help="network models: average with the flipped crop")
    parser.add_argument("--float16", action="store_true", help="store the features as float16 (half the size)")


def _extract(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    from tqdm.auto import tqdm

    from cion_fast.data import Tracklets
    from cion_fast.features import oracle_features, stripe_histogram
    from cion_fast.features.io import save_features

    tracklets = Tracklets.load(args.data)
    start = time.perf_counter()
    kind, _, spec = args.model.partition(":")
    if args.model == "stripe":
        chunk = 4096
        parts = []
        for first in tqdm(range(0, tracklets.num_frames, chunk), desc="stripe", unit="chunk"):
            parts.append(stripe_histogram(tracklets.images(np.arange(first, min(first + chunk, tracklets.num_frames)))))
        features = np.concatenate(parts) if parts else np.empty((0, 0), np.float32)
    elif args.model == "oracle":
        if not (tracklets.identity >= 0).any():
            print("error: --model oracle needs ground-truth identities (a synthetic world)", file=sys.stderr)
            return 2
        features = oracle_features(tracklets.identity, np.repeat(tracklets.camera, tracklets.lengths))
    elif kind == "timm" and spec:
        import timm

        from cion_fast.evaluate import extract_features

        model = timm.create_model(spec, pretrained=False, num_classes=0)
        features = extract_features(model, tracklets, args.batch_size, args.device, flip=args.flip, progress=True)
    else:
        print(f"error: --model must be stripe, oracle or timm:NAME, got {args.model!r}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    if args.float16:
        features = features.astype(np.float16)
    path = save_features(args.out, features, tracklets, args.model)
    print(f"{tracklets.num_frames} frames -> {tuple(features.shape)} {features.dtype} in {seconds:.1f} s "
          f"({tracklets.num_frames / max(seconds, 1e-9):.0f} frames/s); wrote {path}")
    return 0


_extract.add_arguments = _extract_arguments
command("extract", "frame features of a tracklet directory (stripe descriptor or a timm backbone)")(_extract)


def _denoise_arguments(parser: argparse.ArgumentParser) -> None:
    from dataclasses import fields

    from cion_fast.denoise import DenoiseConfig

    parser.add_argument("--tracklets", required=True, help="tracklet directory (index and ground truth)")
    parser.add_argument("--features", required=True, help="features .npz from cion-fast extract")
    parser.add_argument("--out", required=True, help="output directory: labels.npy, levels.npz, report.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = parser.add_argument_group("thresholds (cion_fast.denoise.DenoiseConfig; defaults in brackets)")
    for field in fields(DenoiseConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help="[%(default)s]")
        else:
            kind = float if field.type == "float" else int
            convert = (lambda text, kind=kind: None if text.lower() == "none" else kind(text)) if "None" in field.type else kind
            group.add_argument(flag, type=convert, default=field.default, help="[%(default)s]" + (" (none = off)" if "None" in field.type else ""))


def _denoise(args: argparse.Namespace) -> int:
    import time
    from dataclasses import fields

    import numpy as np

    from cion_fast.data import Tracklets
    from cion_fast.denoise import DenoiseConfig, denoise, format_quality_table
    from cion_fast.denoise.io import write_denoise_output
    from cion_fast.features.io import load_features

    config = DenoiseConfig(**{field.name: getattr(args, field.name) for field in fields(DenoiseConfig)})
    tracklets = Tracklets.load(args.tracklets)
    stored = load_features(args.features)
    if not (np.array_equal(stored.offsets, tracklets.offsets) and np.array_equal(stored.frame_index, tracklets.frame_index)):
        print(f"error: {args.features} was not extracted from {args.tracklets} (offsets / frame indices differ)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    result = denoise(stored.features, tracklets.offsets, tracklets.video, tracklets.frame_index, config, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    rows = None
    if (tracklets.identity >= 0).any():
        rows = result.quality(tracklets.identity, np.repeat(tracklets.video, tracklets.lengths))
        print(format_quality_table(rows))
    for summary in result.summary:
        print("  ".join(f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}" for key, value in summary.items()))
    inputs = {
        "tracklet_directory": str(args.tracklets),
        "features_file": str(args.features),
        "model": stored.model,
        "frames": int(tracklets.num_frames),
        "tracklets": int(tracklets.num_tracklets),
    }
    try:
        out = write_denoise_output(args.out, result, rows, {"inputs": inputs, "seconds": seconds}, overwrite=args.overwrite)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    final = result.summary[-1]
    print(f"{final['images']} frames in {final['identities']} identities; wrote {out}")
    return 0


_denoise.add_arguments = _denoise_arguments
command("denoise", "CION's three denoising levels: tracklets + features -> pseudo-identity labels")(_denoise)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


if __name__ == "__main__":
    sys.exit(main())
