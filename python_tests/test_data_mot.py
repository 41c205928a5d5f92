"""MOTChallenge tracker output -> tracklets: synthetic people pasted at known boxes on noisy frames,
the matching tracks file, and the round trip through ``tracklets_from_mot`` and ``cion-fast tracklets``."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cion_fast import cli
from cion_fast.data import Tracklets, tracklets_from_mot, write_image
from cion_fast.data._io import resize_image

SIZE = (32, 16)  # crop (H, W); people are pasted at this size so unclipped crops come back exactly
FRAME = (72, 96)  # frame (H, W): tracks 1 and 4 walk at y = 2, tracks 2, 3 and 5 at y = 38
FRAMES = 5


@pytest.fixture(scope="module")
def people():
    """Three crops of different synthetic identities, uint8 [3, 32, 16, 3]."""
    from cion_fast.data import synth

    world = synth.generate(synth.WorldConfig.quick(identities=6, train_identities=2, eval_identities=2, videos=2))
    t = world.tracklets
    firsts = [int(np.flatnonzero(t.identity == pid)[0]) for pid in np.unique(t.identity[t.identity >= 0])[:3]]
    return np.stack([resize_image(np.asarray(t.frames[i]), SIZE) for i in firsts])


# (track, person, frames, x, y, h, conf): the scene. Track 1 walks right; track 2 has one
# low-confidence box (frame 3); track 3 is short (2 frames); track 4 is small (12 px high); track 5
# crosses the left border, and its box in frame 4 lies entirely outside the frame.
SCENE = [
    (1, 0, [1, 2, 3, 4, 5], [4, 10, 16, 22, 28], 2, 32, 0.9),
    (2, 1, [1, 2, 3, 4], [60, 60, 60, 60], 38, 32, [0.9, 0.9, 0.2, 0.9]),
    (3, 2, [2, 3], [40, 40], 38, 32, 0.9),
    (4, 2, [1, 2, 3, 4], [80, 80, 80, 80], 2, 12, 0.9),
    (5, 2, [1, 2, 3, 4], [-4, -4, -4, -50], 38, 32, 0.9),
]


def _paste(frame: np.ndarray, person: np.ndarray, x: int, y: int, h: int) -> None:
    crop = person if h == SIZE[0] else resize_image(person, (h, h // 2))
    x0 = max(x, 0)
    if x0 < x + crop.shape[1]:
        frame[y:y + h, x0:x + crop.shape[1]] = crop[:, x0 - x:]


@pytest.fixture()
def scene(tmp_path, people):
    """DIR/img1/000001.png.. (noise with the people pasted) and DIR/tracks.txt (ByteTrack-like, 10 columns)."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (FRAMES, *FRAME, 3), dtype=np.uint8)
    lines = []
    for track, person, numbers, xs, y, h, conf in SCENE:
        confs = conf if isinstance(conf, list) else [conf] * len(numbers)
        for k, x, c in zip(numbers, xs, confs):
            _paste(frames[k - 1], people[person], x, y, h)
            lines.append(f"{k},{track},{x:.2f},{y:.2f},{h // 2:.2f},{h:.2f},{c},-1,-1,-1")
    (tmp_path / "img1").mkdir()
    for k, frame in enumerate(frames, start=1):
        write_image(tmp_path / "img1" / f"{k:06d}.png", frame)
    (tmp_path / "tracks.txt").write_text("\n".join(sorted(lines, key=lambda s: int(s.split(",")[0]))) + "\n")
    return tmp_path, frames


def _run(root, source, **kw):
    return tracklets_from_mot(root / "tracks.txt", source, root / "out", size=SIZE, progress=False, **kw)


def test_every_track_comes_back(scene, people):
    root, frames = scene
    t = _run(root, root / "img1")
    assert t.lengths.tolist() == [5, 4, 2, 4, 3]  # track 5's box outside the frame is dropped
    assert t.frame_index[t.frames_of(0)].tolist() == [1, 2, 3, 4, 5]
    assert t.frame_index[t.frames_of(4)].tolist() == [1, 2, 3]
    assert (t.identity == -1).all() and t.video.tolist() == [0] * 5
    assert np.array_equal(t.images(np.arange(5)), np.repeat(people[:1], 5, axis=0))
    assert np.array_equal(Tracklets.load(root / "out").frames, t.frames)


def test_a_box_crossing_the_border_is_clipped(scene, people):
    root, frames = scene
    t = _run(root, root / "img1")
    clipped = resize_image(np.ascontiguousarray(people[2][:, 4:]), SIZE)
    assert np.array_equal(t.images([t.offsets[4]])[0], clipped)


def test_filters(scene):
    root, _ = scene
    said = []
    t = _run(root, root / "img1", min_height=16, min_length=3, min_confidence=0.5, log=said.append)
    # track 2 loses its low-confidence box, track 3 is too short, track 4 too small
    assert t.lengths.tolist() == [5, 3, 3]
    assert t.frame_index[t.frames_of(1)].tolist() == [1, 2, 4]
    # each filter's count, in the order they apply: track 5's box past the border, track 4's four
    # small boxes, track 2's low-confidence box, then track 3's two boxes (a track of 2 < 3)
    assert said == ["kept 11 of 19 boxes; dropped 1 outside the frame, 4 below min_height, 1 below min_confidence, "
                    "2 in tracks shorter than min_length"]


