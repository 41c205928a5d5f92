"""Hostile-input sweep: every public op (and the readers) called with wrong types, wrong values and
integers at the edges of int64, each outcome classified.

    python tools/hostile_inputs.py            # the summary table
    python tools/hostile_inputs.py --verbose  # also every case that is not a clean error

A case is *clean* when it returns, or raises ValueError/TypeError whose message names the argument
under test (or one of the alternatives listed with it, "a|b": a shape error may name either array). Anything else is counted: another exception type (OverflowError, MemoryError,
IndexError, ...), an error that names nothing, or a crash (the worker process dies: SIGSEGV,
SIGABRT). Cases run in a worker subprocess; when it dies the sweep records a crash and restarts it
after that case, so one crash never hides the rest. ``python_tests/test_hostile_inputs.py`` runs the
same cases and requires zero crashes and zero unclean errors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter

# Integers that break naive checks: the int64 edges, values that wrap when added or multiplied,
# sizes that would ask for terabytes, and numpy scalars of unusual kinds.
HOSTILE_INTS = ("-1", "0", "2**31", "2**62", "2**63 - 1", "2**63", "2**64", "-2**63", "10**12",
                "np.int64(-1)", "np.uint64(2**64 - 1)")
WRONG_TYPES = ("None", "True", "1.5", "'3'", "float('nan')", "[2]")
HOSTILE_REALS = ("float('nan')", "float('inf')", "-float('inf')", "1e308", "-2.0", "2.0", "True", "'0.5'", "None")

SETUP = """
import numpy as np
from cion_fast.ops import *
from cion_fast.ops import MultiCropConfig, RaggedImages
rng = np.random.default_rng(0)
F = rng.standard_normal((12, 8)).astype(np.float32)
OFF = np.array([0, 3, 7, 12])
VID = np.array([0, 0, 1])
Q = rng.standard_normal((5, 8)).astype(np.float32)
G = rng.standard_normal((9, 8)).astype(np.float32)
D = np.abs(rng.standard_normal((5, 9))).astype(np.float32)
QQ = np.abs(rng.standard_normal((5, 5))).astype(np.float32); np.fill_diagonal(QQ, 0)
GG = np.abs(rng.standard_normal((9, 9))).astype(np.float32); np.fill_diagonal(GG, 0)
QP, GP = np.arange(5) % 3, np.arange(9) % 3
QC, GC = np.zeros(5, np.int64), np.ones(9, np.int64)
IMGS = rng.integers(0, 255, (4, 32, 16, 3), dtype=np.uint8)
CFG = MultiCropConfig(global_size=(16, 8), local_size=(8, 4), n_local=2)
"""


def _op_cases() -> list[tuple[str, str, str]]:
    """(op, argument, call) triples; the call's hostile value is substituted for ``{v}``."""
    calls = {
        "tracklet_similarity": {
            "k": ("tracklet_similarity(F, OFF, mode='topk_mean', k={v})", HOSTILE_INTS + WRONG_TYPES),
            "mode": ("tracklet_similarity(F, OFF, mode={v})", ("None", "'nope'", "3")),
            "offsets": ("tracklet_similarity(F, np.array({v}))",
                        ("[0, 3 * 2**61, -3 * 2**61, 12]", "[0, 2**63 - 1, 12]", "[0, -1, 12]", "[1, 12]", "[]",
                         "[0.0, 12.0]", "[[0, 12]]", "[0, 13]")),
            "features": ("tracklet_similarity({v}, OFF)",
                         ("np.ones((12, 8), np.int32)", "np.ones(12)", "np.full((12, 8), np.nan, np.float32)", "None",
                          "np.ones((12, 8), object)", "np.ones((12, 8), bool)")),
            "pairs": ("tracklet_similarity(F, OFF, pairs=np.array({v}))",
                      ("[[0, 2**63 - 1]]", "[[-1, 0]]", "[[0, 3]]", "[0, 1]", "[[0.5, 1]]")),
        },
        "tracklet_prune": {
            "threshold": ("tracklet_prune(F, OFF, threshold={v})", HOSTILE_REALS),
            "min_frames": ("tracklet_prune(F, OFF, min_frames={v})", HOSTILE_INTS + WRONG_TYPES),
            "offsets": ("tracklet_prune(F, np.array({v}))", ("[0, 3 * 2**61, -3 * 2**61, 12]", "[0, 2**63 - 1, 12]")),
        },
        "sliding_range_link": {
            "window": ("sliding_range_link(F[:3], VID, window={v}, stride=1)", HOSTILE_INTS + WRONG_TYPES),
            "stride": ("sliding_range_link(F[:3], VID, window=8, stride={v})", HOSTILE_INTS + WRONG_TYPES),
            "threshold": ("sliding_range_link(F[:3], VID, threshold={v})", HOSTILE_REALS),
            "mutual_k": ("sliding_range_link(F[:3], VID, mutual_k={v})", HOSTILE_INTS + WRONG_TYPES[1:]),
            "video_ids": ("sliding_range_link(F[:3], np.array({v}))",
                          ("[1, 0, 0]", "[0, 2**63 - 1, -2**63]", "[0, 0]", "[0.0, 0.0, 1.0]")),
        },
        "connected_components": {
            "num_nodes": ("connected_components({v}, np.zeros((0, 2), np.int64))", HOSTILE_INTS + WRONG_TYPES),
            "edges": ("connected_components(4, np.array({v}))",
                      ("[[0, 2**63 - 1]]", "[[-1, 0]]", "[[0, 4]]", "[0, 1]", "[[0.5, 1.0]]")),
        },
        "k_reciprocal_rerank": {
            "k1": ("k_reciprocal_rerank(Q, G, k1={v}, k2=1)", HOSTILE_INTS + WRONG_TYPES),
            "k2": ("k_reciprocal_rerank(Q, G, k1=4, k2={v})", HOSTILE_INTS + WRONG_TYPES),
            "lambda_value": ("k_reciprocal_rerank(Q, G, k1=4, k2=2, lambda_value={v})", HOSTILE_REALS),
            "tile_size": ("k_reciprocal_rerank(Q, G, k1=4, k2=2, tile_size={v})", HOSTILE_INTS + WRONG_TYPES[1:]),
            "normalize": ("k_reciprocal_rerank(Q, G, k1=4, k2=2, normalize={v})", ("None", "1", "'yes'")),
        },
        "k_reciprocal_rerank_from_distances": {
            "k1": ("k_reciprocal_rerank_from_distances(D, QQ, GG, k1={v}, k2=1)", HOSTILE_INTS + WRONG_TYPES),
            "q_q": ("k_reciprocal_rerank_from_distances(D, {v}, GG, k1=4, k2=2)",
                    ("QQ[:4]", "QQ.astype(np.int32)", "np.full((5, 5), np.nan, np.float32)")),
        },
        "k_reciprocal_rerank_from_graph": {
            "num_query": ("k_reciprocal_rerank_from_graph(np.zeros((6, 3), np.int64), np.zeros((6, 3), np.float32), "
                          "np.ones(6, np.float32), num_query={v}, k1=2, k2=1)", HOSTILE_INTS + WRONG_TYPES),
            "neighbor_index|listed neighbours": ("k_reciprocal_rerank_from_graph(np.full((6, 3), {v}, np.int64), np.zeros((6, 3), np.float32), "
                               "np.ones(6, np.float32), num_query=2, k1=2, k2=1)", ("-1", "6", "2**63 - 1", "-2**63")),
        },
        "jaccard_distance": {
            "k1": ("jaccard_distance(G, k1={v}, k2=2)", HOSTILE_INTS + WRONG_TYPES),
            "k2": ("jaccard_distance(G, k1=4, k2={v})", HOSTILE_INTS + WRONG_TYPES),
            "variant": ("jaccard_distance(G, k1=4, k2=2, variant={v})", ("None", "'nope'", "1")),
            "sparse": ("jaccard_distance(G, k1=4, k2=2, sparse={v})", ("None", "1", "'yes'")),
        },
        "evaluate_rank": {
            "max_rank": ("evaluate_rank(D, QP, GP, QC, GC, max_rank={v})", HOSTILE_INTS + WRONG_TYPES),
            "remove_same_camera": ("evaluate_rank(D, QP, GP, QC, GC, remove_same_camera={v})", ("None", "1", "'no'")),
            "q_pids|no query has a valid match": ("evaluate_rank(D, np.array({v}), GP, QC, GC)",
                       ("[0, 1]", "[2**63 - 1] * 5", "[-2**63] * 5", "[0.5] * 5")),
            "distmat|g_pids": ("evaluate_rank({v}, QP, GP, QC, GC)",
                        ("D[:, :3]", "D.astype(np.int64)", "np.full((5, 9), np.nan, np.float32)", "np.zeros((0, 9), np.float32)")),
        },
        "evaluate_rank_from_features": {
            "metric": ("evaluate_rank_from_features(Q, G, QP, GP, QC, GC, metric={v})", ("None", "'nope'", "1")),
            "tile_size": ("evaluate_rank_from_features(Q, G, QP, GP, QC, GC, tile_size={v})", HOSTILE_INTS + WRONG_TYPES[1:]),
            "max_rank": ("evaluate_rank_from_features(Q, G, QP, GP, QC, GC, max_rank={v})", HOSTILE_INTS + WRONG_TYPES),
        },
        "multicrop": {
            "seed": ("multicrop(IMGS, CFG, seed={v})", HOSTILE_INTS + WRONG_TYPES),
            "step": ("multicrop(IMGS, CFG, seed=0, step={v})", HOSTILE_INTS + WRONG_TYPES),
            "images|RaggedImages": ("multicrop({v}, CFG, seed=0)",
                       ("IMGS.astype(np.float32)", "IMGS[0]", "np.zeros((0, 32, 16, 3), np.uint8)", "np.zeros((2, 32, 16, 4), np.uint8)",
                        "RaggedImages(np.zeros(768, np.uint8), [2**63 - 10, 384], [[2, 2], [16, 8]])",
                        "RaggedImages(np.zeros(768, np.uint8), [0, 384], [[2**62, 2**62], [16, 8]])",
                        "RaggedImages(np.zeros(768, np.uint8), [0, -384], [[16, 8], [16, 8]])",
                        "None")),
            "config|MultiCropConfig": ("multicrop(IMGS, {v}, seed=0)", ("None", "{}", "MultiCropConfig(global_size=(0, 8))")),
            "box": ("multicrop(IMGS, CFG, seed=0, params={{**multicrop(IMGS, CFG, 0, return_params=True).params, 'box': {v}}})",
                    ("np.full((4, 4, 4), 2**63 - 1, np.int64)", "np.full((4, 4, 4), -1, np.int64)",
                     "np.zeros((4, 4), np.int64)", "np.full((4, 4, 4), 0.5)")),
            "out": ("multicrop(IMGS, CFG, seed=0, out={v})",
                    ("1", "(None, None)", "[IMGS, IMGS]", "(np.zeros(3, np.float32),) * 2",
                     "(np.zeros((2, 4, 3, 16, 8), np.float32), np.zeros((2, 4, 3, 8, 4), np.float64))",
                     "(np.zeros((2, 4, 3, 16, 8), np.float32).T, np.zeros((2, 4, 3, 8, 4), np.float32))",
                     "(np.zeros((2, 4, 3, 16, 8), np.float32),) * 2")),
        },
    }
    cases = []
    for op, arguments in calls.items():
        for argument, (template, values) in arguments.items():
            for value in values:
                cases.append((op, argument, template.format(v=value)))
    return cases


