"""cion_fast.features: the stripe descriptor (known answers on drawn images) and oracle features."""

from __future__ import annotations

import numpy as np
import pytest

from cion_fast.features import oracle_features, stripe_histogram

from conftest import requires_torch, torch

BLOCK = 8 * 4 * 4 + 8  # default colour bins + orientations per stripe


def solid(colour, height=48, width=24):
    return np.broadcast_to(np.array(colour, np.uint8), (height, width, 3)).copy()


def test_shape_norm_and_dimension_formula():
    crops = np.random.default_rng(0).integers(0, 256, (5, 40, 20, 3), dtype=np.uint8)
    f = stripe_histogram(crops)
    assert f.shape == (5, 6 * BLOCK) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-6)
    g = stripe_histogram(crops, stripes=4, bins=(6, 3, 2), orientations=0)
    assert g.shape == (5, 4 * 36)
    assert stripe_histogram(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, 6 * BLOCK)


def test_solid_red_fills_one_colour_bin_per_stripe():
    f = stripe_histogram(solid((255, 0, 0))[None])[0]
    # red: hue bin 0, saturation bin 3, value bin 3 -> joint (0 * 4 + 3) * 4 + 3 = 15; no gradient.
    expected = np.zeros(6 * BLOCK, np.float32)
    expected[np.arange(6) * BLOCK + 15] = 1 / np.sqrt(6)
    np.testing.assert_allclose(f, expected, atol=1e-6)


def test_stripes_are_local():
    image = solid((255, 0, 0))
    image[24:] = (0, 0, 255)  # bottom half blue: hue 2/3 -> bin 5 -> joint (5 * 4 + 3) * 4 + 3 = 95
    f = stripe_histogram(image[None])[0].reshape(6, BLOCK)
    assert np.all(f[:3, 15] > 0) and np.all(f[:3, 95] == 0)
    assert np.all(f[3:, 95] > 0) and np.all(f[3:, 15] == 0)


def test_texture_orientation():
    x = np.arange(24)
    vertical = solid((0, 0, 0))
    vertical[:, (x // 3) % 2 == 1] = 255  # intensity changes along x: gradient angle 0 -> bin 0
    horizontal = solid((0, 0, 0))
    horizontal[(np.arange(48) // 3) % 2 == 1] = 255  # changes along y: angle pi/2 -> bin 4
    fv, fh = (stripe_histogram(image[None], center_sigma=None)[0].reshape(6, BLOCK)[:, 128:] for image in (vertical, horizontal))
    assert np.all(fv.argmax(axis=1) == 0) and np.all(fh.argmax(axis=1) == 4)
    assert np.all(fv[:, 1:4] == 0) and np.all(fh[:, [0, 1, 3, 5, 7]] == 0)


def test_centre_weighting_discounts_the_sides():
    image = solid((255, 0, 0))
    image[:, :4] = (0, 0, 255)
    image[:, -4:] = (0, 0, 255)
    weighted = stripe_histogram(image[None])[0]
    uniform = stripe_histogram(image[None], center_sigma=None)[0]
    assert weighted[15] / weighted[95] > uniform[15] / uniform[95]


def test_same_clothes_closer_than_other_clothes():
    rng = np.random.default_rng(1)
    person = solid((200, 40, 40))
    person[24:] = (30, 30, 120)
    other = solid((40, 160, 40))
    other[24:] = (30, 30, 120)
    crops = np.stack([person, person, other]).astype(int) + rng.integers(-20, 21, (3,) + person.shape)
    f = stripe_histogram(np.clip(crops, 0, 255).astype(np.uint8))
    assert f[0] @ f[1] > f[0] @ f[2] + 0.2


def test_batches_do_not_change_the_result():
    crops = np.random.default_rng(2).integers(0, 256, (7, 32, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(stripe_histogram(crops, batch_size=1), stripe_histogram(crops, batch_size=3))


@requires_torch
def test_torch_input():
    crops = np.random.default_rng(3).integers(0, 256, (2, 16, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(stripe_histogram(torch.from_numpy(crops)), stripe_histogram(crops))


def test_bad_input():
    with pytest.raises(TypeError, match="images"):
        stripe_histogram(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="images"):
        stripe_histogram(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="images"):
        stripe_histogram(np.zeros((1, 8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="stripes"):
        stripe_histogram(np.zeros((1, 8, 8, 3), np.uint8), stripes=9)
    with pytest.raises(ValueError, match="bins"):
        stripe_histogram(np.zeros((1, 8, 8, 3), np.uint8), bins=(8, 0, 4))
    with pytest.raises(ValueError, match="center_sigma"):
        stripe_histogram(np.zeros((1, 8, 8, 3), np.uint8), center_sigma=0.0)


def test_oracle_features_structure():
    identity = np.repeat(np.arange(40), 20)
    camera = np.tile(np.arange(4), 200)
    f = oracle_features(identity, camera, dim=256, seed=3)
    assert f.shape == (800, 256) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
    s = f @ f.T
    same_id = identity[:, None] == identity[None, :]
    same_cam = camera[:, None] == camera[None, :]
    off_diagonal = ~np.eye(800, dtype=bool)
    means = {
        "id cam": s[same_id & same_cam & off_diagonal].mean(),
        "id": s[same_id & ~same_cam].mean(),
        "cam": s[~same_id & same_cam].mean(),
        "none": s[~same_id & ~same_cam].mean(),
    }
    assert means["id cam"] == pytest.approx(0.83, abs=0.03)
    assert means["id"] == pytest.approx(0.67, abs=0.03)
    assert means["cam"] == pytest.approx(0.17, abs=0.03)
    assert means["none"] == pytest.approx(0.0, abs=0.03)
    np.testing.assert_array_equal(f, oracle_features(identity, camera, dim=256, seed=3))
    unknown = oracle_features(np.array([-1, -1, 0, 0]), np.zeros(4, np.int64), dim=256, noise=0.0, camera_shift=0.0)
    assert abs(unknown[0] @ unknown[1]) < 0.3 and unknown[2] @ unknown[3] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="noise"):
        oracle_features(identity, camera, noise=-1.0)
