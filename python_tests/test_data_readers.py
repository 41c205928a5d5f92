"""ImageSet, the Market-1501 layout (write/read round trip, real-style names) and tracklet folders."""

from __future__ import annotations

import json

import os
from pathlib import Path

import numpy as np
import pytest

from cion_fast.data import ImageSet, Tracklets, read_market1501, read_tracklet_folders, write_image, write_market1501


def random_set(rng, n, pids=None, cams=None, h=16, w=8):
    pids = rng.integers(1, 50, n) if pids is None else np.asarray(pids)
    cams = rng.integers(0, 6, n) if cams is None else np.asarray(cams)
    frames = rng.integers(0, 999999, n)
    order = np.lexsort((frames, cams, pids))
    return ImageSet(images=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)[order], pids=pids[order],
                    camids=cams[order], frame_index=frames[order])


def assert_same_set(a: ImageSet, b: ImageSet):
    assert np.array_equal(a.pids, b.pids) and a.pids.dtype == np.int64
    assert np.array_equal(a.camids, b.camids) and a.camids.dtype == np.int64
    assert np.array_equal(a.frame_index, b.frame_index)
    assert np.array_equal(a.load_images(), b.load_images())


# ---- ImageSet ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(), TypeError, "exactly one"),
        (dict(images=np.zeros((2, 4, 2, 3), np.uint8), paths=["a", "b"]), TypeError, "exactly one"),
        (dict(images=np.zeros((2, 4, 2, 3), np.float32)), TypeError, "images"),
        (dict(images=np.zeros((2, 4, 2), np.uint8)), ValueError, "images"),
        (dict(paths="a.png"), TypeError, "paths"),
        (dict(paths=["a.png", 5]), TypeError, r"paths\[1\]"),
        (dict(images=np.zeros((2, 4, 2, 3), np.uint8), pids=[1, 2, 3]), ValueError, "pids"),
        (dict(images=np.zeros((2, 4, 2, 3), np.uint8), pids=[1.0, 2.0]), TypeError, "pids"),
        (dict(images=np.zeros((2, 4, 2, 3), np.uint8), camids=[0, -1]), ValueError, "camids"),
        (dict(images=np.zeros((2, 4, 2, 3), np.uint8), pids=[1, -3]), ValueError, "pids"),
        (dict(images=np.zeros((2, 4, 2, 3), np.uint8), frame_index=[1]), ValueError, "frame_index"),
    ],
)
def test_imageset_validation(kwargs, error, pattern):
    args = dict(pids=[1, 2], camids=[0, 1])
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        ImageSet(**args)


def test_imageset_subset_and_relabel():
    rng = np.random.default_rng(0)
    s = random_set(rng, 10, pids=rng.choice([3, 40, 7], 10))
    sub = s.subset(s.pids == 40)
    assert (sub.pids == 40).all() and np.array_equal(sub.images, s.images[s.pids == 40])
    r = s.relabeled()
    assert set(r.pids.tolist()) <= {0, 1, 2}
    assert np.array_equal(np.argsort(r.pids, kind="stable"), np.argsort(s.pids, kind="stable"))
    with pytest.raises(ValueError, match="distractors"):
        random_set(rng, 3, pids=[0, 1, 2]).relabeled()
    assert s.num_identities == len(set(s.pids.tolist()))


