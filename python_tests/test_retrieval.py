"""cion_fast.evaluate.retrieval: test-time camera normalisation against a float64 oracle, on every
framework, and its figures in evaluate_features."""

from __future__ import annotations

import numpy as np
import pytest

from cion_fast.evaluate.retrieval import camera_centered, evaluate_features
from conftest import cupy, to_framework, torch
from cion_fast.ops import evaluate_rank_from_features


def centred_oracle(query, gallery, q_cam, g_cam):
    """Per camera: subtract the mean of all its query and gallery rows (float64, by definition)."""
    both = np.concatenate([query, gallery]).astype(np.float64)
    cams = np.concatenate([q_cam, g_cam])
    out = both.copy()
    for camera in set(cams.tolist()):
        out[cams == camera] -= both[cams == camera].mean(axis=0)
    return out[: len(query)], out[len(query):]


@pytest.fixture
def split():
    rng = np.random.default_rng(3)
    q_cam, g_cam = rng.integers(0, 5, 37), rng.integers(0, 5, 211)
    q_cam[0], g_cam[0] = 7, 9  # cameras seen only in the query, only in the gallery
    casts = rng.normal(scale=3.0, size=(10, 19))  # a strong per-camera offset
    query = (rng.normal(size=(37, 19)) + casts[q_cam]).astype(np.float32)
    gallery = (rng.normal(size=(211, 19)) + casts[g_cam]).astype(np.float32)
    return query, gallery, q_cam, g_cam


FRAMEWORKS = ["numpy", "torch", pytest.param("torch_cuda", marks=pytest.mark.cuda), pytest.param("cupy", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_camera_centered_matches_the_oracle(split, framework):
    if (framework.startswith("torch") and torch is None) or (framework == "cupy" and cupy is None):
        pytest.skip(f"{framework} not installed")
    query, gallery, q_cam, g_cam = split
    inputs = [to_framework(a, framework) for a in (query, gallery, q_cam, g_cam)]
    originals = [np.array(a) for a in (query, gallery)]
    out_q, out_g = camera_centered(*inputs)
    assert type(out_q) is type(inputs[0]) and out_q.shape == query.shape
    want_q, want_g = centred_oracle(query, gallery, q_cam, g_cam)
    np.testing.assert_allclose(np.asarray(out_q.tolist()), want_q, atol=2e-5)
    np.testing.assert_allclose(np.asarray(out_g.tolist()), want_g, atol=2e-5)
    for before, after in zip(originals, (query, gallery)):  # the inputs are left alone
        np.testing.assert_array_equal(before, after)


def test_camera_centered_rejects_bad_input(split):
    query, gallery, q_cam, g_cam = split
    with pytest.raises(ValueError, match="q_camids"):
        camera_centered(query, gallery, q_cam[:-1], g_cam)
    with pytest.raises(ValueError, match="query_features"):
        camera_centered(query[0], gallery, q_cam, g_cam)


def test_evaluate_features_reports_camnorm_beside_the_plain_protocol(split):
    query, gallery, q_cam, g_cam = split
    rng = np.random.default_rng(4)
    q_pids, g_pids = rng.integers(0, 15, 37), rng.integers(0, 15, 211)
    # identity signal weaker than the camera offsets: normalisation must help
    centres = rng.normal(size=(15, 19)).astype(np.float32)
    query, gallery = query + 2 * centres[q_pids], gallery + 2 * centres[g_pids]
    out = evaluate_features(query, gallery, q_pids, g_pids, q_cam, g_cam, metric="cosine", camera_norm=True)
    plain = evaluate_rank_from_features(query, gallery, q_pids, g_pids, q_cam, g_cam, metric="cosine").summary()
    assert out["mAP"] == plain["mAP"]
    normalised = evaluate_rank_from_features(*centred_oracle(query, gallery, q_cam, g_cam), q_pids, g_pids, q_cam, g_cam,
                                             metric="cosine").summary()
    for key in ("mAP", "mINP", "rank1", "rank5"):
        assert out[f"{key}_camnorm"] == pytest.approx(normalised[key], abs=1e-6)
    assert out["mAP_camnorm"] > out["mAP"]
    assert len(out["cmc_camnorm"]) == len(out["cmc"])
    assert "mAP_camnorm" not in evaluate_features(query, gallery, q_pids, g_pids, q_cam, g_cam)


def test_evaluate_model_matches_extract_then_evaluate(tmp_path):
    torch_ = pytest.importorskip("torch")
    from cion_fast.data import ImageSet
    from cion_fast.features import extract_features
    from cion_fast.evaluate.retrieval import evaluate_model

    rng = np.random.default_rng(5)
    crops = rng.integers(0, 256, (29, 8, 4, 3), dtype=np.uint8)
    query = ImageSet(images=crops[:7], pids=rng.integers(1, 6, 7), camids=np.zeros(7, np.int64))
    gallery = ImageSet(images=crops[7:], pids=rng.integers(1, 6, 22), camids=rng.integers(1, 3, 22))
    net = torch_.nn.Sequential(torch_.nn.AdaptiveAvgPool2d((2, 1)), torch_.nn.Flatten())
    metrics, (q, g) = evaluate_model(net, query, gallery, batch_size=5, device="cpu", flip=True, camera_norm=True)
    want_q = extract_features(net, query.images, device="cpu", flip=True)
    want_g = extract_features(net, gallery.images, device="cpu", flip=True)
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(g, want_g)
    assert metrics == evaluate_features(want_q, want_g, query.pids, gallery.pids, query.camids, gallery.camids,
                                        metric="cosine", camera_norm=True)
    # an ImageSet of paths (real datasets) gives the same features, read batch by batch
    from cion_fast.data import write_image

    paths = [tmp_path / f"{i}.png" for i in range(7)]
    for path, crop in zip(paths, query.images):
        write_image(path, crop)
    on_disk = ImageSet(paths=paths, pids=query.pids, camids=query.camids)
    assert evaluate_model(net, on_disk, gallery, batch_size=5, device="cpu", flip=True, camera_norm=True)[0] == metrics
    with pytest.raises(TypeError, match="query must be an ImageSet"):
        evaluate_model(net, crops, gallery, device="cpu")
