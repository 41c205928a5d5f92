"""`cion-fast demo --quick` end to end on a tiny world: the report's schema, real numbers, stages
keyed by their inputs (a changed config re-runs exactly what it changes), and `cion-fast evaluate`
on what it produced."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from cion_fast import cli
from cion_fast.data.synth import WorldConfig
from cion_fast.demo import DemoConfig, run_demo
from cion_fast.denoise import Quality

pytest.importorskip("timm")
pytest.importorskip("matplotlib")  # the reports' figures (the torch extra)

STEPS = 40
TINY_WORLD = dict(identities=30, train_identities=5, eval_identities=20, cameras=3, videos=4)
# Every stage of the demo's default methods with one seed and two rounds.
ALL_STAGES = {"world", "features", "denoise", "pretrain_cion_round1", "features_round2", "denoise_round2", "pretrain_random",
              "pretrain_cion", "evaluate_stripe", "evaluate_random", "evaluate_cion"}
# What depends on the pre-training recipe (random init depends on the backbone and the seed only).
TRAINED = {"pretrain_cion_round1", "features_round2", "denoise_round2", "pretrain_cion", "evaluate_cion"}


def tiny_config(**changes) -> DemoConfig:
    config = DemoConfig.quick()
    return replace(config, **{"world": WorldConfig.quick(**TINY_WORLD), "pretrain": replace(config.pretrain, steps=STEPS),
                              "rounds": 2, **changes})


def ran(messages: list[str]) -> set[str]:
    """The stages a run computed (rather than reused)."""
    return {m[1:m.index("]")] for m in messages if m.startswith("[") and "] done in" in m}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    messages = []
    report = run_demo(out, tiny_config(), progress=False, log=messages.append)
    return out, report, messages


@pytest.fixture
def copy_of_run(demo_run, tmp_path):
    """A copy of the module's run directory: a changed config may recompute in it."""
    out, report, _ = demo_run
    shutil.copytree(out, tmp_path / "run")
    return tmp_path / "run", report