def test_pid_roles_are_carried_by_the_set(tmp_path):
    rng = np.random.default_rng(3)
    market = random_set(rng, 5, pids=[-1, 0, 0, 4, 9])  # Market-1501's defaults: 0 distractor, -1 junk
    assert (market.distractor_pid, market.junk_pid) == (0, -1)
    assert market.identity_mask.tolist() == [False, False, False, True, True] and market.num_identities == 2
    assert "identities=2" in repr(market) and "distractors=2" in repr(market)
    with pytest.raises(ValueError, match=r"identities only; drop the distractors \(pid 0\) and junk \(pid -1\)"):
        market.relabeled()
    kept = market.subset(market.identity_mask)
    assert kept.relabeled().pids.tolist() == [0, 1] and kept.subset([1]).distractor_pid == 0

    plain = ImageSet(images=market.images[1:], pids=[0, 0, 4, 9], camids=[0, 1, 2, 3], distractor_pid=None, junk_pid=None)
    assert plain.num_identities == 3 and plain.identity_mask.all() and "distractors=0" in repr(plain)
    assert plain.relabeled().pids.tolist() == [0, 0, 1, 2]
    assert plain.subset([0, 2]).distractor_pid is None and plain.in_memory().junk_pid is None
    relabeled = market.subset([3, 4]).relabeled()  # labels from 0 are all people: 0 is no distractor there
    assert (relabeled.distractor_pid, relabeled.num_identities, "distractors=0" in repr(relabeled)) == (None, 2, True)
    with pytest.raises(ValueError, match="pids must be >= 0, got -1"):
        ImageSet(images=market.images, pids=[-1, 0, 0, 4, 9], camids=[0] * 5, junk_pid=None)
    with pytest.raises(ValueError, match="pids must be >= 0 or the junk pid -1, got -2"):
        ImageSet(images=market.images, pids=[-2, 0, 0, 4, 9], camids=[0] * 5)
    for kwargs, error in [({"distractor_pid": -1}, ValueError), ({"junk_pid": 0}, ValueError),
                          ({"distractor_pid": "0"}, TypeError), ({"junk_pid": True}, TypeError)]:
        with pytest.raises(error, match=next(iter(kwargs))):
            ImageSet(images=market.images, pids=[1] * 5, camids=[0] * 5, **kwargs)
    with pytest.raises(ValueError, match="Market-1501 names make pid 0 a distractor"):
        plain.write_market1501(tmp_path / "query")  # read back, person 0 would become a distractor
    assert not (tmp_path / "query").exists()


# ---- Market-1501 ---------------------------------------------------------------------------------
def test_market_round_trip_png(tmp_path):
    rng = np.random.default_rng(1)
    train = random_set(rng, 25)
    query = random_set(rng, 6)
    gallery = random_set(rng, 20, pids=np.concatenate([[0, 0, 0], rng.integers(1, 50, 17)]))
    root = write_market1501(tmp_path / "m", train, query, gallery)
    assert sorted(os.listdir(root)) == ["bounding_box_test", "bounding_box_train", "query"]
    assert all(n.endswith(".png") for n in os.listdir(root / "query"))
    m = read_market1501(root, load_images=True)
    assert_same_set(m.train, train)
    assert_same_set(m.query, query)
    assert_same_set(m.gallery, gallery)
    assert (m.gallery.pids == 0).sum() == 3  # distractors kept
    lazy = read_market1501(root)
    assert lazy.train.images is None and len(lazy.train.paths) == 25
    assert_same_set(lazy.gallery, gallery)


def test_market_round_trip_keeps_duplicate_keys_in_order(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (4, 8, 4, 3), dtype=np.uint8)
    s = ImageSet(images=images, pids=[5, 5, 5, 5], camids=[1, 1, 1, 1], frame_index=[7, 7, 7, 7])
    names = [p.name for p in s.write_market1501(tmp_path / "query")]
    assert names == [f"0005_c2s1_000007_{k:02d}.png" for k in range(4)]
    s.write_market1501(tmp_path / "bounding_box_train")
    s.write_market1501(tmp_path / "bounding_box_test")
    m = read_market1501(tmp_path, load_images=True)
    assert np.array_equal(m.query.images, images)


def test_market_jpg(tmp_path):
    rng = np.random.default_rng(3)
    smooth = np.repeat(np.repeat(rng.integers(40, 200, (3, 4, 2, 3)), 8, axis=1), 8, axis=2).astype(np.uint8)
    s = ImageSet(images=smooth, pids=[1, 2, 3], camids=[0, 1, 2], frame_index=[1, 2, 3])
    root = write_market1501(tmp_path / "m", s, s, s, image_format="jpg")
    assert all(n.endswith(".jpg") for n in os.listdir(root / "query"))
    m = read_market1501(root, load_images=True)
    assert np.array_equal(m.query.pids, s.pids) and np.array_equal(m.query.camids, s.camids)
    assert np.abs(m.query.images.astype(int) - smooth).mean() < 10  # lossy but close (random would be ~70)
    with pytest.raises(ValueError, match="image_format"):
        write_market1501(tmp_path / "x", s, s, s, image_format="bmp")


