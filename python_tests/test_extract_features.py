"""cion_fast.evaluate.extract_features: batching, normalisation, flip, inputs, errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cion_fast.evaluate import extract_features  # noqa: E402
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