# Classes of hostile input beyond single scalars (issue 26's sweep): each (op, what must be named,
# statement). A statement with ``assert`` checks the answer too: a silent wrong answer fails it.
_SAME = "np.testing.assert_allclose(np.asarray({a}, float), np.asarray({b}, float), rtol=0, atol=2e-5)"
_BE = "F.astype('>f4')"


def _class_cases() -> list[tuple[str, str, str]]:
    huge = "np.zeros((10**6, 4), np.float32)"
    scale = [
        ("evaluate_rank_from_features", "scale", _SAME.format(
            a=f"evaluate_rank_from_features(Q * np.float32({s}), G * np.float32({s}), QP, GP, QC, GC, metric='{m}').mAP",
            b=f"evaluate_rank_from_features(Q, G, QP, GP, QC, GC, metric='{m}').mAP"))
        for s in ("1e20", "1e-20") for m in ("cosine", "euclidean")
    ] + [
        ("k_reciprocal_rerank", "scale", _SAME.format(a=f"k_reciprocal_rerank(Q * np.float32({s}), G * np.float32({s}), "
                                                        f"k1=4, k2=2, normalize={n})",
                                                      b=f"k_reciprocal_rerank(Q, G, k1=4, k2=2, normalize={n})"))
        for s in ("1e20", "1e-20") for n in (True, False)
    ] + [
        ("tracklet_similarity", "scale", _SAME.format(a=f"tracklet_similarity(F * np.float32({s}), OFF, mode='{m}')",
                                                      b=f"tracklet_similarity(F, OFF, mode='{m}')"))
        for s in ("1e20", "1e-20") for m in ("max", "min", "centroid")
    ] + [
        ("sliding_range_link", "scale", _SAME.format(a="sliding_range_link(F[:6] * np.float32(1e20), [0, 0, 1, 1, 2, 2], "
                                                       "threshold=0.0)[1]",
                                                     b="sliding_range_link(F[:6], [0, 0, 1, 1, 2, 2], threshold=0.0)[1]")),
        ("jaccard_distance", "scale", _SAME.format(a="jaccard_distance(G * np.float32(1e-20), k1=4, k2=2, sparse=False)",
                                                   b="jaccard_distance(G, k1=4, k2=2, sparse=False)")),
    ]
    byte_order = [
        ("tracklet_similarity", "features", _SAME.format(a=f"tracklet_similarity({_BE}, OFF)", b="tracklet_similarity(F, OFF)")),
        ("tracklet_prune", "features", _SAME.format(a=f"tracklet_prune({_BE}, OFF)", b="tracklet_prune(F, OFF)")),
        ("sliding_range_link", "features", f"sliding_range_link({_BE}[:3], VID)"),
        ("connected_components", "edges", "connected_components(4, np.array([[0, 1]], '>i8'))"),
        ("k_reciprocal_rerank_from_distances", "q_g", "k_reciprocal_rerank_from_distances(D.astype('>f4'), QQ, GG, k1=4, k2=2)"),
        ("jaccard_distance", "features", "jaccard_distance(G.astype('>f4'), k1=4, k2=2, sparse=False)"),
        ("evaluate_rank", "distmat", _SAME.format(a="evaluate_rank(D.astype('>f4'), QP, GP, QC, GC).mAP",
                                                  b="evaluate_rank(D, QP, GP, QC, GC).mAP")),
    ]
    shape = [
        ("tracklet_similarity", "features", "tracklet_similarity([[1.0, 2.0], [3.0]], OFF)"),
        ("evaluate_rank", "distmat", "evaluate_rank([[1.0, 2.0], [3.0]], QP, GP, QC, GC)"),
        ("tracklet_similarity", "features", "tracklet_similarity(np.zeros((12, 0), np.float32), OFF)"),
        ("tracklet_prune", "features", "tracklet_prune(np.zeros((12, 0), np.float32), OFF)"),
        ("sliding_range_link", "features", "sliding_range_link(np.zeros((3, 0), np.float32), VID)"),
        ("k_reciprocal_rerank", "query_features", "k_reciprocal_rerank(np.zeros((5, 0), np.float32), np.zeros((9, 0), np.float32), k1=4, k2=2)"),
        ("jaccard_distance", "features", "jaccard_distance(np.zeros((9, 0), np.float32), k1=4, k2=2)"),
        ("evaluate_rank_from_features", "query_features",
         "evaluate_rank_from_features(np.zeros((5, 0), np.float32), np.zeros((9, 0), np.float32), QP, GP, QC, GC)"),
        ("torchreid.evaluate_rank", "max_rank",
         "from cion_fast.integrations import torchreid; torchreid.evaluate_rank(D, QP, GP, QC, GC, max_rank=None)"),
    ]
    memory = [
        ("k_reciprocal_rerank", "query_features", f"k_reciprocal_rerank({huge}, {huge}, k1=4, k2=2)"),
        ("jaccard_distance", "features", f"jaccard_distance({huge}, k1=4, k2=2, sparse=False)"),
        ("tracklet_similarity", "offsets", f"tracklet_similarity({huge}, np.arange(10**6 + 1))"),
        ("tracklet_similarity", "offsets", f"tracklet_similarity({huge}, np.arange(10**6 + 1), mode='centroid')"),
        ("connected_components", "num_nodes", "connected_components(2**40, np.zeros((0, 2), np.int64))"),
    ]
    return scale + byte_order + shape + memory