def test_report_schema_and_numbers(demo_run):
    out, report, messages = demo_run
    assert ran(messages) == ALL_STAGES
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert set(report) >= {"denoise", "estimate", "methods", "config", "timings", "verdict"}
    assert set(report["denoise"]) == {"tracklets", "level 1", "level 2", "level 3"}
    rounds = report["denoise_rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert 0 < r["bcubed_f"] <= 1 and r["bcubed_f_std"] == 0.0
        assert set(r["thresholds"]) == {"prune_threshold", "reallocation_threshold", "merge_threshold", "link_threshold"}
        assert 0.5 < r["separation"] <= 1
    assert sum(r["used_by_seeds"] for r in rounds) == 1  # exactly one round's identities train the final CION
    for row in report["denoise"].values():
        assert {f.name for f in dataclasses.fields(Quality)} <= set(row)
        assert 0 < row["bcubed_f"] <= 1
    assert set(report["methods"]) == {"stripe", "random", "cion"}
    for values in report["methods"].values():
        for key in ("mAP", "mINP", "rank1", "rank5", "mAP_rerank", "rank1_rerank", "mAP_camnorm", "rank1_camnorm"):
            assert 0 <= values[key] <= 1, (key, values[key])
        assert 0 < values["mAP"] <= 1
    # The product's claim, on the plain Market-1501 protocol: CION beats the same backbone at its
    # random initialisation (the trainer's, same seed).
    assert report["methods"]["cion"]["mAP"] > report["methods"]["random"]["mAP"]
    assert report["verdict"].startswith("random < cion holds")
    cion = report["methods"]["cion"]
    assert 0 < cion["student_mAP"] <= 1 and cion["seeds"] == [0] and cion["mAP_std"] == 0.0
    curve = report["curves"]["cion"]
    assert curve["steps"][0] == 0 and curve["steps"][-1] == STEPS and len(curve["steps"]) == len(curve["mAP"]) > 2
    assert len(set(curve["mAP"])) > 2  # measured at every checkpoint, not one value repeated
    assert set(report["pretrain"]) == {"cion"} and report["pretrain"]["cion"]["step"] == STEPS
    # The final CION run is the round's own run when the round-1 identities were kept (same recipe,
    # seed and labels): reused, not trained twice.
    used_round = next(r["round"] for r in rounds if r["used_by_seeds"])
    assert bool(report["pretrain"]["cion"]["reused"]) == (used_round == 1)
    marker = json.loads((out / "stages" / "pretrain_cion_round1.json").read_text())  # a moved directory stays whole
    assert marker["result"]["run_dir"] == "pretrain_cion_round1" and not marker["result"]["checkpoint"].startswith("/")
    for name in ("report.md", "report.html", "figures/cmc.png", "figures/cmc_camnorm.png", "figures/denoise_quality.png", "figures/methods.png",
                 "figures/retrieval_grid.png", "figures/pretrain_loss.png", "figures/learning_curves.png"):
        assert (out / name).stat().st_size > 0, name


def test_random_init_is_the_trainers_step_zero(demo_run):
    """`random` is the backbone the trainer builds for the seed (its step-0 checkpoint), not a copy."""
    import torch

    from cion_fast.data import Tracklets
    from cion_fast.models import load_pretrained
    from cion_fast.pretrain import Trainer
    from cion_fast.training import list_checkpoints

    out, _, _ = demo_run
    cion = json.loads((out / "pretrain_cion_round1" / "config.json").read_text())
    frames = np.asarray(Tracklets.load(out / "world" / "tracklets").frames)
    trainer = Trainer(Trainer.config_class.from_dict(cion), frames, np.load(out / "denoise" / "labels.npy"), out / "unused")
    built = trainer.method.teacher.backbone.state_dict()
    [checkpoint] = list_checkpoints(out / "pretrain_random")
    assert int(checkpoint.name.split("-")[-1]) == 0
    loaded = load_pretrained(checkpoint).state_dict()
    assert set(loaded) == set(built) and all(torch.equal(loaded[k], built[k]) for k in built)
    trainer.close()


def test_verdict_covers_every_baseline(demo_run):
    out, report, _ = demo_run
    for name in ("stripe", "random"):
        assert f" {name} " in report["verdict"].split("CION against every baseline")[1]
    below_stripe = report["methods"]["cion"]["mAP"] <= report["methods"]["stripe"]["mAP"]
    assert ("does NOT beat stripe" in report["verdict"]) == below_stripe
    assert report["verdict"] in (out / "report.md").read_text()


def test_the_demo_and_the_cli_write_one_denoise_report(demo_run, tmp_path):
    from cion_fast.denoise.pipeline import LEVEL_NAMES

    out, report, _ = demo_run
    assert cli.main(["denoise", "--tracklets", str(out / "world" / "tracklets"), "--features", str(out / "features.npz"),
                     "--out", str(tmp_path / "labels"), "--no-progress"]) == 0
    by_cli = json.loads((tmp_path / "labels" / "report.json").read_text())
    by_demo = json.loads((out / "denoise" / "report.json").read_text())
    assert set(by_cli) == set(by_demo) >= {"config", "calibration", "estimate", "levels", "quality", "inputs", "seconds"}
    assert set(by_demo["quality"]) == {"tracklets", *LEVEL_NAMES}
    assert by_cli["quality"] == by_demo["quality"] and by_cli["config"] == by_demo["config"]  # same config: same labels


def test_the_report_shows_the_label_free_estimate(demo_run):
    from cion_fast._demo.report import html_page, markdown

    _, report, _ = demo_run
    shown = {**report, "estimate": {"false_merge_rate": 0.0125, "separation": {"centroid_auc": 0.9}}}
    assert "false_merge_rate | 0.0125" in markdown(shown, {}) and "separation.centroid_auc | 0.9" in markdown(shown, {})
    page = html_page(shown, {})
    assert "<td>false_merge_rate</td><td>0.0125</td>" in page and "<td>separation.centroid_auc</td><td>0.9</td>" in page
    assert "estimate (label-free)" not in markdown({**report, "estimate": None}, {})


def test_the_html_report_is_one_page_with_real_tables_and_embedded_figures(demo_run):
    """Parsed as HTML: the headline verdict comes first, every Markdown table is a <table> in a
    scrolling box (a wide table never overflows the page), every figure is embedded (the file alone
    can be mailed) and has a one-line caption."""
    from html.parser import HTMLParser

    from cion_fast._demo.report import headline

    out, report, _ = demo_run

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.images, self.text = [], [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            if tag == "img":
                self.images.append(dict(attrs)["src"])

        def handle_data(self, data):
            self.text.append((len(self.tags), data))

    page = Page()
    page.feed((out / "report.html").read_text())
    assert "pre" not in page.tags and page.tags.count("table") >= 4 and page.tags.count("figcaption") == len(page.images)
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    first_table = page.tags.index("table")
    verdict_at = next(at for at, data in page.text if data == headline(report))
    assert verdict_at <= first_table and page.tags.count("table") == page.tags.count("div")


def test_an_unchanged_config_reuses_every_stage(copy_of_run):
    out, report = copy_of_run
    messages = []
    again = run_demo(out, tiny_config(), progress=False, log=messages.append)
    assert ran(messages) == set()
    assert sum("reused: inputs unchanged" in m for m in messages) == len(ALL_STAGES)
    assert again["methods"] == report["methods"]


def test_a_stage_whose_outputs_are_gone_runs_again(copy_of_run):
    out, report = copy_of_run
    shutil.rmtree(out / "denoise_round2")
    messages = []
    again = run_demo(out, tiny_config(), progress=False, log=messages.append)
    assert "[denoise_round2] recomputing: its outputs are gone" in messages
    used_round = next(r["round"] for r in report["denoise_rounds"] if r["used_by_seeds"])
    assert ran(messages) == {"denoise_round2"} | ({"pretrain_cion", "evaluate_cion"} if used_round == 2 else set())
    assert again["denoise_rounds"] == report["denoise_rounds"]  # denoising is deterministic


def test_more_steps_retrain_and_say_why(copy_of_run):
    """The new user's path: --steps 40, then --steps 80 in the same directory must retrain."""
    out, _ = copy_of_run
    messages = []
    config = tiny_config()
    report = run_demo(out, replace(config, pretrain=replace(config.pretrain, steps=2 * STEPS)), progress=False,
                      log=messages.append)
    assert ran(messages) == TRAINED
    why = [m for m in messages if m.startswith("[pretrain_cion_round1] recomputing:")]
    assert len(why) == 1 and "config.steps 40 -> 80" in why[0]
    assert any(m.startswith("[features_round2] recomputing: after.pretrain_cion_round1") for m in messages)
    assert report["pretrain"]["cion"]["step"] == 2 * STEPS and report["curves"]["cion"]["steps"][-1] == 2 * STEPS


def test_a_changed_denoise_config_reruns_the_rounds_and_what_follows(copy_of_run):
    out, _ = copy_of_run
    messages = []
    config = tiny_config()
    run_demo(out, replace(config, denoise=replace(config.denoise, min_images=6)), progress=False, log=messages.append)
    assert ran(messages) == TRAINED | {"denoise"}


def test_a_changed_evaluation_reruns_only_the_evaluations(copy_of_run):
    out, report = copy_of_run
    messages = []
    changed = run_demo(out, tiny_config(rerank=False), progress=False, log=messages.append)
    assert ran(messages) == {"evaluate_stripe", "evaluate_random", "evaluate_cion"}
    assert "mAP_rerank" not in changed["methods"]["cion"]
    assert changed["methods"]["cion"]["mAP"] == report["methods"]["cion"]["mAP"]


def test_a_changed_world_reruns_everything(copy_of_run):
    out, _ = copy_of_run
    messages = []
    run_demo(out, tiny_config(world=WorldConfig.quick(**TINY_WORLD, seed=1)), progress=False, log=messages.append)
    assert ran(messages) == ALL_STAGES
    assert any(m == "[world] recomputing: config.seed 0 -> 1" for m in messages)


def test_fine_tuning_is_its_own_stage(copy_of_run):
    out, report = copy_of_run
    messages = []
    tuned = run_demo(out, tiny_config(finetune_steps=4), progress=False, log=messages.append)
    assert ran(messages) == {"finetune_random", "finetune_cion"}
    assert {k: v for k, v in tuned["methods"]["cion"].items() if k != "finetuned"} == report["methods"]["cion"]
    messages.clear()
    run_demo(out, tiny_config(finetune_steps=8), progress=False, log=messages.append)
    assert ran(messages) == {"finetune_random", "finetune_cion"}


@pytest.mark.parametrize("exported", [True, False], ids=["exported", "run-directory"])
def test_evaluate_command_on_the_teacher(demo_run, capsys, tmp_path, exported):
    """`evaluate --checkpoint` takes what `export` writes, and the run directory `export` takes."""
    out, report, _ = demo_run
    checkpoint = report["pretrain"]["cion"]["run_dir"]
    if exported:
        assert cli.main(["export", "--checkpoint", checkpoint, "--out", str(tmp_path / "teacher.safetensors")]) == 0
        checkpoint = str(tmp_path / "teacher.safetensors")
    assert cli.main(["evaluate", "--checkpoint", checkpoint, "--data", str(out / "world" / "market"), "--camera-norm",
                     "--size", "64x32"]) == 0
    printed = capsys.readouterr().out
    for label, key in (("plain", "mAP"), ("cam-norm", "mAP_camnorm")):
        line = [row for row in printed.splitlines() if row.startswith(label)][0]
        assert abs(float(line.split()[1]) - 100 * report["methods"]["cion"][key]) < 1e-6 + 0.01


def test_compare_reuses_the_demo_and_adds_every_method(copy_of_run, capsys, monkeypatch):
    out, report = copy_of_run
    tiny = tiny_config()
    monkeypatch.setattr(DemoConfig, "quick", classmethod(lambda cls: tiny))  # --quick: the tiny world of the demo run
    assert cli.main(["compare", "--quick", "--steps", str(STEPS), "--out", str(out), "--no-rerank", "--finetune-steps", "8",
                     "--protocol", "shared"]) == 0
    printed = capsys.readouterr().out
    compared = json.loads((out / "report.json").read_text())
    assert compared["config"]["methods"] == ["stripe", "random", "dino", "tracklet", "cion", "upreid"]
    # The demo's pre-training was reused, not recomputed (the log says so), with its figures.
    assert "[pretrain_cion] reused" in printed and "[pretrain_cion] done in" not in printed
    assert compared["methods"]["cion"]["mAP"] == report["methods"]["cion"]["mAP"]
    assert set(compared["methods"]) == set(compared["config"]["methods"])
    for name in ("dino", "tracklet", "upreid"):
        assert compared["pretrain"][name]["step"] == STEPS
        assert 0 < compared["methods"][name]["mAP"] <= 1
        assert compared["methods"][name] != compared["methods"]["random"]
    for name in ("random", "dino", "tracklet", "cion", "upreid"):  # the paper's protocol beside the frozen one
        tuned = compared["methods"][name]["finetuned"]
        assert 0 < tuned["mAP"] <= 1 and tuned["mAP_std"] == 0.0 and tuned["seeds"] == [0]
    assert "stripe" in compared["methods"] and "finetuned" not in compared["methods"]["stripe"]
    assert "Fine-tuned:" in compared["verdict"] and set(compared["curves"]) == {"dino", "tracklet", "cion", "upreid"}
    assert (out / "figures" / "learning_curves.png").stat().st_size > 0
    assert json.loads((out / "pretrain_upreid" / "config.json").read_text())["multicrop"]["n_local"] == 0
    assert json.loads((out / "pretrain_tracklet" / "config.json").read_text())["method"] == "cion"
    assert "report:" in printed


def test_quick_and_default_demos_never_share_a_directory():
    parse = cli.build_parser().parse_args
    assert cli._demo_out(parse(["demo", "--quick"])) != cli._demo_out(parse(["demo"]))
    assert cli._demo_out(parse(["compare", "--quick", "--out", "x"])) == "x"


def test_the_quick_demo_uses_the_quick_world():
    assert DemoConfig.quick().world == WorldConfig.quick()


def test_compare_rejects_unknown_methods(capsys):
    assert cli.main(["compare", "--quick", "--methods", "cion,moco"]) == 2
    assert "moco" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", "--quick", "--seeds", "0"])
    assert exit_info.value.code == 2
    assert cli.main(["demo", "--quick", "--finetune-steps", "-1"]) == 2


def test_a_typo_fails_before_anything_runs():
    with pytest.raises(TypeError, match="pretrain"):
        DemoConfig(pretrain={"steps": 40})
    with pytest.raises(ValueError, match="stesp"):  # a typo in a recipe read from JSON
        type(DemoConfig.quick().pretrain).from_dict({"stesp": 40})
    with pytest.raises(ValueError, match="steps"):  # a value out of range, when the config is built
        replace(DemoConfig.quick().pretrain, steps=0)


def test_a_new_package_version_recomputes(tmp_path, monkeypatch):
    """Stages computed by another release of the code are not reused: the version is an input."""
    import cion_fast
    from cion_fast._demo.stages import Stages

    said = []
    assert Stages(tmp_path, said.append).run("a", lambda: {"x": 1}, config={"steps": 1}) == {"x": 1}
    assert Stages(tmp_path, said.append).run("a", lambda: {"x": 2}, config={"steps": 1}) == {"x": 1}
    old = cion_fast.__version__
    monkeypatch.setattr(cion_fast, "__version__", "99.0")
    assert Stages(tmp_path, said.append).run("a", lambda: {"x": 3}, config={"steps": 1}) == {"x": 3}
    assert said[-2] == f'[a] recomputing: version "{old}" -> "99.0"'
