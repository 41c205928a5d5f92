"""cion_fast.features.extract_features: batching, normalisation, flip, inputs, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cion_fast.features import extract_features  # noqa: E402
from cion_fast.ops import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402


class MeanColumns(torch.nn.Module):
    """[B, 3, H, W] -> [B, 3 * W]: per-column channel means (sensitive to a horizontal flip)."""

    def forward(self, x):
        return x.mean(dim=2).flatten(1)


def reference(images, flip=False):
    x = (images.astype(np.float64) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    x = x.transpose(0, 3, 1, 2)
    out = x.mean(axis=2).reshape(len(images), -1)
    if flip:
        out = (out + x[..., ::-1].mean(axis=2).reshape(len(images), -1)) / 2
    return out


@pytest.fixture
def crops():
    return np.random.default_rng(0).integers(0, 256, (7, 8, 4, 3), dtype=np.uint8)


def test_matches_a_float64_reference(crops):
    out = extract_features(MeanColumns(), crops, batch_size=3, device="cpu")
    assert out.shape == (7, 12) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(crops), rtol=1e-5, atol=1e-5)
    flipped = extract_features(MeanColumns(), crops, batch_size=2, device="cpu", flip=True)
    np.testing.assert_allclose(flipped, reference(crops, flip=True), rtol=1e-5, atol=1e-5)
    assert not np.allclose(flipped, out)


def test_inputs_image_set_torch_and_paths(crops, tmp_path):
    from PIL import Image

    expected = extract_features(MeanColumns(), crops, device="cpu")

    class ImageSet:
        images = crops

    np.testing.assert_array_equal(extract_features(MeanColumns(), ImageSet(), device="cpu"), expected)
    np.testing.assert_array_equal(extract_features(MeanColumns(), torch.from_numpy(crops), device="cpu"), expected)
    paths = []
    for i, crop in enumerate(crops):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(crop).save(paths[-1])
    np.testing.assert_array_equal(extract_features(MeanColumns(), paths, batch_size=4, device="cpu"), expected)


def test_restores_training_mode_and_progress(crops):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(96, 5), torch.nn.Dropout(0.5))
    net.train()
    first = extract_features(net, crops, device="cpu", progress=True)
    second = extract_features(net, crops, device="cpu")
    np.testing.assert_array_equal(first, second)  # eval mode: dropout off
    assert net.training


def test_bad_input(crops):
    with pytest.raises(TypeError, match="model"):
        extract_features(lambda x: x, crops)
    with pytest.raises(TypeError, match="images"):
        extract_features(MeanColumns(), crops.astype(np.float32), device="cpu")
    with pytest.raises(ValueError, match="images"):
        extract_features(MeanColumns(), crops[..., :2], device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(MeanColumns(), crops, batch_size=0)
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        extract_features(torch.nn.Identity(), crops, device="cpu")
    with pytest.raises(TypeError, match="images"):
        extract_features(MeanColumns(), {"not": "images"})


@pytest.mark.cuda
def test_cuda_autocast_close_to_cpu(crops):
    cpu = extract_features(MeanColumns(), crops, device="cpu")
    gpu = extract_features(MeanColumns(), crops, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-2, atol=1e-2)


# ---- sharded extraction under torchrun (cion-fast extract; cion_fast.features.extract_to_file)


@pytest.fixture(scope="module")
def tracklet_dir(tmp_path_factory):
    from cion_fast.data.synth import WorldConfig, generate

    root = tmp_path_factory.mktemp("sharded") / "tracklets"
    generate(WorldConfig.quick(identities=6, train_identities=2, eval_identities=2, videos=2, seed=3)).tracklets.save(root)
    return root


def test_torchrun_sharded_extraction_equals_one_process_and_reuses_finished_shards(tracklet_dir, tmp_path, torch_one_thread):
    # One thread here as in each rank (OMP_NUM_THREADS=1): the same batches then give the same bits.
    from cion_fast import cli
    from cion_fast.data import Tracklets
    from cion_fast.features.io import load_features
    from conftest import torchrun

    flags = ["--data", str(tracklet_dir), "--model", "timm:test_resnet", "--batch-size", "16", "--size", "32x16", "--device", "cpu"]
    assert cli.main(["extract", *flags, "--out", str(tmp_path / "one.npz")]) == 0
    torchrun("-m", "cion_fast.cli", "extract", *flags, "--out", str(tmp_path / "two.npz"), cwd=tmp_path)
    one, two = load_features(tmp_path / "one.npz"), load_features(tmp_path / "two.npz")
    assert np.array_equal(one.features, two.features) and one.features.shape[0] == Tracklets.load(tracklet_dir).num_frames
    assert np.array_equal(one.offsets, two.offsets) and one.model == two.model
    assert not (tmp_path / "two.npz.shards").exists()  # merged, then removed

    # A rerun after an interruption: rank 1's shard is already there (poisoned here, to see that it
    # is reused, not recomputed); rank 0's is computed; the merge takes both.
    frames, batch = one.features.shape[0], 16
    batches = -(-frames // batch)
    lo, hi = (batches * 1 // 2) * batch, frames
    shards = tmp_path / "two.npz.shards"
    shards.mkdir()
    np.save(shards / f"shard-{lo:012d}-{hi:012d}.npy", np.full((hi - lo, one.features.shape[1]), 7.0, np.float32))
    manifest = {"spec": "timm:test_resnet", "num_frames": frames, "batch_size": batch, "flip": False, "size": [32, 16],
                "float16": False, "world_size": 2}
    (shards / f"shard-{lo:012d}-{hi:012d}.json").write_text(json.dumps(manifest))
    torchrun("-m", "cion_fast.cli", "extract", *flags, "--out", str(tmp_path / "two.npz"), "--overwrite", cwd=tmp_path)
    again = load_features(tmp_path / "two.npz").features
    assert np.array_equal(again[:lo], one.features[:lo]) and (again[lo:] == 7.0).all()


def test_features_file_is_memory_mapped_and_damage_is_named(tmp_path):
    from types import SimpleNamespace

    from cion_fast.features.io import load_features, save_features

    index = SimpleNamespace(offsets=np.array([0, 3, 5]), video=np.array([0, 1]), camera=np.array([0, 0]),
                            frame_index=np.arange(5), identity=np.full(5, -1))
    values = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float16)
    path = save_features(tmp_path / "f.npz", values, index, "demo")
    mapped = load_features(path)
    assert isinstance(mapped.features, np.memmap) and not mapped.features.flags.writeable
    assert np.array_equal(mapped.features, values) and mapped.features.dtype == np.float16
    read = load_features(path, mmap=False)
    assert not isinstance(read.features, np.memmap) and np.array_equal(read.features, values)
    # Row blocks (shards) are streamed into the same file as the whole matrix gives.
    blocks = save_features(tmp_path / "b.npz", [values[:2], values[2:3], values[3:]], index, "demo")
    assert np.array_equal(load_features(blocks).features, values)
    with np.load(blocks) as a, np.load(path) as b:
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    for bad in ([values[:2], values[2:4]], [values[:2], values[2:].astype(np.float32)], []):
        with pytest.raises(ValueError, match="features must be"):
            save_features(tmp_path / "x.npz", bad, index, "demo")
    # A compressed archive cannot be mapped: it is read instead, with the same result.
    compressed = tmp_path / "c.npz"
    with np.load(path) as archive:
        np.savez_compressed(compressed, **{name: archive[name] for name in archive.files})
    assert np.array_equal(load_features(compressed).features, values)
    # A damaged archive is one ValueError naming the file, mapped or not.
    damaged = tmp_path / "d.npz"
    damaged.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    for mmap in (True, False):
        with pytest.raises(ValueError, match="d.npz"):
            load_features(damaged, mmap=mmap)


@pytest.mark.parametrize("change, pattern", [
    ({"model": None}, "has no field 'model'"),
    ({"offsets": np.array(2)}, r"field 'offsets' must be int64 1-D, got int64 \[\]"),
    ({"offsets": np.array([0.0, 2.0])}, "field 'offsets' must be int64 1-D, got float64"),
    ({"features": np.array([["a"] * 4] * 2)}, "field 'features' must be float 2-D"),
    ({"model": np.arange(3)}, "field 'model' must be str 0-D"),
    ({"camera": np.zeros(3, np.int64)}, "offsets / video / camera do not match"),
])
def test_features_file_with_a_missing_or_malformed_field_is_named(tmp_path, change, pattern):
    from types import SimpleNamespace

    from cion_fast.features.io import load_features, save_features

    index = SimpleNamespace(offsets=np.array([0, 2]), video=np.array([0]), camera=np.array([0]), frame_index=np.arange(2),
                            identity=np.full(2, -1))
    path = save_features(tmp_path / "f.npz", np.zeros((2, 4), np.float32), index, "demo")
    with np.load(path) as archive:
        fields = {name: archive[name] for name in archive.files}
    fields.update(change)
    np.savez(path, **{name: value for name, value in fields.items() if value is not None})
    for mmap in (True, False):
        with pytest.raises(ValueError, match=f"features file .*f.npz.*{pattern}"):
            load_features(path, mmap=mmap)


def test_prefetch_keeps_order_bounds_the_work_ahead_and_raises_at_the_failing_key():
    import threading

    from cion_fast.data.prefetch import prefetch

    started, lock = [], threading.Lock()

    def load(key):
        with lock:
            started.append(key)
        if key == 6:
            raise OSError("image 6 is unreadable")
        return key * 10

    results = prefetch(load, range(10), workers=3, depth=2)
    assert [next(results) for _ in range(3)] == [0, 10, 20]
    assert max(started) <= 4  # at most `depth` keys past the last one handed out
    with pytest.raises(OSError, match="image 6"):
        list(results)
    for bad, error in (({"workers": 0}, ValueError), ({"depth": 0}, ValueError), ({"workers": True}, TypeError)):
        with pytest.raises(error, match=next(iter(bad))):
            list(prefetch(load, range(2), **bad))