def _reader_cases() -> list[tuple[str, str, str]]:
    """Damaged files: each case writes one into a fresh temporary directory and reads it."""
    prefix = ("import tempfile, pathlib, zipfile; from cion_fast.data.synth import WorldConfig, generate; "
              "from cion_fast.data import Tracklets; from cion_fast.features.io import load_features, save_features; "
              "d = pathlib.Path(tempfile.mkdtemp()); w = generate(WorldConfig.quick()); w.save(d / 'w'); "
              "t = Tracklets.load(d / 'w' / 'tracklets'); ")
    frames = "(d / 'w' / 'tracklets' / 'frames.npy')"
    return [
        ("Tracklets.load", "frames.npy", prefix + f"{frames}.write_bytes(b'\\x93NUMPY\\x01\\x00v\\x00{{\"descr\": <u1\"' + b' ' * 200); Tracklets.load(d / 'w' / 'tracklets')"),
        ("Tracklets.load", "frames.npy", prefix + f"{frames}.write_bytes({frames}.read_bytes()[:1000]); Tracklets.load(d / 'w' / 'tracklets')"),
        ("Tracklets.load", "frames.npy", prefix + f"{frames}.write_bytes(b''); Tracklets.load(d / 'w' / 'tracklets')"),
        ("load_features", "f.npz", prefix + "save_features(d / 'f.npz', np.zeros((t.num_frames, 4), np.float32), t, model='x'); "
         "p = d / 'f.npz'; p.write_bytes(p.read_bytes()[:300]); load_features(p)"),
        ("load_features", "f.npz", prefix + "p = d / 'f.npz'; p.write_bytes(b'PK\\x03\\x04' + b'\\x00' * 100); load_features(p)"),
    ] + _FILE_CASES


