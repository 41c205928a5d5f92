"""Tracklets: validation, select(), and the tracklet-directory round trip (incl. damaged dirs)."""

from __future__ import annotations

import os
import shutil
import zipfile

import numpy as np
import pytest

from cion_fast.data import Tracklets, read_image, write_image


def random_tracklets(rng, n=7, h=12, w=6, features=False, empty_tracklets=False):
    lengths = rng.integers(0 if empty_tracklets else 1, 6, n)
    if empty_tracklets:
        lengths[[0, n // 2, n - 1]] = 0
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    m = int(offsets[-1])
    frames = rng.integers(0, 256, (m, h, w, 3), dtype=np.uint8)
    video = rng.integers(0, 4, n)
    camera = rng.integers(0, 3, n)
    frame_index = rng.integers(0, 1000, m)
    identity = rng.integers(-1, 20, m)
    feats = rng.standard_normal((m, 5)).astype(np.float32) if features else None
    return Tracklets(frames, offsets, video, camera, frame_index, identity, feats)


def assert_same(a: Tracklets, b: Tracklets):
    for name in ("offsets", "video", "camera", "frame_index", "identity"):
        got, want = getattr(a, name), getattr(b, name)
        assert got.dtype == np.int64 and np.array_equal(got, want), name
    assert a.images().shape == b.images().shape
    assert np.array_equal(a.images(), b.images())
    if b.features is None:
        assert a.features is None
    else:
        assert np.array_equal(np.asarray(a.features), b.features)


# ---- construction and validation -----------------------------------------------------------------
def test_properties_and_int32_inputs():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 8, 4, 3), dtype=np.uint8)
    t = Tracklets(frames, np.array([0, 2, 5], np.int32), np.array([3, 1], np.int32), [0, 2],
                  np.array([4, 5, 1, 2, 3], np.int32), [1, 1, 2, 2, -1])
    assert t.offsets.dtype == np.int64 and t.video.dtype == np.int64 and t.frame_index.dtype == np.int64
    assert (t.num_tracklets, t.num_frames, len(t)) == (2, 5, 2)
    assert t.lengths.tolist() == [2, 3]
    assert t.tracklet_of_frame.tolist() == [0, 0, 1, 1, 1]
    assert t.frames_of(1) == slice(2, 5) and t.frames_of(-1) == slice(2, 5)
    assert t.has_pixels
    with pytest.raises(IndexError):
        t.frames_of(2)
    assert "N=2" in repr(t)


def test_identity_defaults_to_unknown():
    t = Tracklets(np.zeros((3, 2, 2, 3), np.uint8), [0, 3], [0], [0], [0, 1, 2])
    assert t.identity.tolist() == [-1, -1, -1]


@pytest.mark.parametrize(
    "change, error, field",
    [
        (dict(offsets=[1, 2, 5]), ValueError, "offsets"),
        (dict(offsets=[0, 4, 3, 5]), ValueError, "offsets"),
        (dict(offsets=[0, 2, 4]), ValueError, "offsets"),
        (dict(offsets=[0.0, 2.0, 5.0]), TypeError, "offsets"),
        (dict(offsets=np.array([[0, 2, 5]])), ValueError, "offsets"),
        (dict(offsets=[]), ValueError, "offsets"),
        (dict(video=[0, 1, 2]), ValueError, "video"),
        (dict(camera=[0]), ValueError, "camera"),
        (dict(camera=[True, False]), TypeError, "camera"),
        (dict(frame_index=[0, 1, 2, 3]), ValueError, "offsets"),
        (dict(identity=[1, 2, 3]), ValueError, "identity"),
        (dict(identity=[1, 2, 3, -2, 0]), ValueError, "identity"),
        (dict(frames=np.zeros((5, 8, 4, 3), np.float32)), TypeError, "frames"),
        (dict(frames=np.zeros((5, 8, 4), np.uint8)), ValueError, "frames"),
        (dict(frames=np.zeros((4, 8, 4, 3), np.uint8)), ValueError, "frames"),
        (dict(frames=["a.png"] * 4), ValueError, "frames"),
        (dict(frames=["a.png", 3, "b", "c", "d"]), TypeError, "frames[1]"),
        (dict(frames="a.png"), TypeError, "frames"),
        (dict(features=np.zeros((5, 3), np.int64)), TypeError, "features"),
        (dict(features=np.zeros((4, 3), np.float32)), ValueError, "features"),
        (dict(features=np.zeros(5, np.float32)), ValueError, "features"),
    ],
)
def test_validation_names_the_field(change, error, field):
    rng = np.random.default_rng(1)
    args = dict(frames=rng.integers(0, 256, (5, 8, 4, 3), dtype=np.uint8), offsets=[0, 2, 5], video=[0, 1],
                camera=[0, 0], frame_index=[0, 1, 2, 3, 4], identity=[1, 1, 2, 2, 2], features=None)
    args.update(change)
    with pytest.raises(error, match=field.replace("[", r"\[").replace("]", r"\]")):
        Tracklets(**args)


