"""`cion-fast demo --quick` end to end on a tiny world: the report's schema, real numbers, resumption,
and `cion-fast evaluate` on what it produced."""

from __future__ import annotations

import json

import pytest

from cion_fast import cli
from cion_fast.demo import QUALITY_COLUMNS, DemoConfig, run_demo

pytest.importorskip("timm")

STEPS = 40


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    config = DemoConfig.quick()
    config.world = dict(identities=30, train_identities=5, eval_identities=20, cameras=3, videos=4)
    config.pretrain["steps"] = STEPS
    messages = []
    report = run_demo(out, config, progress=False, log=messages.append)
    return out, report, messages


def test_report_schema_and_numbers(demo_run):
    out, report, _ = demo_run
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert set(report) >= {"denoise", "methods", "config", "timings"}
    assert set(report["denoise"]) == {"tracker", "level1", "level2", "level3"}
    rounds = report["denoise_rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert 0 < r["bcubed_f"] <= 1 and r["bcubed_f_std"] == 0.0
        assert set(r["thresholds"]) == {"prune_threshold", "reallocation_threshold", "merge_threshold", "link_threshold"}
        assert 0.5 < r["separation"] <= 1
    assert sum(r["used_by_seeds"] for r in rounds) == 1  # exactly one round's identities train the final CION
    for row in report["denoise"].values():
        assert set(QUALITY_COLUMNS) <= set(row)
        assert 0 < row["bcubed_f"] <= 1
    assert set(report["methods"]) == {"stripe", "random", "cion"}
    for values in report["methods"].values():
        for key in ("mAP", "mINP", "rank1", "rank5", "mAP_rerank", "rank1_rerank", "mAP_camnorm", "rank1_camnorm"):
            assert 0 <= values[key] <= 1, (key, values[key])
        assert 0 < values["mAP"] <= 1
    # The product's claim, on the plain Market-1501 protocol: CION beats the same backbone at its
    # random initialisation (the trainer's, same seed).
    assert report["methods"]["cion"]["mAP"] > report["methods"]["random"]["mAP"]
    assert report["ordering"].startswith("random < cion holds")
    cion = report["methods"]["cion"]
    assert 0 < cion["student_mAP"] <= 1 and cion["seeds"] == [0] and cion["mAP_std"] == 0.0
    curve = report["curves"]["cion"]
    assert curve["steps"][0] == 0 and curve["steps"][-1] == STEPS and len(curve["steps"]) == len(curve["mAP"]) > 2
    assert curve["mAP"][0] == report["methods"]["random"]["mAP"] and curve["mAP"][-1] == pytest.approx(cion["mAP"])
    assert set(report["timings"]) >= {"world", "features", "denoise", "pretrain_cion_round1", "features_round2",
                                      "denoise_round2", "pretrain_cion", "evaluate_stripe", "evaluate_random", "evaluate_cion"}
    assert set(report["pretrain"]) == {"cion"} and report["pretrain"]["cion"]["step"] == STEPS
    # The final CION run is the round's own run when the round-1 identities were kept (same recipe,
    # seed and labels): reused, not trained twice.
    used_round = next(r["round"] for r in rounds if r["used_by_seeds"])
    assert bool(report["pretrain"]["cion"]["reused"]) == (used_round == 1)
    for name in ("report.md", "report.html", "figures/cmc.png", "figures/cmc_camnorm.png", "figures/denoise_quality.png", "figures/methods.png",
                 "figures/retrieval_grid.png", "figures/pretrain_loss.png", "figures/learning_curves.png"):
        assert (out / name).stat().st_size > 0, name


def test_rerun_skips_finished_stages(demo_run):
    out, report, _ = demo_run
    messages = []
    again = run_demo(out, DemoConfig.quick(), progress=False, log=messages.append)
    skipped = [m for m in messages if "skipped" in m]
    assert len(skipped) == 10
    assert again["methods"] == report["methods"]


def test_evaluate_command_on_the_exported_teacher(demo_run, capsys):
    out, report, _ = demo_run
    exported = out / "teacher.safetensors"
    assert cli.main(["export", "--checkpoint", report["pretrain"]["cion"]["run_dir"], "--out", str(exported)]) == 0
    assert cli.main(["evaluate", "--checkpoint", str(exported), "--data", str(out / "world" / "market"), "--camera-norm",
                     "--size", "64x32"]) == 0
    printed = capsys.readouterr().out
    for label, key in (("plain", "mAP"), ("cam-norm", "mAP_camnorm")):
        line = [row for row in printed.splitlines() if row.startswith(label)][0]
        assert abs(float(line.split()[1]) - 100 * report["methods"]["cion"][key]) < 1e-6 + 0.01


def test_compare_reuses_the_demo_and_adds_every_method(demo_run, capsys):
    out, report, _ = demo_run
    assert cli.main(["compare", "--quick", "--steps", str(STEPS), "--out", str(out), "--no-rerank", "--finetune-steps", "8"]) == 0
    compared = json.loads((out / "report.json").read_text())
    assert compared["config"]["methods"] == ["stripe", "random", "dino", "tracklet", "cion", "upreid"]
    # The demo's stages were reused, not recomputed: identical CION figures.
    assert {k: v for k, v in compared["methods"]["cion"].items() if k != "finetuned"} == report["methods"]["cion"]
    assert set(compared["methods"]) == set(compared["config"]["methods"])
    for name in ("dino", "tracklet", "upreid"):
        assert compared["pretrain"][name]["step"] == STEPS
        assert 0 < compared["methods"][name]["mAP"] <= 1
        assert compared["methods"][name] != compared["methods"]["random"]
    for name in ("random", "dino", "tracklet", "cion", "upreid"):  # the paper's protocol beside the frozen one
        tuned = compared["methods"][name]["finetuned"]
        assert 0 < tuned["mAP"] <= 1 and tuned["mAP_std"] == 0.0 and tuned["seeds"] == [0]
    assert "stripe" in compared["methods"] and "finetuned" not in compared["methods"]["stripe"]
    assert "Fine-tuned:" in compared["ordering"] and set(compared["curves"]) == {"dino", "tracklet", "cion", "upreid"}
    assert (out / "figures" / "learning_curves.png").stat().st_size > 0
    assert (out / "pretrain_upreid" / "config.json").exists()
    assert json.loads((out / "pretrain_upreid" / "config.json").read_text())["multicrop"]["n_local"] == 0
    assert json.loads((out / "pretrain_tracklet" / "config.json").read_text())["method"] == "cion"
    printed = capsys.readouterr().out
    assert "report:" in printed


def test_compare_rejects_unknown_methods(capsys):
    assert cli.main(["compare", "--quick", "--methods", "cion,moco"]) == 2
    assert "moco" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", "--quick", "--seeds", "0"])
    assert exit_info.value.code == 2
    assert cli.main(["demo", "--quick", "--finetune-steps", "-1"]) == 2