# Damaged and hostile files of every kind a reader meets (issue 26): each names the file or field.
_TMP = "import tempfile, pathlib; d = pathlib.Path(tempfile.mkdtemp()); "
_PNG_CHUNK = "import struct, zlib; c = lambda k, b: struct.pack('>I', len(b)) + k + b + struct.pack('>I', zlib.crc32(k + b)); "
_FILE_CASES = [
    ("load_features", "f.npz", _TMP + "from cion_fast.features.io import load_features; np.savez(d / 'f.npz', "
     "format=np.array('cion_fast.features'), features=np.zeros((1, 2), np.float32), offsets=np.array([0, 1]), "
     "video=np.zeros(1, np.int64), camera=np.zeros(1, np.int64), frame_index=np.zeros(1, np.int64), "
     "identity=np.zeros(1, np.int64)); load_features(d / 'f.npz')"),
    ("read_image", "bomb.png", _TMP + _PNG_CHUNK + "from cion_fast.data import read_image; (d / 'bomb.png').write_bytes("
     "b'\\x89PNG\\r\\n\\x1a\\n' + c(b'IHDR', struct.pack('>IIBBBBB', 100000, 100000, 8, 2, 0, 0, 0)) "
     "+ c(b'IDAT', zlib.compress(b'')) + c(b'IEND', b'')); read_image(d / 'bomb.png')"),
    ("read_market1501", "1234567890123456789012345", _TMP + "from cion_fast.data import read_market1501, write_image; "
     "[(d / s).mkdir() for s in ('bounding_box_train', 'query', 'bounding_box_test')]; "
     "write_image(d / 'query' / '0001_c1s1_1234567890123456789012345_03.png', np.zeros((4, 2, 3), np.uint8)); "
     "read_market1501(d)"),
    ("read_msmt17", "list_query.txt", _TMP + "from cion_fast.data import read_msmt17; [(d / s).mkdir() for s in "
     "('train', 'test')]; [(d / f'list_{s}.txt').write_text('') for s in ('train', 'val', 'gallery')]; "
     "(d / 'list_query.txt').write_bytes(b'0000/0000_000_01_0303morning_0015_0.jpg 0\\n\\xff\\xfe.jpg 0\\n'); "
     "read_msmt17(d)"),
    ("Tracklets.load", "index.npz", _TMP + "from cion_fast.data import Tracklets; t = Tracklets(np.zeros((2, 4, 2, 3), "
     "np.uint8), [0, 2], [0], [0], [0, 1]).save(d / 't'); z = dict(np.load(t / 'index.npz')); "
     "z['version'] = np.array('abc'); np.savez(t / 'index.npz', **z); Tracklets.load(t)"),
    ("load_pretrained", "g.pth", _TMP + "from cion_fast.models import load_pretrained; "
     "(d / 'g.pth').write_bytes(bytes(range(256)) * 8); load_pretrained(d / 'g.pth', 'resnet18')"),
    ("load_pretrained", "c.pth", _TMP + "import torch; from cion_fast.models import load_pretrained; "
     "torch.save({'f': print}, d / 'c.pth'); load_pretrained(d / 'c.pth', 'resnet18')"),
    ("load_pretrained", "l.pth", _TMP + "import torch; from cion_fast.models import load_pretrained; "
     "torch.save([torch.zeros(3)], d / 'l.pth'); load_pretrained(d / 'l.pth', 'resnet18')"),
    ("load_pretrained", "conv1.weight", _TMP + "import torch; from cion_fast.models import build_backbone, "
     "load_pretrained; s = build_backbone('resnet18').state_dict(); s['conv1.weight'][0, 0, 0, 0] = float('nan'); "
     "torch.save(s, d / 'n.pth'); load_pretrained(d / 'n.pth', 'resnet18')"),
    ("read_tracklet_folders", "cameras", _TMP + "from cion_fast.data import read_tracklet_folders, write_image; "
     "(d / 'v0' / 't0').mkdir(parents=True); write_image(d / 'v0' / 't0' / '1.png', np.zeros((4, 2, 3), np.uint8)); "
     "read_tracklet_folders(d, cameras={'v0': 'a'})"),
]


