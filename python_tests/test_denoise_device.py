"""Denoising stays on the features' device: torch/cupy features are denoised in their own library.

The CPU cases run the torch path (the one a CUDA tensor takes, with torch's CPU kernels and ours)
against the numpy path; the ``cuda`` cases run it on a GPU against the CPU result.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import cupy, requires_torch, torch
from test_denoise import small_chunks, toy_world

from cion_fast import _arrays
from cion_fast import _xp
from cion_fast.denoise import DenoiseConfig, center_videos, denoise, level1, level2, level3, quality
from cion_fast.denoise.auto import similarity_distributions

pytestmark = requires_torch


def _agreement(labels, expected):
    """BCubed F of ``labels`` (any library) scored against ``expected`` as the truth: 1.0 when
    the two partitions are the same."""
    return quality(_arrays.to_numpy(labels), expected).bcubed_f


def _assert_same_result(expected, got, device):
    """Every level's labels equal, on ``device``; the summaries equal but for the timings."""
    for want, labels in zip([expected.tracklet_labels, *expected.levels], [got.tracklet_labels, *got.levels]):
        assert torch.is_tensor(labels) and labels.device.type == device and labels.dtype == torch.int64
        np.testing.assert_array_equal(labels.cpu().numpy(), want)
    strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert strip(got.summary) == strip(expected.summary)
    assert got.config == expected.config


@pytest.mark.parametrize("config", [DenoiseConfig(), DenoiseConfig(thresholds="auto"), DenoiseConfig(center_videos=False)],
                         ids=["fixed", "auto", "uncentred"])
def test_torch_features_give_the_numpy_result_as_tensors(config):
    features, offsets, video_ids, index, _, _ = toy_world(seed=5, identities=40, videos=12)
    expected = denoise(features, offsets, video_ids, index, config)
    _assert_same_result(expected, denoise(torch.from_numpy(features), offsets, video_ids, index, config), "cpu")


@pytest.fixture(scope="module")
def stripe_world():
    """The quick synthetic world's stripe histograms in float16 and its (offsets, video, frame index)."""
    from cion_fast.data.synth import WorldConfig, generate
    from cion_fast.features import stripe_histogram

    tracklets = generate(WorldConfig.quick()).tracklets
    return stripe_histogram(tracklets.frames).astype(np.float16), (tracklets.offsets, tracklets.video, tracklets.frame_index)


def test_torch_float16_and_a_stripe_world_match_numpy(stripe_world):
    features, args = stripe_world
    expected = denoise(features, *args)
    assert expected.summary[1]["frames_reallocated"] > 0 and expected.summary[2]["links"] > 0  # every path taken
    _assert_same_result(expected, denoise(torch.from_numpy(features), *args), "cpu")


def test_chunk_boundaries_do_not_change_the_torch_result(monkeypatch):
    features, offsets, video_ids, index, _, _ = toy_world(seed=3, identities=30, videos=10)
    expected = denoise(features, offsets, video_ids, index)
    small_chunks(monkeypatch)
    _assert_same_result(expected, denoise(torch.from_numpy(features), offsets, video_ids, index), "cpu")


def test_each_level_and_centring_return_in_the_features_library():
    features, offsets, video_ids, index, _, frame_video = toy_world(seed=1, identities=20, videos=6)
    tensor = torch.from_numpy(features)
    centred = center_videos(features, offsets, video_ids)
    centred_tensor = center_videos(tensor, offsets, video_ids)
    assert torch.is_tensor(centred_tensor) and centred_tensor.dtype == torch.float32
    np.testing.assert_allclose(centred_tensor.numpy(), centred, rtol=1e-5, atol=1e-6)
    out = torch.full_like(tensor, float("nan"))  # poisoned: every row must be written
    assert center_videos(tensor, offsets, video_ids, out=out) is out
    np.testing.assert_array_equal(out.numpy(), centred_tensor.numpy())
    for wrong in (np.empty(features.shape, np.float32), torch.zeros(1, features.shape[1]).expand(*features.shape)):
        with pytest.raises(ValueError, match="out must be a writable float32 array"):  # numpy; rows aliased
            center_videos(tensor, offsets, video_ids, out=wrong)

    one, _ = level1(centred, offsets)
    one_tensor, _ = level1(centred_tensor, offsets)
    np.testing.assert_array_equal(one_tensor.numpy(), one)
    two, _ = level2(centred, frame_video, index, one)
    two_tensor, _ = level2(centred_tensor, frame_video, index, one_tensor)  # tensor labels are accepted too
    np.testing.assert_array_equal(two_tensor.numpy(), two)
    three, _ = level3(centred, frame_video, index, two)
    np.testing.assert_array_equal(level3(centred_tensor, frame_video, index, two)[0].numpy(), three)


def test_no_tensor_is_turned_into_numpy_and_the_features_never_come_back(monkeypatch):
    """On a GPU an implicit ``tensor.__array__`` fails and a host copy of [M, D] is the cost the
    device path avoids: on the CPU, both are caught here. Only 1-D results and [L, 2] links may
    come to the host."""
    features, offsets, video_ids, index, _, _ = toy_world(seed=5, identities=40, videos=12)
    expected = denoise(features, offsets, video_ids, index)

    def refuse(self, *args, **kwargs):
        raise AssertionError("a tensor was converted to numpy implicitly")

    read_back = []
    to_numpy = _arrays.to_numpy
    monkeypatch.setattr(torch.Tensor, "__array__", refuse)
    monkeypatch.setattr(_arrays, "to_numpy", lambda x: read_back.append(tuple(x.shape)) or to_numpy(x))
    got = denoise(torch.from_numpy(features), offsets, video_ids, index)
    monkeypatch.undo()
    assert read_back and all(len(shape) == 1 or shape[1] == 2 for shape in read_back), sorted(set(read_back))
    _assert_same_result(expected, got, "cpu")


