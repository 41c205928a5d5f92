"""The ``cion-fast`` command line. Only wiring: every subcommand calls into the library.

Run ``cion-fast --help`` for the list of subcommands and ``cion-fast <command> --help`` for each.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

# Each entry: name -> (help, function adding the subcommand's arguments, function running it).
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str):
    """Registers ``run(args) -> exit code`` as subcommand ``name``; the decorated function's
    ``add_arguments`` attribute, if any, adds its arguments."""

    def register(run: Callable[[argparse.Namespace], int]):
        _COMMANDS[name] = (help, getattr(run, "add_arguments", lambda parser: None), run)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cion-fast",
        description="Fast ReID pre-training and retrieval: CION denoising, self-distillation, evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, run) in _COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub_parser)
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