# ---- select --------------------------------------------------------------------------------------
def naive_select(t: Tracklets, mask: np.ndarray):
    offsets, video, camera, keep = [0], [], [], []
    for k in range(t.num_tracklets):
        idx = [i for i in range(t.offsets[k], t.offsets[k + 1]) if mask[i]]
        if idx:
            keep += idx
            offsets.append(offsets[-1] + len(idx))
            video.append(t.video[k])
            camera.append(t.camera[k])
    return offsets, video, camera, keep


@pytest.mark.parametrize("seed", range(6))
def test_select_matches_naive(seed):
    rng = np.random.default_rng(seed)
    t = random_tracklets(rng, n=int(rng.integers(1, 12)), features=True, empty_tracklets=seed % 2 == 1)
    mask = rng.random(t.num_frames) < rng.uniform(0.2, 0.8)
    s = t.select(mask)
    offsets, video, camera, keep = naive_select(t, mask)
    assert s.offsets.tolist() == offsets
    assert s.video.tolist() == video and s.camera.tolist() == camera
    assert np.array_equal(s.frame_index, t.frame_index[keep])
    assert np.array_equal(s.identity, t.identity[keep])
    assert np.array_equal(s.frames, t.frames[keep])
    assert np.array_equal(s.features, t.features[keep])
    assert s.num_tracklets == len(video) <= t.num_tracklets


def test_select_all_and_none_and_paths():
    rng = np.random.default_rng(3)
    t = random_tracklets(rng)
    assert_same(t.select(np.ones(t.num_frames, bool)), t)
    none = t.select(np.zeros(t.num_frames, bool))
    assert (none.num_tracklets, none.num_frames) == (0, 0) and none.offsets.tolist() == [0]
    paths = Tracklets(np.array([f"/x/{i}.png" for i in range(4)]), [0, 2, 4], [0, 1], [0, 0], [0, 1, 0, 1])
    assert paths.frames == [f"/x/{i}.png" for i in range(4)] and not paths.has_pixels
    s = paths.select(np.array([False, True, False, False]))
    assert s.frames == ["/x/1.png"] and s.offsets.tolist() == [0, 1] and s.video.tolist() == [0]


def test_select_rejects_bad_masks():
    t = random_tracklets(np.random.default_rng(4))
    with pytest.raises(TypeError, match="frame_mask"):
        t.select(np.ones(t.num_frames, np.int64))
    with pytest.raises(ValueError, match="frame_mask"):
        t.select(np.ones(t.num_frames + 1, bool))


# ---- save / load ---------------------------------------------------------------------------------
def test_round_trip_pixels_and_features(tmp_path):
    rng = np.random.default_rng(5)
    t = random_tracklets(rng, n=9, features=True, empty_tracklets=True)
    d = t.save(tmp_path / "t")
    assert sorted(os.listdir(d)) == ["features.npy", "frames.npy", "index.npz"]
    u = Tracklets.load(d)
    assert_same(u, t)
    assert isinstance(u.frames, np.memmap)
    v = Tracklets.load(d, mmap=False)
    assert not isinstance(v.frames, np.memmap)
    assert_same(v, t)
    assert [p for p in os.listdir(tmp_path) if p != "t"] == []  # no temporary leftovers


def test_round_trip_empty(tmp_path):
    t = Tracklets(np.zeros((0, 4, 2, 3), np.uint8), [0], [], [], [])
    u = Tracklets.load(t.save(tmp_path / "e"))
    assert (u.num_tracklets, u.num_frames) == (0, 0) and u.frames.shape == (0, 4, 2, 3)


def write_random_images(folder, rng, count, h=10, w=6):
    os.makedirs(folder, exist_ok=True)
    paths, images = [], []
    for i in range(count):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = os.path.join(folder, f"{i:03d}.png")
        write_image(path, img)
        paths.append(path)
        images.append(img)
    return paths, np.stack(images)