# CLI invocations: each must exit 2 with exactly one stderr line holding "error:"; those marked
# "ok " are valid (if unusual) and must exit 0 (a level that keeps no frame is an empty labelling).
# {w} is a quick world written once per worker, {f} its stripe features, {c} a fake pre-training
# checkpoint whose weights file is truncated, {x} a fresh path that does not exist yet, {t} tracklets
# of 1x1-pixel frames, {m} a Market-1501 layout of 4 images per split, {b} an exported backbone.
CLI_CASES = [
    "denoise --tracklets {w}/tracklets --features {f} --out {x} --window 0",
    "denoise --tracklets {w}/tracklets --features {f} --out {x} --window 18446744073709551616",
    "denoise --tracklets {w}/tracklets --features {f} --out {x} --min-frames -1",
    "denoise --tracklets {w}/tracklets --features {f} --out {x} --stride 0",
    "denoise --tracklets {w}/tracklets --features {f} --out {x} --stride 100",
    "denoise --tracklets {w}/tracklets --features {f} --out {x} --prune-threshold 2",
    "denoise --tracklets {w}/tracklets --features {f} --out {x} --prune-threshold nan",
    "denoise --tracklets {w}/tracklets --features {f} --out {x} --mutual-k 0",
    "denoise --tracklets {w}/tracklets --features {f} --out {x} --frame-window -1",
    "denoise --tracklets {w}/tracklets --features {f} --out {x} --window abc",
    "denoise --tracklets {w}/tracklets --features {f} --out {x} --thresholds auto --merge-threshold 0.5",
    "ok denoise --tracklets {w}/tracklets --features {f} --out {x} --prune-threshold 1.0 --thresholds fixed",
    "denoise --tracklets {w}/nope --features {f} --out {x}",
    "denoise --tracklets {w}/tracklets --features {w}/summary.json --out {x}",
    "denoise --tracklets {w}/tracklets --features {f} --out {w}",
    "denoise --tracklets {w}/tracklets --features {f} --out {x} --device cuda --scratch {w}",
    "denoise --tracklets {w}/tracklets --features {f} --out {x} --device tpu",
    "extract --data {w}/tracklets --model stripe --out {x}.npz --batch-size 0",
    "extract --data {w}/tracklets --model stripe --out {x}.npz --size 0x0",
    "extract --data {w}/tracklets --model stripe --out {x}.npz --size abc",
    "extract --data {w}/tracklets --model nope --out {x}.npz",
    "extract --data {w}/tracklets --model timm:no_such_net --out {x}.npz",
    "extract --data {w}/tracklets --model checkpoint:{c} --out {x}.npz",
    "extract --data {w}/tracklets --model stripe --out {f}",
    "extract --data {w}/nope --model stripe --out {x}.npz",
    "evaluate --checkpoint {c} --data {w}/market",
    "evaluate --checkpoint {x} --data {w}/market",
    "evaluate --checkpoint {c} --data {w}/market --size 1x",
    "export --checkpoint {c} --out {x}.safetensors",
    "export --checkpoint {x} --out {x}.safetensors",
    "export --checkpoint {c} --out {f}",
    "synth --out /proc/cion_fast_cannot_write --quick",
    "synth --out {x} --quick --identities 0",
    "synth --out {x} --quick --identities -1",
    "synth --out {x} --quick --size 1x1",
    "synth --out {x} --quick --camera-strength -1",
    "synth --out {x} --quick --camera-strength nan",
    "synth --out {x} --quick --report-steps 0",
    "synth --out {x} --quick --report-steps 3",
    "demo --out /proc/cion_fast_cannot_write --quick",
    "demo --out {x} --quick --seeds 0",
    "demo --out {x} --quick --rounds 0",
    "demo --out {x} --quick --steps -1",
    "compare --out {x} --quick --methods nope",
    "compare --out {x} --quick --recipes {f}",
    "compare --out {x} --quick --recipes {x}.json",
    "compare --out {x} --quick --protocol shared --recipes {f}",
    "compare --out {x} --quick --protocol nope",
    "search --out {x} --quick --methods random",
    "search --out {x} --quick --configs 0",
    "search --out {x} --quick --configs 100000000",
    "search --out {x} --quick --steps -3",
    "search --out {x} --quick --seed -1",
    "search --out /proc/cion_fast_cannot_write --quick --configs 1 --steps 1",
    "pretrain --data {w}/tracklets --out {x} --method cion --labels {f} --steps 2",
    "pretrain --data {w}/tracklets --out {x} --method cion --labels {x}.npy --steps 2",
    "pretrain --data {w}/tracklets --out {x} --method dino --steps 0",
    "pretrain --data {w}/tracklets --out {x} --method dino --steps 2 --batch-size 0",
    "pretrain --data {w}/tracklets --out {x} --method dino --steps 2 --lr nan",
    "pretrain --data {w}/tracklets --out {x} --method nope --steps 2",
    "pretrain --data {w}/nope --out {x} --method dino --steps 2",
    "pretrain --data {w}/tracklets --out {x} --resume",
    "finetune --data {w}/nope --out {x} --steps 2",
    "finetune --data {w}/market --out {x} --steps 0",
    "finetune --data {w}/market --out {x} --steps 2 --init {x}.safetensors",
    "finetune --data {w}/market --out {x} --steps 2 --batch-size 3",
    # Issue 26: outputs that cannot be written, devices that are not there, sizes that cannot fit,
    # files that are not checkpoints, networks that need another size, options with wrong values.
    "extract --data {w}/tracklets --model stripe --out {x}" + "a" * 300 + ".npz",
    "synth --out {x}" + "a" * 300 + " --quick",
    "synth --out /sys/cion_fast_cannot_write --quick",
    "extract --data {w}/tracklets --model timm:test_resnet --out {x}.npz --device cpu --size 99999x99999",
    "extract --data {w}/tracklets --model timm:test_resnet --out {x}.npz --device tpu",
    "extract --data {w}/tracklets --model timm:test_resnet --out {x}.npz --device cuda:99",
    "pretrain --data {w}/tracklets --out {x} --method dino --steps 1 --device tpu",
    "finetune --data {w}/market --out {x} --steps 1 --device tpu",
    "extract --data {w}/tracklets --model checkpoint:{w}/summary.json --out {x}.npz",
    "evaluate --checkpoint {w}/summary.json --data {w}/market",
    "finetune --data {w}/market --out {x} --steps 1 --arch test_resnet --batch-size 8 --init {w}/summary.json",
    "extract --data {w}/tracklets --model timm:vit_tiny_patch16_224 --out {x}.npz --device cpu",
    "pretrain --data {w}/tracklets --out {x} --method dino --steps 1 --arch test_resnet --timm-kwarg drop_path_rate=abc",
    "pretrain --data {w}/tracklets --out {f} --method dino --steps 2",
    "synth --out {x} --quick --samples {x}/missing/s.png",
    "extract --data {t} --model stripe --out {x}.npz",
    "evaluate --checkpoint {b} --data {m} --device cpu --rerank",
]