def test_market_real_names(tmp_path):
    """Names as in the real dataset: junk -1 dropped, distractor 0000 kept, camid 0-based, a
    dataset subfolder found, Thumbs.db ignored."""
    base = tmp_path / "Market-1501-v15.09.15"
    img = np.random.default_rng(4).integers(0, 256, (16, 8, 3), dtype=np.uint8)
    layout = {
        "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "1500_c6s3_086567_01.jpg"],
        "query": ["0001_c1s1_001051_00.jpg", "0003_c3s3_075694_00.jpg"],
        "bounding_box_test": ["-1_c1s1_000401_03.jpg", "0000_c6s1_000076_02.jpg", "0001_c2s1_000301_01.jpg",
                              "0003_c1s1_065794_03.JPG"],
    }
    for folder, names in layout.items():
        os.makedirs(base / folder)
        for name in names:
            write_image(base / folder / name.replace(".JPG", ".jpg"), img)
            if name.endswith(".JPG"):
                os.rename(base / folder / name.replace(".JPG", ".jpg"), base / folder / name)
        (base / folder / "Thumbs.db").write_bytes(b"\x00\x01")
    m = read_market1501(tmp_path)
    assert m.root == base
    assert m.train.pids.tolist() == [2, 2, 1500] and m.train.camids.tolist() == [0, 1, 5]
    assert m.train.frame_index.tolist() == [451, 301, 86567]
    assert m.query.pids.tolist() == [1, 3] and m.query.camids.tolist() == [0, 2]
    assert m.gallery.pids.tolist() == [0, 1, 3] and m.gallery.camids.tolist() == [5, 1, 0]
    assert m.gallery.load_images().shape == (3, 16, 8, 3)


