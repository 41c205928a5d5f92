"""Each pre-training method at its best: the knobs each method's loss has, the draw of a recipe
search (the same number of configurations and steps for every method), the validation split the
search chooses on, and the recipes it chose (:data:`TUNED_RECIPES`).

A recipe is a dict of :class:`cion_fast.pretrain.PretrainConfig` field overrides on top of the
shared small-budget recipe (:data:`cion_fast._demo.config.SMALL_BUDGET_RECIPE`); its ``multicrop``
entry is merged into the shared one field by field (:func:`apply_recipe`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any

import numpy as np

# Colour and blur strength of the views (MultiCropConfig fields), weakest to strongest. "light" is
# the shared recipe's (crops and flips only: in this world colour identifies a person); "dino" is
# DINO's own recipe (its colour jitter, grayscale, blur and solarisation probabilities).
VIEW_STRENGTHS = {
    "light": {"jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": (0.0, 0.0, 0.0), "solarize_p": (0.0, 0.0, 0.0)},
    "medium": {"jitter_p": 0.4, "grayscale_p": 0.1, "blur_p": (0.5, 0.05, 0.25), "solarize_p": (0.0, 0.1, 0.0)},
    "dino": {"jitter_p": 0.8, "grayscale_p": 0.2, "blur_p": (1.0, 0.1, 0.5), "solarize_p": (0.0, 0.2, 0.0)},
}

# Teacher temperature schedules (DINO's warm-up: from 0.04 to the final value over 30 % of the run).
_TEACHER = {
    "0.04": {"teacher_temp": 0.04, "teacher_temp_final": None},
    "0.04->0.07": {"teacher_temp": 0.04, "teacher_temp_final": 0.07, "teacher_temp_warmup": 0.3},
    "0.02->0.04": {"teacher_temp": 0.02, "teacher_temp_final": 0.04, "teacher_temp_warmup": 0.3},
}
# CION's growing-K schedule (K identities' frames per batch share a target); batch 32 divides all.
_K = {"2->4": {"k_values": (2, 4), "k_boundaries": (0.5,)}, "2": {"k_values": (2,), "k_boundaries": ()},
      "4": {"k_values": (4,), "k_boundaries": ()}}

_DISTILLATION = {"views": tuple(VIEW_STRENGTHS), "n_local": (2, 4, 6), "teacher": tuple(_TEACHER),
                 "center_momentum": (0.9, 0.99), "base_lr": (1e-2, 5e-3, 2e-2)}
# Each method's knobs -> candidate values; the first value of every knob is the shared recipe's.
SEARCH_SPACES: dict[str, dict[str, tuple]] = {
    "dino": _DISTILLATION,
    "tracklet": {**_DISTILLATION, "k": tuple(_K)},
    "cion": {**_DISTILLATION, "k": tuple(_K)},
    # UP-ReID sees the two global views only (no n_local); MoCo's temperature and queue, the weights
    # of its global-consistency and intrinsic-contrastive terms.
    "upreid": {"views": tuple(VIEW_STRENGTHS), "moco_temp": (0.1, 0.2, 0.05), "queue_size": (4096, 1024),
               "gc_weight": (1.0, 0.5), "icc_weight": (1.0, 0.5), "base_lr": (1e-2, 5e-3, 2e-2)},
}

# The search's own pre-training seed: not one of the comparison's seeds (0, 1, 2, ...), so a recipe
# is not chosen on the very initialisation it is then compared with.
SEARCH_SEED = 1000

# The recipe the search chose for each method: `cion-fast search --quick --configs 8 --steps 450`
# (the quick world's validation split, 8 configurations of 450 steps per method, seed 1000);
# docs/RECIPES.md has every configuration's figures. Validation mAP of the chosen one against the
# shared recipe (configuration 0): dino 35.2 vs 33.7, tracklet 43.2 vs 41.5, cion 54.4 vs 53.4,
# upreid 43.4 vs 30.6 (UP-ReID alone gains from colour jitter; every distillation run with
# colour jitter ended with a near-uniform teacher at this budget).
TUNED_RECIPES: dict[str, dict[str, Any]] = {
    "dino": {"views": "light", "n_local": 4, "teacher": "0.04", "center_momentum": 0.9, "base_lr": 0.005},
    "tracklet": {"views": "light", "n_local": 2, "teacher": "0.04", "center_momentum": 0.9, "base_lr": 0.02, "k": "2->4"},
    "cion": {"views": "light", "n_local": 4, "teacher": "0.04", "center_momentum": 0.9, "base_lr": 0.02, "k": "2"},
    "upreid": {"views": "medium", "moco_temp": 0.1, "queue_size": 4096, "gc_weight": 1.0, "icc_weight": 1.0, "base_lr": 0.01},
}


def validation_split(train: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The validation split of a labelled train ImageSet: every image of its identities queries
    all the others (leave one out). The Market rule makes same-camera matches junk, the query
    itself included, so each query's positives are its identity's images from other cameras.
    Using every train identity (not a part) keeps the selection's noise low on small worlds; the
    held-out query/gallery identities are never seen by a search.

    Returns:
        (uint8 images [n, H, W, 3], pids int64 [n], camids int64 [n]) of the identities' images.

    Example:
        >>> from cion_fast.data import ImageSet
        >>> train = ImageSet(images=np.zeros((4, 8, 4, 3), np.uint8), pids=[1, 1, 2, 0], camids=[0, 1, 0, 1])
        >>> [a.tolist() for a in validation_split(train)[1:]]
        [[1, 1, 2], [0, 1, 0]]
    """
    kept = train.subset(train.identity_mask)
    return kept.load_images(), kept.pids, kept.camids