CLI_SETUP = r"""
import io, contextlib, itertools, json, pathlib, shlex, tempfile
from cion_fast.cli import main
from cion_fast.data.synth import WorldConfig, generate
from cion_fast.data import Tracklets
from cion_fast.features import stripe_histogram
from cion_fast.features.io import save_features
root = pathlib.Path(tempfile.mkdtemp())
generate(WorldConfig.quick(identities=8, videos=2)).save(root / "w")
tracklets = Tracklets.load(root / "w" / "tracklets")
save_features(root / "f.npz", stripe_histogram(np.asarray(tracklets.frames)), tracklets, model="stripe")
step = root / "run" / "checkpoints" / "step-00000001"
step.mkdir(parents=True)
(step / "weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1")
(step / "state.json").write_text(json.dumps({"step": 1, "config": {}}))
from cion_fast.data import ImageSet
from cion_fast.models import build_backbone, save_backbone
Tracklets(np.ascontiguousarray(tracklets.frames[:, :1, :1]), tracklets.offsets, tracklets.video, tracklets.camera,
          tracklets.frame_index).save(root / "tiny")  # 1x1-pixel frames
for split in ("bounding_box_train", "query", "bounding_box_test"):  # a split too small to re-rank
    ImageSet(images=np.full((4, 16, 8, 3), 100, np.uint8), pids=[1, 2, 1, 2], camids=[0, 0, 1, 1]).write_market1501(root / "m" / split)
save_backbone(build_backbone("test_resnet"), root / "b.safetensors")
fresh = itertools.count()

def cli(template):
    valid = template.startswith("ok ")
    template = template[3:] if valid else template
    argv = shlex.split(template.format(w=root / "w", f=root / "f.npz", c=root / "run", x=root / f"new{next(fresh)}",
                                       t=root / "tiny", m=root / "m", b=root / "b.safetensors"))
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
    lines = [line for line in err.getvalue().splitlines() if line.strip() and "%|" not in line]
    if code == 0:
        if valid:
            return
        raise RuntimeError("bad input accepted (exit 0)")
    if code == 2 and len(lines) == 1 and "error:" in lines[0]:
        raise ValueError("cli " + lines[0])
    raise RuntimeError(f"exit {code}, stderr: " + " | ".join(lines[-6:]))
"""