def test_round_trip_paths(tmp_path):
    rng = np.random.default_rng(6)
    paths, images = write_random_images(tmp_path / "src", rng, 6)
    t = Tracklets(paths, [0, 4, 6], [2, 5], [1, 1], [10, 11, 12, 13, 3, 4], [0, 0, 1, 1, 2, 2])
    d = t.save(tmp_path / "t")
    shutil.rmtree(tmp_path / "src")  # the saved directory is self-contained
    u = Tracklets.load(d)
    assert not u.has_pixels and all(str(d) in p for p in u.frames)
    assert np.array_equal(u.images(), images)
    assert u.identity.tolist() == [0, 0, 1, 1, 2, 2] and u.video.tolist() == [2, 5]


def test_save_refuses_to_overwrite(tmp_path):
    rng = np.random.default_rng(7)
    a, b = random_tracklets(rng), random_tracklets(rng)
    a.save(tmp_path / "t")
    with pytest.raises(FileExistsError):
        b.save(tmp_path / "t")
    assert_same(Tracklets.load(tmp_path / "t"), a)
    b.save(tmp_path / "t", overwrite=True)
    assert_same(Tracklets.load(tmp_path / "t"), b)
    assert os.listdir(tmp_path) == ["t"]


def test_failed_save_leaves_nothing(tmp_path):
    t = Tracklets([str(tmp_path / "missing.png")], [0, 1], [0], [0], [0])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        t.save(tmp_path / "t")
    assert os.listdir(tmp_path) == []


# ---- damaged directories -------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    t = random_tracklets(np.random.default_rng(8), n=6)
    return t, t.save(tmp_path / "t")


def test_missing_directory_or_index(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tracklets.load(tmp_path / "nope")
    _, d = saved
    os.remove(d / "index.npz")
    with pytest.raises(FileNotFoundError, match="index.npz"):
        Tracklets.load(d)


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9])
def test_truncated_index(saved, keep):
    _, d = saved
    data = (d / "index.npz").read_bytes()
    (d / "index.npz").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="index"):
        Tracklets.load(d)