def knobs_to_overrides(knobs: dict[str, Any]) -> dict[str, Any]:
    """PretrainConfig overrides of a point of a search space (named schedules expanded).

    Example:
        >>> knobs_to_overrides({"views": "light", "n_local": 4, "base_lr": 0.02})["multicrop"]["n_local"]
        4
        >>> knobs_to_overrides({"teacher": "0.04->0.07", "k": "2"})["k_values"]
        (2,)
    """
    overrides: dict[str, Any] = {}
    multicrop: dict[str, Any] = {}
    for knob, value in knobs.items():
        if knob == "views":
            multicrop.update(VIEW_STRENGTHS[value])
        elif knob == "n_local":
            multicrop["n_local"] = value
        elif knob == "teacher":
            overrides.update(_TEACHER[value])
        elif knob == "k":
            overrides.update(_K[value])
        else:
            overrides[knob] = value
    return {**overrides, **({"multicrop": multicrop} if multicrop else {})}


def draw_configurations(method: str, count: int, seed: int, name: str = "count") -> list[dict[str, Any]]:
    """``count`` distinct points of ``method``'s search space: the shared recipe first (every
    knob at its first value), then points drawn uniformly without replacement (seeded, so a search
    is reproducible). Every method gets the same ``count``: the same tuning budget. ``name``:
    how a ValueError calls ``count``.

    Example:
        >>> points = draw_configurations("dino", 4, seed=0)
        >>> len(points), points[0]["views"], len({json.dumps(p, sort_keys=True) for p in points})
        (4, 'light', 4)
    """
    space = SEARCH_SPACES[method]
    grid = list(itertools.product(*space.values()))
    if not 1 <= count <= len(grid):
        raise ValueError(f"{name} must be in [1, {len(grid)}] ({method}'s search space holds {len(grid)} points), got {count}")
    order = np.random.default_rng([seed, sorted(SEARCH_SPACES).index(method)]).permutation(np.arange(1, len(grid)))
    return [dict(zip(space, grid[i])) for i in [0, *order[: count - 1].tolist()]]


def apply_recipe(base: Any, recipe: dict[str, Any]) -> Any:
    """``base`` (a PretrainConfig) with ``recipe``'s overrides; ``multicrop`` merged field by field.

    Example:
        >>> from cion_fast._demo.config import _pretrain
        >>> cfg = apply_recipe(_pretrain(), knobs_to_overrides({"views": "dino", "base_lr": 0.02}))
        >>> cfg.base_lr, cfg.multicrop["jitter_p"], cfg.multicrop["global_size"]
        (0.02, 0.8, (64, 32))
    """
    overrides = dict(recipe)
    multicrop = {**base.multicrop, **overrides.pop("multicrop", {})}
    return dataclasses.replace(base, **overrides, multicrop=multicrop)


def describe(knobs: dict[str, Any]) -> str:
    """One line for a table.

    Example:
        >>> describe({"views": "dino", "base_lr": 0.02})
        'views dino, base_lr 0.02'
    """
    return ", ".join(f"{k} {v}" for k, v in knobs.items())


def check_recipes(recipes: Any, name: str) -> dict[str, dict[str, Any]]:
    """``recipes`` (method -> knobs) checked against :data:`SEARCH_SPACES`: TypeError for a
    non-dict, ValueError naming ``name`` and the first unknown method, knob or value.

    Example:
        >>> check_recipes({"dino": {"views": "strong"}}, "recipes")
        Traceback (most recent call last):
        ...
        ValueError: recipes['dino']['views'] must be one of ('light', 'medium', 'dino'), got 'strong'
    """
    if not isinstance(recipes, dict):
        raise TypeError(f"{name} must be a dict of method -> knobs, got {type(recipes).__name__}")
    for method, knobs in recipes.items():
        if method not in SEARCH_SPACES:
            raise ValueError(f"{name} names an unknown method {method!r} (known: {', '.join(SEARCH_SPACES)})")
        if not isinstance(knobs, dict):
            raise TypeError(f"{name}[{method!r}] must be a dict of knob -> value, got {type(knobs).__name__}")
        for knob, value in knobs.items():
            space = SEARCH_SPACES[method]
            if knob not in space:
                raise ValueError(f"{name}[{method!r}] has an unknown knob {knob!r} (known: {', '.join(space)})")
            if value not in space[knob]:
                raise ValueError(f"{name}[{method!r}][{knob!r}] must be one of {space[knob]}, got {value!r}")
    return recipes


def load_recipes(path: str) -> dict[str, dict[str, Any]]:
    """The ``chosen`` recipes of a search's ``search.json`` (``cion-fast search``), checked.

    Raises:
        ValueError: the file is not a search result (named), or names unknown knobs.
    """
    from cion_fast._io import read_json

    found = read_json(path, "recipes")
    if not isinstance(found, dict) or "chosen" not in found:
        raise ValueError(f"{path} is not a recipe search's search.json (no 'chosen' entry)")
    return check_recipes(found["chosen"], f"{path}: chosen")