def _cli_cases() -> list[tuple[str, str, str]]:
    return [("cion-fast " + case.removeprefix("ok ").split()[0], "cli", f"cli({case!r})") for case in CLI_CASES]


def _cases(which: str) -> list[tuple[str, str, str]]:
    return {"ops": _op_cases() + _class_cases() + _reader_cases(), "cli": _cli_cases()}[which]


def _worker(start: int) -> None:
    namespace: dict = {}
    exec("import numpy as np\n" + SETUP + (CLI_SETUP if WHICH == "cli" else ""), namespace)
    cases = _cases(WHICH)
    for index in range(start, len(cases)):
        op, argument, call = cases[index]
        print(json.dumps({"index": index, "started": True}), flush=True)
        try:
            exec(call, dict(namespace))
            outcome, message = "returned", ""
        except (ValueError, TypeError) as error:
            message = str(error)
            named = any(name in message for name in argument.split("|"))
            outcome = ("clean" if named else f"unnamed {type(error).__name__}")
        except Exception as error:  # noqa: BLE001 - classifying every other failure is the point
            outcome, message = type(error).__name__, str(error)
        print(json.dumps({"index": index, "outcome": outcome, "message": message[:300]}), flush=True)


WHICH = "ops"


def run_sweep(which: str = "ops") -> list[dict]:
    """Runs every case of ``which`` ("ops": ops and readers, "cli": subcommands); returns one dict
    per case: op, argument, call, outcome, message."""
    cases = _cases(which)
    results: dict[int, dict] = {}
    start = 0
    env = {**os.environ, "PYTHONFAULTHANDLER": "0"}
    while start < len(cases):
        process = subprocess.run([sys.executable, __file__, "--worker", str(start), "--which", which],
                                 capture_output=True, text=True, env=env)
        current = start
        for line in process.stdout.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            current = record["index"]
            if "outcome" in record:
                results[current] = record
        if process.returncode == 0 and len(results) >= len(cases):
            break
        if current not in results:  # the worker died in this case
            results[current] = {"index": current, "outcome": f"crash (exit {process.returncode})",
                                "message": process.stderr.strip().splitlines()[-1] if process.stderr.strip() else ""}
        start = current + 1
    return [{"op": cases[i][0], "argument": cases[i][1], "call": cases[i][2], **results[i]} for i in sorted(results)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--which", choices=("ops", "cli", "all"), default="all",
                        help="ops and readers, the CLI subcommands, or both (default)")
    parser.add_argument("--verbose", action="store_true", help="print every case that is not clean")
    parser.add_argument("--json", metavar="PATH", help="write every case's outcome here")
    args = parser.parse_args()
    if args.worker is not None:
        global WHICH
        WHICH = args.which
        _worker(args.worker)
        return 0
    results = [r for which in (("ops", "cli") if args.which == "all" else (args.which,)) for r in run_sweep(which)]
    counts = Counter("clean" if r["outcome"] in ("clean", "returned") else
                     "crash" if r["outcome"].startswith("crash") else "unclean" for r in results)
    print(f"{len(results)} cases: {counts['clean']} clean (returned or a ValueError/TypeError naming the argument), "
          f"{counts['unclean']} unclean errors, {counts['crash']} crashes")
    for r in results:
        if args.verbose and r["outcome"] not in ("clean", "returned"):
            print(f"  [{r['outcome']}] {r['op']}.{r['argument']}: {r['call'][:110]}\n      {r['message'][:200]}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0 if counts["crash"] == counts["unclean"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
