"""The CLI's error policy: bad input is one line and exit 2; an internal error keeps its traceback."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cion_fast import cli


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(args):
        return len(None)  # Python's TypeError: a bug, not bad input

    monkeypatch.setitem(cli._COMMANDS, "info", ("info", broken))
    with pytest.raises(TypeError, match="NoneType"):
        cli.main(["info"])


def test_a_check_of_the_package_is_one_line(capsys):
    assert cli.main(["demo", "--quick", "--finetune-steps", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cion-fast demo: error: finetune_steps must be >= 0") and len(err.strip().splitlines()) == 1


def test_a_missing_path_is_one_line(tmp_path, capsys):
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "nowhere.safetensors"), "--data", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ---- the hostile-input cases: each ends in one "error:" line naming the option or path, exit 2 ----

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny world on disk: DIR/tracklets and DIR/market (a few hundred frames)."""
    from cion_fast.data.synth import WorldConfig, generate

    root = tmp_path_factory.mktemp("world")
    generate(WorldConfig.quick(identities=8, train_identities=4, eval_identities=4, cameras=2, videos=2, seed=3)).save(root)
    return root


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """An exported random-init backbone (timm's test_resnet: a few thousand weights)."""
    from cion_fast.models import build_backbone, save_backbone

    return save_backbone(build_backbone("test_resnet"), tmp_path_factory.mktemp("backbone") / "b.safetensors")


def error_line(capsys) -> str:
    """The one line on stderr besides progress lines (``desc:  p%| ...``, tqdm's or the plain bar's)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and "error:" in lines[0], lines
    return lines[0]


def extract(world, out, *flags) -> int:
    return cli.main(["extract", "--data", str(world / "tracklets"), "--out", str(out), *flags])


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), OSError(30, "Read-only file system"),
                                   OSError("Not enough free space to write 4096 bytes")])  # numpy's: no errno
def test_an_output_that_cannot_be_written_is_one_line_naming_it(world, tmp_path, capsys, monkeypatch, error):
    # a full disk or a read-only filesystem fails the write of the temporary: the message names --out
    def fail(fd):
        raise error

    monkeypatch.setattr(os, "fsync", fail)
    assert extract(world, tmp_path / "f.npz", "--model", "stripe") == 2
    assert f"cannot write {tmp_path / 'f.npz'}" in error_line(capsys)
    assert os.listdir(tmp_path) == []  # no temporary left behind


def test_a_name_too_long_is_one_line(world, tmp_path, capsys):
    assert extract(world, tmp_path / ("a" * 300 + ".npz"), "--model", "stripe") == 2
    assert "File name too long" in error_line(capsys)


def test_a_size_whose_batch_cannot_fit_is_refused_before_any_work(world, tmp_path, capsys):
    assert extract(world, tmp_path / "f.npz", "--model", "timm:test_resnet", "--device", "cpu", "--size", "99999x99999") == 2
    assert "size 99999x99999" in error_line(capsys)


@pytest.mark.parametrize("device", ["tpu", "cuda:99"])  # no machine has a 100th GPU: "cuda" without a GPU, anywhere
def test_extract_and_evaluate_check_the_device_as_training_does(world, backbone, tmp_path, capsys, device):
    assert extract(world, tmp_path / "f.npz", "--model", "timm:test_resnet", "--device", device) == 2
    assert device in error_line(capsys)
    assert cli.main(["evaluate", "--checkpoint", str(backbone), "--data", str(world / "market"), "--device", device]) == 2
    assert device in error_line(capsys)


def test_a_file_that_is_no_checkpoint_is_one_line_naming_it(world, tmp_path, capsys):
    summary = world / "summary.json"
    assert extract(world, tmp_path / "f.npz", "--model", f"checkpoint:{summary}") == 2
    assert str(summary) in error_line(capsys)
    assert cli.main(["finetune", "--data", str(world / "market"), "--out", str(tmp_path / "run"), "--steps", "1",
                     "--arch", "test_resnet", "--batch-size", "8", "--init", str(summary)]) == 2
    assert str(summary) in error_line(capsys)


def test_a_network_of_one_input_size_says_to_pass_size(world, tmp_path, capsys):
    # vit_tiny_patch16_224 asserts 224x224 inputs; the world's crops are 128x64
    assert extract(world, tmp_path / "f.npz", "--model", "timm:vit_tiny_patch16_224", "--device", "cpu") == 2
    assert "--size" in error_line(capsys)


def test_a_timm_kwarg_the_model_refuses_is_one_line(world, tmp_path, capsys):
    assert cli.main(["pretrain", "--data", str(world / "tracklets"), "--out", str(tmp_path / "run"), "--method", "dino",
                     "--steps", "1", "--arch", "test_resnet", "--device", "cpu", "--timm-kwarg", "drop_path_rate=abc"]) == 2
    assert "--timm-kwarg" in error_line(capsys)


def test_rerank_on_a_split_too_small_for_k1_says_so(backbone, tmp_path, capsys):
    from cion_fast.data import ImageSet

    crops = ImageSet(images=np.full((4, 16, 8, 3), 100, np.uint8), pids=[1, 2, 1, 2], camids=[0, 0, 1, 1])
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        crops.write_market1501(tmp_path / split)
    assert cli.main(["evaluate", "--checkpoint", str(backbone), "--data", str(tmp_path), "--device", "cpu", "--rerank"]) == 2
    assert "without re-ranking" in error_line(capsys)


def test_frames_too_small_for_the_stripes_are_one_line(world, tmp_path, capsys):
    from cion_fast.data import Tracklets

    t = Tracklets.load(world / "tracklets")
    tiny = Tracklets(np.ascontiguousarray(t.frames[:, :1, :1]), t.offsets, t.video, t.camera, t.frame_index)
    tiny.save(tmp_path / "tiny")
    assert cli.main(["extract", "--data", str(tmp_path / "tiny"), "--model", "stripe", "--out", str(tmp_path / "f.npz")]) == 2
    assert "images of 1x1 pixels" in error_line(capsys)  # on a line of its own, not after a bar


def test_pretrain_refuses_an_out_that_is_a_file_before_any_work(world, tmp_path, capsys, monkeypatch):
    from cion_fast.pretrain import Trainer

    monkeypatch.setattr(Trainer, "_build", lambda self: pytest.fail("built the networks"))
    (tmp_path / "run").write_text("")
    assert cli.main(["pretrain", "--data", str(world / "tracklets"), "--out", str(tmp_path / "run"), "--method", "dino",
                     "--steps", "1", "--arch", "test_resnet"]) == 2
    assert str(tmp_path / "run") in error_line(capsys)


def test_synth_checks_samples_before_rendering_the_world(tmp_path, capsys):
    assert cli.main(["synth", "--out", str(tmp_path / "w"), "--quick", "--samples", str(tmp_path / "no" / "s.png")]) == 2
    assert str(tmp_path / "no" / "s.png") in error_line(capsys)
    assert not (tmp_path / "w").exists()


def test_progress_into_a_log_is_a_few_lines(world, tmp_path, capsys):
    # stderr is not a terminal here (captured): no \r redraws, at most one line per quarter
    assert extract(world, tmp_path / "f.npz", "--model", "stripe") == 0
    err = capsys.readouterr().err
    assert "\r" not in err and 1 <= len(err.splitlines()) <= 4
