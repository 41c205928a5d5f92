"""The ``cion-fast extract`` and ``cion-fast denoise`` commands on a tiny synthetic world on disk."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import cion_fast
from cion_fast.cli import main
from cion_fast.data import Tracklets
from cion_fast.denoise import DenoiseConfig, denoise
from cion_fast.features import stripe_histogram
from cion_fast.features.io import load_features


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    from cion_fast.data.synth import WorldConfig, generate

    config = WorldConfig.quick(identities=10, train_identities=4, eval_identities=4, cameras=2, videos=3, seed=2)
    return generate(config).tracklets.save(tmp_path_factory.mktemp("world") / "tracklets")


def test_extract_then_denoise(world_dir, tmp_path, capsys):
    features_path = tmp_path / "stripe.npz"
    assert main(["extract", "--data", str(world_dir), "--model", "stripe", "--out", str(features_path)]) == 0
    tracklets = Tracklets.load(world_dir)
    stored = load_features(features_path)
    assert stored.model == "stripe"
    np.testing.assert_array_equal(stored.features, stripe_histogram(tracklets.images()))
    for name in ("offsets", "video", "camera", "frame_index", "identity"):
        np.testing.assert_array_equal(getattr(stored, name), getattr(tracklets, name))

    out = tmp_path / "labels"
    args = ["denoise", "--tracklets", str(world_dir), "--features", str(features_path), "--out", str(out), "--no-progress"]
    assert main(args + ["--link-threshold", "0.5", "--mutual-k", "none"]) == 0
    printed = capsys.readouterr().out
    assert "level 3" in printed and "B3 F" in printed
    config = DenoiseConfig(link_threshold=0.5)  # a threshold given: fixed thresholds
    expected = denoise(stored.features, tracklets.offsets, tracklets.video, tracklets.frame_index, config)
    np.testing.assert_array_equal(np.load(out / "labels.npy"), expected.labels)
    with np.load(out / "levels.npz") as levels:
        for name, labels in zip(("level_1", "level_2", "level_3"), expected.levels):
            np.testing.assert_array_equal(levels[name], labels)
    report = json.loads((out / "report.json").read_text())
    assert report["config"] == config.as_dict()
    assert [row["level"] for row in report["levels"]] == ["level 1", "level 2", "level 3"]
    assert set(report["quality"]) == {"tracklets", "level 1", "level 2", "level 3"}
    assert report["inputs"]["frames"] == tracklets.num_frames

    assert main(args) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err
    # --scratch: the centred copy in a memory-mapped file there, the same labels, nothing left behind
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert main(args + ["--overwrite", "--link-threshold", "0.5", "--mutual-k", "none", "--scratch", str(scratch)]) == 0
    np.testing.assert_array_equal(np.load(out / "labels.npy"), expected.labels)
    assert list(scratch.iterdir()) == []
    with pytest.raises(SystemExit) as exited:  # an argparse error: one line, exit 2
        main(args + ["--overwrite", "--scratch", str(tmp_path / "nowhere")])
    assert exited.value.code == 2 and "not an existing directory" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--no-cannot-link"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["cannot_link"] is False
    # no threshold given: chosen from the data, and reported
    assert report["config"]["thresholds"] == "fixed" and report["calibration"]["thresholds"]["link_threshold"] == report["config"]["link_threshold"]
    assert set(report["calibration"]["separation"]) == {"frame_auc", "centroid_auc"}
    assert main(args + ["--overwrite", "--thresholds", "auto", "--link-threshold", "0.5"]) == 2
    assert "--thresholds fixed" in capsys.readouterr().err


@pytest.fixture(scope="module")
def stripe_file(world_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("features") / "stripe.npz"
    assert main(["extract", "--data", str(world_dir), "--model", "stripe", "--out", str(path)]) == 0
    return path


def test_denoise_device_errors_are_one_line(world_dir, stripe_file, tmp_path, capsys):
    args = ["denoise", "--tracklets", str(world_dir), "--features", str(stripe_file), "--out", str(tmp_path / "labels"),
            "--no-progress", "--device", "cuda"]
    assert main(args + ["--scratch", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "scratch" in err and len(err.strip().splitlines()) == 1
    if not cion_fast.cuda_available():
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "device 'cuda'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "labels").exists()


def test_a_full_scratch_disk_is_one_line_and_leaves_nothing(world_dir, stripe_file, tmp_path, capsys, monkeypatch):
    # The scratch file's blocks are reserved up front: no disk left is an error now, not a SIGBUS later.
    import errno

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    args = ["denoise", "--tracklets", str(world_dir), "--features", str(stripe_file), "--out", str(tmp_path / "labels"),
            "--no-progress", "--scratch", str(scratch)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "scratch: no room" in err and len(err.strip().splitlines()) == 1
    assert list(scratch.iterdir()) == [] and not (tmp_path / "labels").exists()


def test_denoise_prints_and_writes_the_label_free_estimate(world_dir, stripe_file, tmp_path, capsys, monkeypatch):
    from cion_fast.denoise import io

    def with_estimate(*args, **kwargs):
        result = denoise(*args, **kwargs)
        result.estimate = {"false_merge_rate": 0.0125, "separation": {"centroid_auc": 0.9}}
        return result

    monkeypatch.setattr(io, "denoise", with_estimate)
    out = tmp_path / "labels"
    assert main(["denoise", "--tracklets", str(world_dir), "--features", str(stripe_file), "--out", str(out), "--no-progress"]) == 0
    assert "label-free estimate: false_merge_rate=0.0125  separation.centroid_auc=0.9" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["estimate"]["false_merge_rate"] == 0.0125


def test_an_existing_output_is_refused_before_denoising(world_dir, stripe_file, tmp_path, capsys, monkeypatch):
    from cion_fast.denoise import io

    (tmp_path / "labels").mkdir()
    monkeypatch.setattr(io, "denoise", lambda *args, **kwargs: pytest.fail("denoised although the output exists"))
    args = ["denoise", "--tracklets", str(world_dir), "--features", str(stripe_file), "--out", str(tmp_path / "labels")]
    assert main(args) == 2 and "already exists" in capsys.readouterr().err


@pytest.mark.cuda
def test_denoise_on_the_gpu_writes_the_cpu_labels(world_dir, stripe_file, tmp_path):
    from cion_fast.denoise import quality

    args = ["denoise", "--tracklets", str(world_dir), "--features", str(stripe_file), "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "cpu")]) == 0
    assert main(args + ["--out", str(tmp_path / "gpu"), "--device", "cuda"]) == 0
    assert json.loads((tmp_path / "gpu" / "report.json").read_text())["inputs"]["device"] == "cuda"
    cpu, gpu = (np.load(tmp_path / name / "labels.npy") for name in ("cpu", "gpu"))
    assert quality(gpu, cpu).bcubed_f > 0.995  # float rounding may move a value at a threshold


def test_extract_oracle_and_timm(world_dir, tmp_path):
    assert main(["extract", "--data", str(world_dir), "--model", "oracle", "--out", str(tmp_path / "o.npz"), "--float16"]) == 0
    assert load_features(tmp_path / "o.npz").features.dtype == np.float16
    assert main(["extract", "--data", str(world_dir), "--model", "timm:test_resnet", "--out", str(tmp_path / "t.npz"), "--device", "cpu"]) == 0
    stored = load_features(tmp_path / "t.npz")
    assert stored.features.shape[0] == stored.frame_index.shape[0] and stored.model == "timm:test_resnet"


def test_bad_model_and_mismatched_features(world_dir, tmp_path, capsys):
    assert main(["extract", "--data", str(world_dir), "--model", "sift", "--out", str(tmp_path / "x.npz")]) == 2
    assert "--model" in capsys.readouterr().err
    other = tmp_path / "other.npz"
    tracklets = Tracklets.load(world_dir)
    from cion_fast.features.io import save_features

    shifted = Tracklets(tracklets.frames, tracklets.offsets, tracklets.video, tracklets.camera, tracklets.frame_index + 1, tracklets.identity)
    save_features(other, np.ones((tracklets.num_frames, 4), np.float32), shifted, "ones")
    assert main(["denoise", "--tracklets", str(world_dir), "--features", str(other), "--out", str(tmp_path / "l")]) == 2
    assert "was not extracted from" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--window", "0"], ["--min-frames", "-1"], ["--stride", "99"]])
def test_bad_denoise_values_are_one_line_errors_with_exit_2(world_dir, tmp_path, capsys, bad):
    features_path = tmp_path / "stripe.npz"
    assert main(["extract", "--data", str(world_dir), "--model", "stripe", "--out", str(features_path)]) == 0
    capsys.readouterr()
    args = ["denoise", "--tracklets", str(world_dir), "--features", str(features_path), "--out", str(tmp_path / "l")]
    assert main(args + bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cion-fast denoise: error: ") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "l").exists()


def test_extract_refuses_to_overwrite_and_rejects_a_zero_batch(world_dir, tmp_path, capsys):
    out = tmp_path / "f.npz"
    assert main(["extract", "--data", str(world_dir), "--model", "stripe", "--out", str(out)]) == 0
    before = out.read_bytes()
    assert main(["extract", "--data", str(world_dir), "--model", "stripe", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["extract", "--data", str(world_dir), "--model", "stripe", "--out", str(out), "--overwrite"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["extract", "--data", str(world_dir), "--model", "stripe", "--out", str(tmp_path / "g.npz"), "--batch-size", "0"])
    assert exit_info.value.code == 2


def test_a_truncated_features_file_is_a_clear_error(world_dir, tmp_path, capsys):
    whole = tmp_path / "f.npz"
    assert main(["extract", "--data", str(world_dir), "--model", "stripe", "--out", str(whole)]) == 0
    for keep in (100, whole.stat().st_size // 2, whole.stat().st_size - 10):
        cut = tmp_path / f"cut{keep}.npz"
        cut.write_bytes(whole.read_bytes()[:keep])
        with pytest.raises(ValueError, match="unreadable|lacks|not a cion_fast"):
            load_features(cut)
        capsys.readouterr()
        args = ["denoise", "--tracklets", str(world_dir), "--features", str(cut), "--out", str(tmp_path / f"l{keep}")]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert str(cut) in err and "\n" not in err