def test_lists_and_torch_cpu_with_scratch_still_work(tmp_path):
    rows = [[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [1.0, 0.05]]
    labels, _ = level1(rows, [0, 4])
    assert isinstance(labels, np.ndarray) and labels.tolist() == [0, 0, -1, 0]
    assert isinstance(center_videos(rows, [0, 2, 4], [0, 0], out=np.empty((4, 2), np.float32)), np.ndarray)
    features, offsets, video_ids, index, _, _ = toy_world(seed=6, identities=20, videos=6)
    expected = denoise(features, offsets, video_ids, index)
    _assert_same_result(expected, denoise(torch.from_numpy(features), offsets, video_ids, index, scratch=tmp_path), "cpu")
    assert list(tmp_path.iterdir()) == []


def test_the_features_are_validated_once_per_call(monkeypatch):
    calls = []
    original = _xp.all_finite
    monkeypatch.setattr(_xp, "all_finite", lambda *a: calls.append(1) or original(*a))
    features, offsets, video_ids, index, _, _ = toy_world(seed=2, identities=20, videos=6)
    denoise(torch.from_numpy(features), offsets, video_ids, index, DenoiseConfig(thresholds="auto"))
    assert len(calls) == 1


def test_hostile_torch_features_are_clear_errors():
    features, offsets, video_ids, index, _, _ = toy_world(seed=2, identities=20, videos=6)
    poisoned = torch.from_numpy(features.copy())
    poisoned[len(features) - 1, 3] = float("nan")
    with pytest.raises(ValueError, match="features contain NaN or inf"):
        denoise(poisoned, offsets, video_ids, index)
    with pytest.raises(TypeError, match="features"):
        denoise(torch.from_numpy(features).to(torch.int32), offsets, video_ids, index)
    with pytest.raises(TypeError, match="features"):
        denoise(torch.from_numpy(features).to("meta"), offsets, video_ids, index)


def test_similarity_distributions_do_not_depend_on_the_library():
    features, offsets, video_ids, index, _, _ = toy_world(seed=4, identities=20, videos=6)
    expected = similarity_distributions(features, offsets, video_ids, index)
    got = similarity_distributions(torch.from_numpy(features), offsets, video_ids, index)
    assert expected.keys() == got.keys()
    for name in expected:
        assert expected[name].shape[0] > 0
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


# ------------------------------------------------------------------------------------------------ GPU


def _gpu_inputs(kind, features):
    if kind == "cupy":
        if cupy is None:
            pytest.skip("cupy not installed")
        return cupy.asarray(features)
    return torch.from_numpy(features).cuda()


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["torch", "cupy"])
@pytest.mark.parametrize("config", [DenoiseConfig(), DenoiseConfig(thresholds="auto")], ids=["fixed", "auto"])
def test_cuda_features_are_denoised_on_their_gpu_with_the_cpu_result(kind, config):
    features, offsets, video_ids, index, _, _ = toy_world(seed=5, identities=40, videos=12)
    expected = denoise(features, offsets, video_ids, index, config)
    got = denoise(_gpu_inputs(kind, features), offsets, video_ids, index, config)
    # The kernels' float rounding differs between devices: a value at a threshold may go either way.
    for want, labels in zip([expected.tracklet_labels, *expected.levels], [got.tracklet_labels, *got.levels]):
        assert (torch.is_tensor(labels) and labels.is_cuda) if kind == "torch" else isinstance(labels, cupy.ndarray)
        assert _agreement(labels, want) > 0.999
    with pytest.raises(ValueError, match="scratch: "):
        denoise(_gpu_inputs(kind, features), offsets, video_ids, index, scratch=".")


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["torch", "cupy"])
def test_cuda_levels_and_centring_one_by_one(kind):
    features, offsets, video_ids, index, _, frame_video = toy_world(seed=1, identities=20, videos=6)
    gpu = _gpu_inputs(kind, features)
    centred = center_videos(features, offsets, video_ids)
    centred_gpu = center_videos(gpu, offsets, video_ids)
    assert type(centred_gpu) is type(gpu)
    np.testing.assert_allclose(_arrays.to_numpy(centred_gpu), centred, rtol=1e-5, atol=1e-5)
    out = torch.full_like(gpu, float("nan")) if kind == "torch" else cupy.full(gpu.shape, float("nan"), dtype=gpu.dtype)
    assert center_videos(gpu, offsets, video_ids, out=out) is out
    np.testing.assert_allclose(_arrays.to_numpy(out), centred, rtol=1e-5, atol=1e-5)
    one = level1(centred, offsets)[0]
    one_gpu = level1(centred_gpu, offsets)[0]
    assert _agreement(one_gpu, one) > 0.999
    two = level2(centred, frame_video, index, one)[0]
    assert _agreement(level2(centred_gpu, frame_video, index, one)[0], two) > 0.999
    assert _agreement(level3(centred_gpu, frame_video, index, two)[0], level3(centred, frame_video, index, two)[0]) > 0.999


@pytest.mark.cuda
def test_cuda_stripe_world_matches_the_cpu(stripe_world):
    features, args = stripe_world
    expected = denoise(features, *args)
    got = denoise(torch.from_numpy(features).cuda(), *args)
    for want, labels in zip(expected.levels, got.levels):
        assert _agreement(labels, want) > 0.995