def test_market_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="bounding_box_train"):
        read_market1501(tmp_path)
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        os.makedirs(tmp_path / folder)
    write_image(tmp_path / "query" / "person_one.jpg", np.zeros((4, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="person_one.jpg"):
        read_market1501(tmp_path)
    s = ImageSet(images=np.zeros((1, 4, 2, 3), np.uint8), pids=[10000], camids=[0])
    with pytest.raises(ValueError, match="9999"):
        s.write_market1501(tmp_path / "x")


def test_market_different_sizes_need_lazy_reading(tmp_path):
    rng = np.random.default_rng(5)
    a = random_set(rng, 2, h=16, w=8)
    b = random_set(rng, 2, h=20, w=8)
    root = tmp_path / "m"
    write_market1501(root, a, a, a)
    b.write_market1501(root / "bounding_box_test", overwrite=True)
    write_image(root / "bounding_box_test" / "0001_c1s1_000001_09.png", rng.integers(0, 256, (12, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="different sizes"):
        read_market1501(root, load_images=True)
    assert len(read_market1501(root).gallery) == 3


# ---- tracklet folders ----------------------------------------------------------------------------
def make_folders(root, spec, rng, ext=".png"):
    """spec: {video: {track: [frame numbers]}} -> {(video, track, frame): image}."""
    images = {}
    for video, tracks in spec.items():
        for track, frames in tracks.items():
            os.makedirs(root / video / track, exist_ok=True)
            for f in frames:
                img = rng.integers(0, 256, (12, 6, 3), dtype=np.uint8)
                write_image(root / video / track / f"{f:06d}{ext}", img)
                images[(video, track, f)] = img
    return images


def test_tracklet_folders(tmp_path):
    rng = np.random.default_rng(6)
    spec = {"10": {"3": [5, 6, 7], "12": [1]}, "2": {"a": [100, 98, 99]}, "cam_b": {"0": [0]}}
    images = make_folders(tmp_path, spec, rng)
    t = read_tracklet_folders(tmp_path)
    # videos: numeric names numerically (2, 10), then the others; tracks likewise (3, 12)
    assert t.video.tolist() == [0, 1, 1, 2] and t.camera.tolist() == [0, 1, 1, 2]
    assert t.offsets.tolist() == [0, 3, 6, 7, 8]
    assert t.frame_index.tolist() == [98, 99, 100, 5, 6, 7, 1, 0]
    assert (t.identity == -1).all() and not t.has_pixels
    want = [images[k] for k in [("2", "a", 98), ("2", "a", 99), ("2", "a", 100), ("10", "3", 5), ("10", "3", 6),
                                ("10", "3", 7), ("10", "12", 1), ("cam_b", "0", 0)]]
    assert np.array_equal(t.images(), np.stack(want))
    u = Tracklets.load(t.save(tmp_path.parent / "saved"))
    assert np.array_equal(u.images(), t.images()) and np.array_equal(u.offsets, t.offsets)


def test_tracklet_folders_cameras(tmp_path):
    make_folders(tmp_path, {"c1_v0": {"0": [1]}, "c2_v1": {"0": [1]}, "c1_v2": {"0": [1]}}, np.random.default_rng(7))
    t = read_tracklet_folders(tmp_path, cameras=lambda name: int(name[1]) - 1)
    assert t.camera.tolist() == [0, 0, 1]  # videos sorted by name: c1_v0, c1_v2, c2_v1
    t = read_tracklet_folders(tmp_path, cameras={"c1_v0": 4, "c2_v1": 5, "c1_v2": 6})
    assert t.camera.tolist() == [4, 6, 5]
    with pytest.raises(ValueError, match="c2_v1"):
        read_tracklet_folders(tmp_path, cameras={"c1_v0": 4, "c1_v2": 6})


@pytest.mark.parametrize(
    "breakage, pattern",
    [
        ("empty", "no video folders"),
        ("file_in_root", "only video folders"),
        ("empty_video", "no track folders"),
        ("empty_track", "no frames"),
        ("bad_stem", "integer frame number"),
        ("duplicate", "two files for frame 5"),
        ("not_image", "only image files"),
        ("file_in_video", "only track folders"),
    ],
)
def test_tracklet_folders_odd_layouts(tmp_path, breakage, pattern):
    rng = np.random.default_rng(8)
    if breakage != "empty":
        make_folders(tmp_path, {"v0": {"t0": [5, 6]}}, rng)
    img = np.zeros((4, 2, 3), np.uint8)
    if breakage == "file_in_root":
        write_image(tmp_path / "000001.png", img)
    elif breakage == "empty_video":
        os.makedirs(tmp_path / "v1")
    elif breakage == "empty_track":
        os.makedirs(tmp_path / "v0" / "t1")
    elif breakage == "bad_stem":
        write_image(tmp_path / "v0" / "t0" / "frame_7.png", img)
    elif breakage == "duplicate":
        write_image(tmp_path / "v0" / "t0" / "5.jpg", img)
    elif breakage == "not_image":
        (tmp_path / "v0" / "t0" / "notes.txt").write_text("x")
    elif breakage == "file_in_video":
        write_image(tmp_path / "v0" / "000009.png", img)
    with pytest.raises(ValueError, match=pattern):
        read_tracklet_folders(tmp_path)


def test_tracklet_folders_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_tracklet_folders(tmp_path / "nope")


# ---- the other datasets of every ReID paper, in their layouts exactly as shipped ---------------

def _jpg(path: Path, value: int = 0) -> None:
    from cion_fast.data import write_image

    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.full((16, 8, 3), value, np.uint8))


def _market_style(base: Path, names: dict[str, list[str]]) -> None:
    for folder, files in names.items():
        for name in files:
            _jpg(base / folder / name)


def test_dukemtmc_layout(tmp_path):
    from cion_fast.data import read_dataset, read_dukemtmc

    _market_style(tmp_path / "DukeMTMC-reID", {
        "bounding_box_train": ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg", "0007_c8_f0000001.jpg"],
        "query": ["0005_c1_f0043555.jpg"],
        "bounding_box_test": ["0005_c3_f0044222.jpg", "0000_c6_f0032931.jpg", "0005_c1_f0043999.jpg"],
    })
    duke = read_dukemtmc(tmp_path)
    assert duke.layout == "dukemtmc" and len(duke.train) == 3 and duke.train.camids.tolist() == [1, 4, 7]
    assert duke.query.pids.tolist() == [5] and sorted(duke.gallery.pids.tolist()) == [0, 5, 5]
    assert read_dataset(tmp_path).layout == "dukemtmc"


def test_cuhk03_np_layout(tmp_path):
    from cion_fast.data import read_cuhk03, read_dataset

    for subset, extra in (("labeled", 0), ("detected", 1)):
        _market_style(tmp_path / "cuhk03-np" / subset, {
            "bounding_box_train": ["0001_c1_1.png", "0001_c2_6.png"] + ["0002_c1_2.png"] * extra,
            "query": ["0003_c1_1.png"],
            "bounding_box_test": ["0003_c2_6.png", "0004_c1_3.png"],
        })
    labeled, detected = read_cuhk03(tmp_path), read_cuhk03(tmp_path, subset="detected")
    assert (labeled.layout, detected.layout) == ("cuhk03-labeled", "cuhk03-detected")
    assert (len(labeled.train), len(detected.train)) == (2, 3) and labeled.train.camids.tolist() == [0, 1]
    assert read_dataset(tmp_path, cuhk03_subset="detected").layout == "cuhk03-detected"
    with pytest.raises(ValueError, match="subset must be one of 'labeled', 'detected'"):
        read_cuhk03(tmp_path, subset="manual")
    with pytest.raises(FileNotFoundError, match="not a CUHK03-NP root"):
        read_cuhk03(tmp_path / "cuhk03-np" / "labeled")


@pytest.mark.parametrize("version,train,test", [("MSMT17_V1", "train", "test"), ("MSMT17_V2", "mask_train_v2", "mask_test_v2")])
def test_msmt17_layouts(tmp_path, version, train, test):
    from cion_fast.data import read_dataset, read_msmt17

    root = tmp_path / version
    lists = {
        "train": ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_05_0303morning_0020_1.jpg 0"],
        "val": ["0001/0001_000_15_0303noon_0008_0.jpg 1"],
        "query": ["0007/0007_004_14_0303noon_0602_1.jpg 7"],
        "gallery": ["0007/0007_010_02_0303afternoon_0102_0.jpg 7", "0009/0009_001_14_0303noon_0603_0.jpg 9"],
    }
    for split, lines in lists.items():
        for line in lines:
            _jpg(root / (test if split in ("query", "gallery") else train) / line.split()[0])
        (root / f"list_{split}.txt").write_text("\n".join(lines) + "\n")
    merged, apart = read_msmt17(tmp_path), read_msmt17(root, keep_val=True)
    assert merged.layout == "msmt17" and len(merged.train) == 3 and merged.train.pids.tolist() == [0, 0, 1]
    assert merged.train.camids.tolist() == [0, 4, 14] and merged.train.frame_index.tolist() == [15, 20, 8]
    assert len(apart.train) == 2 and apart.val.pids.tolist() == [1]
    assert merged.query.camids.tolist() == [13] and merged.gallery.pids.tolist() == [7, 9]
    assert merged.train.paths[0].endswith(f"{version}/{train}/0000/0000_000_01_0303morning_0015_0.jpg")
    assert read_dataset(tmp_path).layout == "msmt17"
    missing = root / test / "0009/0009_001_14_0303noon_0603_0.jpg"
    missing.unlink()  # a damaged MSMT17 copy is named as such, not reported as an unknown layout
    with pytest.raises(FileNotFoundError, match="0009_001_14_0303noon_0603_0.jpg does not exist"):
        read_dataset(tmp_path, load_images=True)
    _jpg(missing)
    (root / "list_query.txt").write_text("0007/0007_004_14_0303noon_0602_1.jpg\n")
    with pytest.raises(ValueError, match=r"list_query.txt:1: expected 'PATH PID'"):
        read_msmt17(root)
    for escape in ("../../outside/0009_000_02_0303noon_0001_0.jpg", "/etc/0009_000_02_0303noon_0001_0.jpg"):
        (root / "list_query.txt").write_text(f"{escape} 9\n")
        with pytest.raises(ValueError, match=r"list_query.txt:1: .* is outside the dataset's folder"):
            read_msmt17(root)
    outside = tmp_path / "elsewhere" / "0009_000_02_0303noon_0001_0.jpg"  # the user says the list may point out
    outside.parent.mkdir()
    _jpg(outside)
    (root / "list_query.txt").write_text(f"{outside} 9\n")
    assert list(read_msmt17(root, allow_outside_root=True).query.paths) == [str(outside)]


def test_msmt17_person_0_is_an_identity_and_market_pid_0_stays_a_distractor(tmp_path):
    from cion_fast.data import read_dataset, read_msmt17
    from cion_fast.evaluate.retrieval import evaluate_features
    from cion_fast.finetune import _train_labels

    root = tmp_path / "MSMT17_V1"
    lists = {  # MSMT17 numbers its people from 0, in train and in test alike
        "train": ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_05_0303morning_0020_1.jpg 0",
                  "0001/0001_000_02_0303noon_0008_0.jpg 1"],
        "val": ["0002/0002_000_15_0303noon_0009_0.jpg 2"],
        "query": ["0000/0000_004_14_0303noon_0602_1.jpg 0"],
        "gallery": ["0000/0000_010_02_0303afternoon_0102_0.jpg 0", "0009/0009_001_14_0303noon_0603_0.jpg 9"],
    }
    for split, lines in lists.items():
        for line in lines:
            _jpg(root / ("test" if split in ("query", "gallery") else "train") / line.split()[0], value=len(line) % 7)
        (root / f"list_{split}.txt").write_text("\n".join(lines) + "\n")
    msmt = read_dataset(tmp_path)
    assert msmt.layout == "msmt17" and msmt.train.pids.tolist() == [0, 0, 1, 2]
    for split in (msmt.train, msmt.query, msmt.gallery):
        assert (split.distractor_pid, split.junk_pid) == (None, None) and split.identity_mask.all()
    assert msmt.train.num_identities == 3 and msmt.train.relabeled().pids.tolist() == [0, 0, 1, 2]
    assert repr(msmt.train) == "ImageSet(n=4, paths, identities=3, cameras=4, distractors=0)"
    assert repr(msmt.gallery) == "ImageSet(n=2, paths, identities=2, cameras=2, distractors=0)"
    assert read_msmt17(root, keep_val=True).val.distractor_pid is None
    train = msmt.train.in_memory()
    keep, labels, classes = _train_labels(train)  # fine-tuning trains person 0 as a class of its own
    assert keep.tolist() == [0, 1, 2, 3] and labels.tolist() == [0, 0, 1, 2] and classes == 3
    # evaluation compares pids, as torchreid does: the query's person 0 finds its gallery image
    features = np.array([[1.0, 0.0]], np.float32), np.array([[0.9, 0.1], [0.0, 1.0]], np.float32)
    metrics = evaluate_features(*features, msmt.query.pids, msmt.gallery.pids, msmt.query.camids, msmt.gallery.camids)
    assert metrics["rank1"] == 1.0 and metrics["mAP"] == 1.0
    (root / "list_val.txt").write_text("0003/0003_000_15_0303noon_0009_0.jpg -1\n")
    _jpg(root / "train" / "0003/0003_000_15_0303noon_0009_0.jpg")
    with pytest.raises(ValueError, match=r"list_val.txt:1: the PID must be >= 0, got -1"):
        read_msmt17(root)

    # Market-1501 (and the layouts read as it) keep pid 0 as a distractor and refuse to relabel it
    _market_style(tmp_path / "market", {"bounding_box_train": ["0002_c1s1_000451_03.jpg", "0007_c2s1_000100_01.jpg"],
                                        "query": ["0005_c1s1_000001_00.jpg"],
                                        "bounding_box_test": ["0000_c3s1_000002_00.jpg", "0005_c2s1_000003_00.jpg",
                                                              "-1_c1s1_000004_00.jpg"]})
    market = read_dataset(tmp_path / "market")
    assert (market.gallery.distractor_pid, market.gallery.junk_pid) == (0, -1) and market.gallery.pids.tolist() == [0, 5]
    assert repr(market.gallery) == "ImageSet(n=2, paths, identities=1, cameras=2, distractors=1)"
    with pytest.raises(ValueError, match="identities only"):
        market.gallery.relabeled()
    assert market.train.relabeled().pids.tolist() == [0, 1] and market.train.num_identities == 2


def test_read_dataset_names_the_layouts_it_knows(tmp_path):
    from cion_fast.data import read_dataset

    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="none of the dataset layouts known here: Market-1501 / DukeMTMC-reID"):
        read_dataset(tmp_path)


def test_evaluate_reads_a_dataset_of_mixed_image_sizes_from_paths(tmp_path, capsys):
    """Real DukeMTMC / CUHK03 / MSMT17 crops differ in size: `cion-fast evaluate --data` reads them
    by path and --size resizes each batch (without it: one clear error line)."""
    torch = pytest.importorskip("torch")
    from cion_fast import cli
    from cion_fast.data import write_image
    from cion_fast.models import build_backbone, save_backbone

    base = tmp_path / "DukeMTMC-reID"
    for folder, names in {"bounding_box_train": ["0001_c1_f0000001.jpg"], "query": ["0002_c1_f0000002.jpg", "0003_c1_f0000003.jpg"],
                          "bounding_box_test": ["0002_c2_f0000004.jpg", "0003_c3_f0000005.jpg", "0004_c2_f0000006.jpg"]}.items():
        (base / folder).mkdir(parents=True)
        for i, name in enumerate(names):
            write_image(base / folder / name, np.full((40 + 8 * i, 20 + 4 * i, 3), 60 * i, np.uint8))
    torch.manual_seed(0)
    weights = save_backbone(build_backbone("test_resnet"), tmp_path / "b.safetensors")
    args = ["evaluate", "--checkpoint", str(weights), "--data", str(tmp_path), "--device", "cpu"]
    assert cli.main(args) == 2
    assert "images have different sizes" in capsys.readouterr().err
    assert cli.main(args + ["--size", "32x16"]) == 0
    assert "mAP" in capsys.readouterr().out


def test_finetune_trains_on_a_dataset_of_mixed_image_sizes(tmp_path, capsys):
    """`cion-fast finetune --data` on real-style crops of many sizes: the train split is resized to
    the training size in memory, evaluation reads by path at that size."""
    pytest.importorskip("torch")
    from cion_fast import cli
    from cion_fast.data import write_image

    rng = np.random.default_rng(0)
    base = tmp_path / "DukeMTMC-reID"
    names = {"bounding_box_train": [f"{pid:04d}_c{1 + i % 2}_f{pid * 10 + i:07d}.jpg" for pid in (1, 2, 3) for i in range(4)],
             "query": ["0005_c1_f0000001.jpg", "0006_c1_f0000002.jpg"],
             "bounding_box_test": ["0005_c2_f0000003.jpg", "0006_c2_f0000004.jpg", "0007_c2_f0000005.jpg"]}
    for folder, files in names.items():
        (base / folder).mkdir(parents=True)
        for name in files:
            h = int(rng.integers(30, 60))
            write_image(base / folder / name, rng.integers(0, 256, (h, h // 2, 3), dtype=np.uint8))
    args = ["finetune", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--arch", "test_resnet", "--steps", "2",
            "--batch-size", "8", "--size", "32x16", "--device", "cpu", "--no-progress"]
    assert cli.main(args) == 0
    assert "bnneck" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "results.json").read_text())["train"]["step"] == 2


def test_a_16_bit_grey_image_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    from cion_fast.data import read_image

    levels = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "grey16.png")
    image = read_image(tmp_path / "grey16.png")
    assert image.dtype == np.uint8 and image.shape == (1, 4, 3)
    np.testing.assert_array_equal(image[..., 0], np.round(levels / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels, with no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [10_000, 100_000])  # Pillow warns above its limit, refuses above twice it
def test_a_decompression_bomb_header_is_refused_naming_the_file(tmp_path, side):
    from cion_fast.data import read_image, read_images

    (tmp_path / "bomb.png").write_bytes(_png_header(side, side))
    for read in (read_image, lambda path: read_images([path])):
        with pytest.raises(ValueError, match=r"bomb.png is larger than Pillow's decompression-bomb limit of \d+ pixels"):
            read(tmp_path / "bomb.png")


@pytest.mark.parametrize("name, pattern", [
    ("\uff10\uff10\uff10\uff11_c1s1_000451_03.png", "not a Market-1501 image name"),  # fullwidth digits
    ("0001_c\u0663s1_000451_03.png", "not a Market-1501 image name"),  # an Arabic-Indic camera digit
    ("1234567890123456789012345_c1s1_000451_03.png", r"the person id of .* must be <= 2\*\*63 - 1"),
    ("0001_c1234567890123456789012345s1_000451_03.png", r"the camera of .* must be <= 2\*\*63 - 1"),
    ("0001_c1s1_1234567890123456789012345_03.png", r"the frame of .* must be <= 2\*\*63 - 1"),
])
def test_market_names_take_ascii_int64_numbers_only(tmp_path, name, pattern):
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (tmp_path / folder).mkdir()
    _jpg(tmp_path / "query" / name)
    with pytest.raises(ValueError, match=pattern):
        read_market1501(tmp_path)


@pytest.mark.parametrize("line, pattern", [
    ("0000/0000_000_01_0303morning_0015_0.jpg \uff10".encode(), r"list_query.txt:1: the PID must be an int64 integer in ASCII"),
    (b"0000/0000_000_1234567890123456789012345_0303morning_0015_0.jpg 0",
     r"list_query.txt:1: the camera field of .* must be <= 2\*\*63 - 1"),
    (b"0000/0000_000_01_0303morning_1234567890123456789012345_0.jpg 0", r"list_query.txt:1: the frame field of"),
    (b"0000/0000_000_00_0303morning_0015_0.jpg 0", r"list_query.txt:1: the camera field of .* must be >= 1"),
    (b"0000/0000_000_01_0303morning_0015_0.jpg 0\n\xff\xfe/0000_000_01_0303morning_0015_0.jpg 0",
     r"MSMT17 list .*list_query.txt:2 is not UTF-8 text"),
])
def test_msmt17_lists_with_hostile_numbers_or_bytes_name_the_line(tmp_path, line, pattern):
    from cion_fast.data import read_msmt17

    for folder in ("train", "test"):
        (tmp_path / folder).mkdir()
    for split in ("train", "val", "query", "gallery"):
        (tmp_path / f"list_{split}.txt").write_bytes(line + b"\n" if split == "query" else b"")
    with pytest.raises(ValueError, match=pattern):
        read_msmt17(tmp_path)


@pytest.mark.parametrize("stem, pattern", [("\uff10\uff10\uff11", "must be an int64 integer in ASCII digits"),
                                           ("\u00b2", "must be an int64 integer in ASCII digits"),
                                           ("1234567890123456789012345", r"must be <= 2\*\*63 - 1")])
def test_tracklet_frame_names_take_ascii_int64_numbers_only(tmp_path, stem, pattern):
    (tmp_path / "v0" / "t0").mkdir(parents=True)
    write_image(tmp_path / "v0" / "t0" / f"{stem}.png", np.zeros((4, 2, 3), np.uint8))
    with pytest.raises(ValueError, match=f"{stem}.png: the file stem .*{pattern}"):
        read_tracklet_folders(tmp_path)


@pytest.mark.parametrize("cameras, error, pattern", [
    ({"v0": "a"}, TypeError, r"cameras\['v0'\] must be an integer"),
    ({"v0": 1.5}, TypeError, r"cameras\['v0'\] must be an integer"),
    ({"v0": 2**70}, ValueError, r"cameras\['v0'\] must be <= 2\*\*63 - 1"),
    (lambda name: None, TypeError, r"cameras\('v0'\) must be an integer"),
    (["v0"], TypeError, "cameras must be a Mapping"),
])
def test_tracklet_folder_cameras_must_be_integers(tmp_path, cameras, error, pattern):
    make_folders(tmp_path, {"v0": {"t0": [1]}}, np.random.default_rng(9))
    with pytest.raises(error, match=pattern):
        read_tracklet_folders(tmp_path, cameras=cameras)