def test_truncated_or_missing_frame_array(saved):
    _, d = saved
    data = (d / "frames.npy").read_bytes()
    (d / "frames.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="frames.npy"):
        Tracklets.load(d)
    os.remove(d / "frames.npy")
    with pytest.raises(FileNotFoundError, match="frames.npy"):
        Tracklets.load(d)


def test_frame_array_of_wrong_shape_or_dtype(saved):
    t, d = saved
    np.save(d / "frames.npy", np.asarray(t.frames)[..., 0])
    with pytest.raises(ValueError, match="uint8 \\[S, H, W, 3\\]"):
        Tracklets.load(d)
    np.save(d / "frames.npy", np.asarray(t.frames).astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        Tracklets.load(d)
    np.save(d / "frames.npy", np.asarray(t.frames)[:-1])
    with pytest.raises(ValueError, match="slot"):
        Tracklets.load(d)


def rewrite_index(d, **changes):
    with np.load(d / "index.npz") as z:
        data = {k: z[k] for k in z.files}
    data.update(changes)
    for k, v in list(data.items()):
        if v is None:
            del data[k]
    np.savez(d / "index.npz", **data)


@pytest.mark.parametrize(
    "field, make, pattern",
    [
        ("video", lambda t: t.video[t.tracklet_of_frame] + 1, "'video' does not match"),
        ("tracklet", lambda t: t.tracklet_of_frame[::-1].copy(), "'tracklet' does not match"),
        ("identity", lambda t: t.identity[:-1], "'identity' has"),
        ("frame", lambda t: t.frame_index.astype(np.float64), "'frame' must be int64"),
        ("offsets", lambda t: t.offsets[::-1].copy(), "inconsistent index"),
        ("camera", lambda t: None, "no field 'camera'"),
        ("format", lambda t: np.array("something.else"), "format"),
    ],
)
def test_inconsistent_index(saved, field, make, pattern):
    t, d = saved
    rewrite_index(d, **{field: make(t)})
    with pytest.raises(ValueError, match=pattern):
        Tracklets.load(d)


@pytest.mark.parametrize("version", [np.array("1"), np.array(1.5), np.array([1, 2]), np.array(2**64 - 1, np.uint64)])
def test_a_version_that_is_not_an_int64_scalar_is_named(saved, version):
    _, d = saved
    rewrite_index(d, version=version)
    with pytest.raises(ValueError, match="index.npz: field 'version' must be int64 0-D"):
        Tracklets.load(d)


def test_an_archive_where_one_array_belongs_is_named(saved):
    _, d = saved
    shutil.copyfile(d / "index.npz", d / "frames.npy")
    with pytest.raises(ValueError, match=r"frames.npy is an .npz archive, expected a single array \(.npy\)"):
        Tracklets.load(d)
    with open(d / "index.npz", "wb") as index:  # (np.save would append .npy to the name)
        np.save(index, np.arange(3))
    with pytest.raises(ValueError, match="index.npz is a single array, expected an .npz archive"):
        Tracklets.load(d)


def test_missing_image_file(tmp_path):
    rng = np.random.default_rng(9)
    paths, _ = write_random_images(tmp_path / "src", rng, 3)
    d = Tracklets(paths, [0, 3], [0], [0], [0, 1, 2]).save(tmp_path / "t")
    victim = sorted(os.listdir(d / "images"))[1]
    os.remove(d / "images" / victim)
    loaded = Tracklets.load(d)  # the index lists the files: nothing is scanned at start-up
    assert loaded.images([0]).shape[0] == 1
    with pytest.raises(FileNotFoundError, match=victim):
        loaded.images([0, 1, 2])


@pytest.mark.parametrize("escape", ["/etc/passwd", "../outside.png", "images/../../outside.png"])
def test_index_paths_must_stay_in_the_tracklet_directory(tmp_path, escape):
    rng = np.random.default_rng(11)
    paths, _ = write_random_images(tmp_path / "src", rng, 2)
    d = Tracklets(paths, [0, 2], [0], [0], [0, 1]).save(tmp_path / "t")
    with np.load(d / "index.npz") as z:
        rel = z["paths"].copy()
    rewrite_index(d, paths=np.array([rel[0], escape]))
    with pytest.raises(ValueError, match="leave the tracklet directory"):
        Tracklets.load(d)
    if escape.startswith("/"):  # frames on another disk, where the user says they are
        rewrite_index(d, paths=np.array([rel[0], str(paths[1])]))
        np.testing.assert_array_equal(Tracklets.load(d, allow_outside_root=True).images([1])[0], read_image(paths[1]))


def test_corrupt_image_file_is_reported_on_read(tmp_path):
    rng = np.random.default_rng(10)
    paths, _ = write_random_images(tmp_path / "src", rng, 2)
    d = Tracklets(paths, [0, 2], [0], [0], [0, 1]).save(tmp_path / "t")
    victim = sorted(os.listdir(d / "images"))[0]
    (d / "images" / victim).write_bytes(b"not a png")
    t = Tracklets.load(d)
    with pytest.raises(ValueError, match=victim):
        t.images()
    assert read_image(t.frames[1]).shape == (10, 6, 3)


def test_index_is_a_zip_with_named_fields(saved):
    _, d = saved
    with zipfile.ZipFile(d / "index.npz") as z:
        names = set(z.namelist())
    for field in ("tracklet", "video", "camera", "frame", "slot", "identity", "offsets"):
        assert f"{field}.npy" in names


def test_damaged_features(tmp_path):
    t = random_tracklets(np.random.default_rng(11), features=True)
    d = t.save(tmp_path / "t")
    np.save(d / "features.npy", np.asarray(t.features)[:-1])
    with pytest.raises(ValueError, match="features"):
        Tracklets.load(d)
    data = (d / "features.npy").read_bytes()
    (d / "features.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="features.npy"):
        Tracklets.load(d)


def test_wrapping_offsets_and_negative_frame_indices_are_refused():
    # issue 14: np.diff of these offsets wraps around in int64 and looked non-decreasing
    frames = np.zeros((10, 4, 2, 3), np.uint8)
    with pytest.raises(ValueError, match="non-decreasing"):
        Tracklets(frames, np.array([0, 3 * 2**61, -3 * 2**61, 10]), [0, 0, 0], [0, 0, 0], np.arange(10))
    with pytest.raises(ValueError, match="frame_index must be >= 0"):
        Tracklets(frames, np.array([0, 4, 10]), [0, 0], [0, 0], np.arange(10) - 1)
