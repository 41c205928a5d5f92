"""Per-method recipes (issue 29): the search's draw, the validation split, `cion-fast search` and the
second protocol of `cion-fast compare` (each method at its own recipe), on a tiny world."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from cion_fast import cli
from cion_fast._demo.config import PRETRAINED_METHODS
from cion_fast._demo.recipes import (SEARCH_SPACES, TUNED_RECIPES, apply_recipe, check_recipes, draw_configurations,
                                     knobs_to_overrides, load_recipes, validation_split)
from cion_fast.data import ImageSet
from cion_fast.data.synth import WorldConfig
from cion_fast.demo import DemoConfig, run_search
from cion_fast.evaluate.retrieval import evaluate_features

pytest.importorskip("timm")
pytest.importorskip("matplotlib")  # the reports' figures (the torch extra)

STEPS = 8
TINY_WORLD = dict(identities=30, train_identities=5, eval_identities=20, cameras=3, videos=4)


def tiny_config() -> DemoConfig:
    config = DemoConfig.quick()
    return replace(config, world=WorldConfig.quick(**TINY_WORLD), pretrain=replace(config.pretrain, steps=STEPS))


@pytest.mark.parametrize("method", sorted(SEARCH_SPACES))
def test_the_first_configuration_is_the_shared_recipe(method):
    shared = DemoConfig.quick().pretrain
    first = draw_configurations(method, 1, seed=0)[0]
    assert apply_recipe(shared, knobs_to_overrides(first)) == shared
    assert {k: v[0] for k, v in SEARCH_SPACES[method].items()} == first


@pytest.mark.parametrize("method", sorted(SEARCH_SPACES))
def test_the_draw_is_seeded_distinct_and_inside_the_space(method):
    drawn = draw_configurations(method, 6, seed=1000)
    assert drawn == draw_configurations(method, 6, seed=1000)
    assert drawn != draw_configurations(method, 6, seed=1001)
    assert len({json.dumps(d, sort_keys=True) for d in drawn}) == 6
    check_recipes({method: d for d in drawn}, "drawn")
    for knobs in drawn:  # every point builds a valid PretrainConfig for its method
        cfg = apply_recipe(DemoConfig.quick().pretrain, knobs_to_overrides(knobs))
        replace(cfg, method=PRETRAINED_METHODS[method][0])


def test_every_method_gets_the_same_budget():
    sizes = {m: len(draw_configurations(m, 6, seed=3)) for m in SEARCH_SPACES}
    assert set(sizes.values()) == {6}
    with pytest.raises(ValueError, match="count"):
        draw_configurations("dino", 0, seed=0)
    with pytest.raises(ValueError, match="count"):
        draw_configurations("dino", 10**6, seed=0)


def test_the_presets_cover_every_method_that_pre_trains():
    assert set(TUNED_RECIPES) == set(PRETRAINED_METHODS)
    check_recipes(TUNED_RECIPES, "TUNED_RECIPES")
    for method, knobs in TUNED_RECIPES.items():  # complete points of each space: nothing left implicit
        assert set(knobs) == set(SEARCH_SPACES[method])


def test_bad_recipes_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'moco'"):
        check_recipes({"moco": {}}, "recipes")
    with pytest.raises(ValueError, match=r"unknown knob 'lr'"):
        check_recipes({"dino": {"lr": 0.1}}, "recipes")
    with pytest.raises(ValueError, match=r"\['n_local'\] must be one of"):
        check_recipes({"dino": {"n_local": 3}}, "recipes")
    with pytest.raises(TypeError, match="recipes"):
        check_recipes([("dino", {})], "recipes")
    path = tmp_path / "search.json"
    path.write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        load_recipes(str(path))
    path.write_text(json.dumps({"methods": {}}))
    with pytest.raises(ValueError, match="no 'chosen'"):
        load_recipes(str(path))
    with pytest.raises(ValueError, match="cannot read"):
        load_recipes(str(tmp_path / "missing.json"))


def test_the_validation_split_is_the_train_identities_left_one_out():
    rng = np.random.default_rng(0)
    pids = np.array([3, 3, 3, 7, 7, 9, 9, 9, 0, 0])  # 0: Market distractors, left out
    camids = np.array([0, 1, 1, 0, 2, 1, 1, 2, 0, 1])
    train = ImageSet(images=rng.integers(0, 256, (10, 8, 4, 3), dtype=np.uint8), pids=pids, camids=camids)
    images, v_pids, v_cams = validation_split(train)
    assert v_pids.tolist() == [3, 3, 3, 7, 7, 9, 9, 9] and len(images) == 8
    # Features that are the identity itself: every query finds its other-camera matches first and
    # never itself (same camera, same pid: junk), so mAP is exactly 1; shuffled identities are not.
    onehot = np.eye(10, dtype=np.float32)[v_pids]
    assert evaluate_features(onehot, onehot, v_pids, v_pids, v_cams, v_cams, metric="cosine")["mAP"] == 1.0
    wrong = np.eye(10, dtype=np.float32)[rng.permutation(v_pids)]
    assert evaluate_features(wrong, wrong, v_pids, v_pids, v_cams, v_cams, metric="cosine")["mAP"] < 1.0


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    said = []
    found = run_search(out, tiny_config(), ("dino", "cion"), configurations=2, steps=STEPS, progress=False, log=said.append)
    return out, found, said


def test_search_scores_every_configuration_and_chooses_the_best(searched):
    out, found, said = searched
    assert found["budget"] == {"configurations": 2, "steps": STEPS, "seed": 1000}
    for method in ("dino", "cion"):
        rows = found["methods"][method]
        assert [r["index"] for r in rows] == [0, 1] and rows[0]["knobs"] == draw_configurations(method, 1, 1000)[0]
        for r in rows:
            assert 0 < r["validation_mAP"] <= 1 and 0 <= r["validation_rank1"] <= 1
            assert isinstance(r["collapsed"], bool) and r["prototypes"] > 0 and r["seconds"] > 0
        best = max(rows, key=lambda r: r["validation_mAP"])
        assert found["chosen"][method] == best["knobs"]
        config = json.loads((out / f"search_{method}_1" / "config.json").read_text())
        assert config["steps"] == STEPS and config["seed"] == 1000
    assert json.loads((out / "search.json").read_text()) == json.loads(json.dumps(found))
    text = (out / "search.md").read_text()
    assert sum(line.startswith("| **") for line in text.splitlines()) == 2  # one chosen row per method, in bold
    assert (out / "figures" / "search.png").stat().st_size > 0
    assert any(m.startswith("dino: chose") for m in said)


def test_a_search_run_again_reuses_every_configuration(searched):
    out, found, _ = searched
    said = []
    again = run_search(out, tiny_config(), ("dino", "cion"), configurations=2, steps=STEPS, progress=False, log=said.append)
    assert not [m for m in said if "] done in" in m] and again["chosen"] == found["chosen"]


def test_compare_runs_both_protocols_with_the_searched_recipes(searched, capsys, monkeypatch):
    out, found, _ = searched
    tiny = tiny_config()
    monkeypatch.setattr(DemoConfig, "quick", classmethod(lambda cls: tiny))
    # DINO keeps the shared recipe (its runs are reused, not trained twice); CION gets its own.
    chosen = {"dino": draw_configurations("dino", 1, 0)[0], "cion": {"base_lr": 0.02, "n_local": 4}}
    (out / "chosen.json").write_text(json.dumps({**found, "chosen": chosen}))
    assert cli.main(["compare", "--quick", "--out", str(out), "--methods", "random,dino,cion", "--no-rerank",
                     "--finetune-steps", "4", "--recipes", str(out / "chosen.json")]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    tuned = report["tuned"]
    assert tuned["recipes"] == chosen and tuned["own_runs"] == ["cion"]
    assert set(tuned["methods"]) == {"random", "dino", "cion"}
    for shared in ("random", "dino"):  # no recipe of its own: the shared protocol's row
        assert tuned["methods"][shared] == report["methods"][shared]
    assert not (out / "pretrain_dino_tuned").exists() and "[pretrain_dino_tuned]" not in printed
    assert 0 < tuned["methods"]["cion"]["mAP"] <= 1 and "finetuned" in tuned["methods"]["cion"]
    assert tuned["methods"]["cion"] != report["methods"]["cion"]
    config = json.loads((out / "pretrain_cion_tuned" / "config.json").read_text())
    assert config["steps"] == STEPS and config["seed"] == 0  # the comparison's seed, the shared budget
    assert (config["base_lr"], config["multicrop"]["n_local"]) == (0.02, 4)
    assert isinstance(report["pretrain"]["cion_tuned"]["collapsed"], bool)
    assert report["timings"]["pretrain_cion_tuned"] > 0 and "finetune_cion_tuned" in report["timings"]
    assert "each method at its own recipe" in printed and tuned["verdict"].startswith("random")
    page = (out / "report.md").read_text()
    assert "One shared recipe for every method:" in page and "## Each method at its own recipe" in page
    assert "| dino | views light, n_local 2, teacher 0.04, center_momentum 0.9, base_lr 0.01 (the shared recipe: its runs above) |" in page
    assert "pre-training run ended collapsed" in page or "COLLAPSED" in page


def test_cli_errors_of_the_search_and_the_protocols(capsys, tmp_path):
    assert cli.main(["compare", "--quick", "--protocol", "shared", "--recipes", "x.json"]) == 2
    assert "--recipes needs" in capsys.readouterr().err
    assert cli.main(["compare", "--quick", "--out", str(tmp_path), "--recipes", str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err
    assert cli.main(["search", "--quick", "--out", str(tmp_path), "--methods", "random"]) == 2
    assert "random" in capsys.readouterr().err
    assert cli.main(["search", "--quick", "--out", str(tmp_path), "--configs", "200"]) == 2
    assert "configurations must be in [1, 162] (dino's search space holds 162 points), got 200" in capsys.readouterr().err
    assert not (tmp_path / "world").exists()  # refused before any work
    assert cli.main(["search", "--quick", "--out", str(tmp_path), "--seed", "-1"]) == 2
    assert "seed must be >= 0" in capsys.readouterr().err and not (tmp_path / "world").exists()
    (tmp_path / "partial.json").write_text(json.dumps({"chosen": {"dino": {"base_lr": 0.02}}}))
    assert cli.main(["compare", "--quick", "--out", str(tmp_path), "--recipes", str(tmp_path / "partial.json")]) == 2
    assert "recipes has no recipe for tracklet, cion, upreid" in capsys.readouterr().err
    assert not (tmp_path / "world").exists()  # before the shared protocol ran, not after it
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["search", "--configs", "0"])
    assert exit_info.value.code == 2
