"""P x K identity sampler, CION's growing-K schedule and the step plan; the optimisation schedules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cion_fast.pretrain import (IdentityBatchSampler, KSchedule, TrainingPlan, clip_gradients, cosine_schedule, ema_update,
                                param_groups)


def uneven_labels(seed=0):
    """Identity n has n + 1 frames (1..20), shuffled, plus dropped frames (-1)."""
    labels = np.concatenate([np.repeat(np.arange(20), np.arange(1, 21)), -np.ones(7, dtype=np.int64)])
    return labels[np.random.default_rng(seed).permutation(labels.size)]


def test_k_schedule_phases_and_boundaries():
    s = KSchedule.cion()
    assert [s.k_at(p) for p in (0.0, 0.3999, 0.4, 0.5999, 0.6, 0.7999, 0.8, 1.0)] == [2, 2, 4, 4, 6, 6, 8, 8]
    assert s.first_step_of_phases(100) == [40, 60, 80]
    assert s.first_step_of_phases(7) == [3, 5, 6]  # ceil(2.8), ceil(4.2), ceil(5.6)
    assert KSchedule.constant(1).k_at(0.99) == 1
    for values, boundaries in [((2, 4), ()), ((2, 4), (0.0,)), ((2, 4, 6), (0.6, 0.4)), ((0,), ())]:
        with pytest.raises(ValueError):
            KSchedule(values, boundaries)


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_batches_are_identity_contiguous_and_never_use_dropped_frames(k):
    labels = uneven_labels()
    sampler = IdentityBatchSampler(labels, batch_size=8, seed=1)
    batches = sampler.epoch_batches(epoch=0, k=k)
    assert batches.shape == (sampler.num_batches(k), 8) and batches.dtype == np.int64
    groups = labels[batches].reshape(batches.shape[0], 8 // k, k)
    assert (groups == groups[:, :, :1]).all()
    assert (labels[batches] >= 0).all()


def test_identities_with_fewer_than_k_images_are_covered_with_replacement():
    labels = uneven_labels()
    sampler = IdentityBatchSampler(labels, batch_size=16, seed=2)
    k = 8
    seen = set()
    for epoch in range(4):
        batches = sampler.epoch_batches(epoch, k)
        for group in batches.reshape(-1, k):
            identity = labels[group[0]]
            count = int((labels == identity).sum())
            if count < k:
                # all its images, the rest drawn again from them
                assert set(group.tolist()) == set(np.flatnonzero(labels == identity).tolist())
            else:
                assert len(set(group.tolist())) == k  # K distinct images
            seen.add(int(identity))
    assert seen == set(range(20))  # the 1-image identity too


def test_epochs_are_deterministic_from_seed_and_epoch():
    labels = uneven_labels()
    a = IdentityBatchSampler(labels, 8, seed=3)
    b = IdentityBatchSampler(labels, 8, seed=3)
    assert np.array_equal(a.epoch_batches(5, 2), b.epoch_batches(5, 2))
    assert not np.array_equal(a.epoch_batches(5, 2), a.epoch_batches(6, 2))
    assert not np.array_equal(a.epoch_batches(5, 2), IdentityBatchSampler(labels, 8, seed=4).epoch_batches(5, 2))


def test_ddp_ranks_get_disjoint_identity_groups_of_one_global_batch():
    labels = np.repeat(np.arange(40), 8)
    ranks = [IdentityBatchSampler(labels, 8, seed=0, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].num_batches(4) == ranks[1].num_batches(4) == 40 * 2 // 4
    b0, b1 = ranks[0].epoch_batches(0, 4), ranks[1].epoch_batches(0, 4)
    for x, y in zip(b0, b1):
        assert not set(x.tolist()) & set(y.tolist())
    frames = np.concatenate([b0.ravel(), b1.ravel()])
    assert np.unique(frames).size == frames.size  # every chunk used once


def test_plan_switches_k_exactly_at_40_60_80_percent_of_steps():
    labels = np.repeat(np.arange(30), 10)
    plan = TrainingPlan(IdentityBatchSampler(labels, 24), KSchedule.cion(), steps=50)
    ks = [plan.k_at_step(s) for s in range(50)]
    assert ks == [2] * 20 + [4] * 10 + [6] * 10 + [8] * 10
    assert all(plan.epoch_at_step(s) != plan.epoch_at_step(s - 1) for s in (20, 30, 40))  # K changes start an epoch
    state = plan.state(30)
    assert state["k"] == 6 and state["batch_in_epoch"] == 0 and state["step"] == 30
    with pytest.raises(ValueError):
        plan.batch(50)


def test_plan_in_epochs_uses_the_epoch_fraction():
    labels = np.repeat(np.arange(30), 10)
    sampler = IdentityBatchSampler(labels, 24)
    plan = TrainingPlan(sampler, KSchedule.cion(), epochs=10)
    assert [plan.k_at_step(sum(plan.epoch_length(e) for e in range(i))) for i in range(10)] == [2, 2, 2, 2, 4, 4, 6, 6, 8, 8]
    assert plan.total_steps == sum(sampler.num_batches(k) for k in [2, 2, 2, 2, 4, 4, 6, 6, 8, 8])
    first_k4 = sum(plan.epoch_length(e) for e in range(4))
    assert plan.k_at_step(first_k4 - 1) == 2 and plan.k_at_step(first_k4) == 4
    assert np.array_equal(plan.batch(first_k4), sampler.epoch_batches(4, 4)[0])


def test_batch_not_divisible_by_every_k_is_checked_up_front():
    labels = np.repeat(np.arange(30), 10)
    with pytest.raises(ValueError, match=r"batch_size 16 is not divisible by K=6"):
        TrainingPlan(IdentityBatchSampler(labels, 16), KSchedule.cion(), steps=10)
    with pytest.raises(ValueError, match="too few"):
        TrainingPlan(IdentityBatchSampler(np.repeat(np.arange(3), 2), 24), KSchedule.cion(), steps=10)


@pytest.mark.parametrize("labels, error", [(np.full(5, -1), ValueError), (np.array([0, 1, -2]), ValueError), (np.zeros(4, dtype=np.float32), TypeError)])
def test_bad_labels(labels, error):
    with pytest.raises(error):
        IdentityBatchSampler(labels, 2)


def test_cosine_schedules_match_dinos_endpoints():
    total, warm = 100, 10
    lrs = [cosine_schedule(s, total, 1e-3, 1e-6, warmup_steps=warm) for s in range(total)]
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(5e-4) and lrs[warm] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:]))
    assert cosine_schedule(total, total, 1e-3, 1e-6, warmup_steps=warm) == pytest.approx(1e-6)
    assert cosine_schedule(0, total, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine_schedule(50, total, 0.996, 1.0) == pytest.approx(0.998)


def test_weight_decay_only_on_weights_with_two_or_more_dims():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.randn(1, 3, 5, 5))
    decay, no_decay = param_groups(model)
    assert {p.ndim for p in decay["params"]} == {2, 4}
    assert {p.ndim for p in no_decay["params"]} == {1} and no_decay["weight_decay"] == 0.0


def test_clip_is_per_tensor_and_ema_moves_towards_the_student():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([30.0, 40.0]), torch.tensor([0.3, 0.4])
    clip_gradients([a, b], 3.0)
    assert a.grad.norm().item() == pytest.approx(3.0, rel=1e-5)
    assert torch.equal(b.grad, torch.tensor([0.3, 0.4]))  # under the limit: untouched
    teacher, student = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = 0.9 * teacher.weight.detach() + 0.1 * student.weight.detach()
    ema_update(teacher, student, 0.9)
    torch.testing.assert_close(teacher.weight.detach(), expected)


def test_optimizer_step_unscales_before_clipping_and_drops_frozen_gradients():
    from cion_fast.pretrain import optimizer_step

    torch.manual_seed(0)
    big, small, frozen = (torch.nn.Parameter(torch.randn(4)) for _ in range(3))
    start = [p.detach().clone() for p in (big, small, frozen)]
    sgd = torch.optim.SGD([big, small, frozen], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    loss = 50 * big.sum() + 0.01 * (small ** 2).sum() + frozen.sum()
    optimizer_step(loss, sgd, scaler, [big, small, frozen], clip_grad=3.0, frozen=[frozen])
    # true gradient of big: 50 per entry (norm 100) -> clipped to norm 3; small: tiny, untouched
    torch.testing.assert_close(start[0] - big.detach(), torch.full((4,), 1.5))
    torch.testing.assert_close(start[1] - small.detach(), 0.02 * start[1])
    assert torch.equal(frozen.detach(), start[2])
    assert scaler.get_scale() == 2.0**12


def test_a_huge_plan_is_refused_up_front():
    # --steps 1000000000000 used to build one record per epoch for minutes, memory growing.
    from cion_fast.training.sampler import MAX_PLAN_EPOCHS

    sampler = IdentityBatchSampler(np.repeat(np.arange(40), 8), 24)
    with pytest.raises(ValueError, match=r"steps=1,000,000,000,000 makes a plan of [\d,]+ epochs"):
        TrainingPlan(sampler, KSchedule.cion(), steps=10**12)
    with pytest.raises(ValueError, match="epochs="):
        TrainingPlan(sampler, KSchedule.cion(), epochs=MAX_PLAN_EPOCHS + 1)
    assert TrainingPlan(sampler, KSchedule.cion(), steps=10_000).total_steps == 10_000