def test_video_frames(scene, people):
    av = pytest.importorskip("av")
    root, frames = scene
    with av.open(str(root / "frames.avi"), "w") as out:
        stream = out.add_stream("png", rate=5)  # lossless: the crops must come back exactly
        stream.width, stream.height, stream.pix_fmt = FRAME[1], FRAME[0], "rgb24"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    t = _run(root, root / "frames.avi")
    assert t.lengths.tolist() == [5, 4, 2, 4, 3]
    assert np.array_equal(t.images(np.arange(5)), np.repeat(people[:1], 5, axis=0))


@pytest.mark.parametrize("row, message", [
    ("1,9,a,2,8,16,1", "expected numbers"),
    ("1,9,2,2", "at least 6"),
    ("1,9,2,2,0,16,1", "positive size"),
    ("1,9,2,2,8,-3,1", "positive size"),
    ("0,9,2,2,8,16,1", "integer >= 1"),
    ("1.5,9,2,2,8,16,1", "integer >= 1"),
    ("1,-1,2,2,8,16,1", "track id"),
    ("1,9,nan,2,8,16,1", "finite"),
    ("9,9,2,2,8,16,1", "frame 9 is not in"),
    ("1,1,2,2,8,16,1", "second box"),
])
def test_each_bad_input_names_file_and_line(scene, row, message):
    root, _ = scene
    path = root / "tracks.txt"
    path.write_text(f"1,1,4,2,16,32,0.9\n{row}\n")
    with pytest.raises(ValueError, match=f"{path}:2: .*{message}"):
        _run(root, root / "img1")
    assert not (root / "out").exists()


def test_a_frame_past_the_end_of_the_video(scene):
    av = pytest.importorskip("av")
    root, frames = scene
    with av.open(str(root / "frames.avi"), "w") as out:
        stream = out.add_stream("png", rate=5)
        stream.width, stream.height, stream.pix_fmt = FRAME[1], FRAME[0], "rgb24"
        out.mux(stream.encode(av.VideoFrame.from_ndarray(frames[0], format="rgb24")))
        out.mux(stream.encode())
    (root / "tracks.txt").write_text("1,1,4,2,16,32,0.9\n3,1,4,2,16,32,0.9\n")
    with pytest.raises(ValueError, match=r"tracks.txt:2: frame 3 is beyond the end of video .*\(1 frames\)"):
        _run(root, root / "frames.avi")


def test_a_video_damaged_mid_stream_names_the_file(scene):
    """A decoder error after some good frames is one ValueError naming the video and the row."""
    av = pytest.importorskip("av")
    root, frames = scene
    path = root / "frames.avi"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=5)
        stream.width, stream.height, stream.pix_fmt = FRAME[1], FRAME[0], "rgb24"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 2000] = bytes(2000)  # zeros over the middle frames
    path.write_bytes(bytes(data))
    (root / "tracks.txt").write_text("".join(f"{k},1,4,2,16,32,0.9\n" for k in range(1, len(frames) + 1)))
    with pytest.raises(ValueError, match=r"tracks.txt:\d+: video .*frames.avi cannot be decoded after frame \d+"):
        _run(root, path)
    assert not (root / "out").exists()


def test_a_video_without_pyav_names_the_extra(scene, monkeypatch):
    root, _ = scene
    (root / "frames.avi").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "av", None)  # import av then fails, as where PyAV is not installed
    with pytest.raises(ImportError, match=r"cion_fast\[video\]"):
        _run(root, root / "frames.avi")


def test_a_file_that_is_no_video(scene):
    pytest.importorskip("av")
    root, _ = scene
    (root / "frames.avi").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot read video .*frames.avi"):
        _run(root, root / "frames.avi")


def test_bad_arguments(scene):
    root, _ = scene
    with pytest.raises(ValueError, match="min_length"):
        _run(root, root / "img1", min_length=0)
    with pytest.raises(ValueError, match="no box is left"):
        _run(root, root / "img1", min_height=1000)
    with pytest.raises(TypeError, match="size"):
        tracklets_from_mot(root / "tracks.txt", root / "img1", root / "out", size=32)


def test_cli(scene, capsys):
    root, _ = scene
    args = ["tracklets", "--mot", str(root / "tracks.txt"), "--frames", str(root / "img1"), "--size", "32x16"]
    assert cli.main(args + ["--out", str(root / "out"), "--min-length", "3"]) == 0
    assert Tracklets.load(root / "out").lengths.tolist() == [5, 4, 4, 3]
    assert "kept 16 of 19 boxes; dropped 1 outside the frame" in capsys.readouterr().out
    (root / "tracks.txt").write_text("1,1,4,2,16,32,0.9\n1,2,x,2,16,32,0.9\n")
    assert cli.main(args + ["--out", str(root / "out2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cion-fast tracklets: error: ") and "tracks.txt:2" in err[0]
    assert cli.main(args + ["--out", str(root / "out")]) == 2
    assert "--overwrite" in capsys.readouterr().err
