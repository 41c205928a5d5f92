"""UP-ReID pieces: stripe geometry from crop boxes, random erasing, the three switchable terms, the queue."""

from __future__ import annotations

import pytest
import torch


from cion_fast.models import build_backbone
from cion_fast.pretrain import UPReIDMethod, ViewBatch, random_erasing, stripe_rois

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_stripes_map_through_the_crop_box():
    # Source height 60, 6 stripes of 10 px. View 0: the whole image; view 1: rows 20..50 (a 30 px crop).
    boxes = torch.tensor([[[0, 0, 60, 30]], [[20, 5, 30, 20]]])
    rois, valid = stripe_rois(boxes, source_height=60, view_size=(90, 40), n_stripes=6)
    assert valid[0, 0].tolist() == [True] * 6
    assert valid[1, 0].tolist() == [False, False, True, True, True, False]
    # Stripe 2 (rows 20..30) is the top third of view 1: rows 0..30 of the 90-row view, full width.
    assert rois[1, 0, 2].tolist() == [0.0, 0.0, 40.0, 30.0]
    assert rois[0, 0, 5].tolist() == pytest.approx([0.0, 75.0, 40.0, 90.0])


def test_partly_covered_stripes_need_the_minimum_overlap():
    boxes = torch.tensor([[[4, 0, 56, 30]]])  # covers 6 of the 10 rows of stripe 0
    _, valid_half = stripe_rois(boxes, 60, (56, 30), 6, min_overlap=0.5)
    _, valid_most = stripe_rois(boxes, 60, (56, 30), 6, min_overlap=0.7)
    assert valid_half[0, 0, 0] and not valid_most[0, 0, 0]


def test_random_erasing_erases_one_fitting_rectangle_at_rate_p():
    torch.manual_seed(0)
    x = torch.ones(2000, 1, 32, 16)
    y = random_erasing(x, p=0.5)
    erased = (y == 0).flatten(1).any(1)
    assert 0.45 < erased.float().mean().item() < 0.55
    area = (y[erased] == 0).flatten(1).float().sum(1) / (32 * 16)
    assert area.min() >= 0.01 and area.max() <= 0.4  # target area 0.02-0.33, sides rounded to pixels
    rows = (y[erased] == 0).any(-1).squeeze(1).int()  # one contiguous band of rows per image
    assert ((rows[:, 1:] - rows[:, :-1]).clamp(min=0).sum(1) <= 1).all()
    assert torch.equal(x, torch.ones_like(x))  # input untouched


def _views(batch=4, seed=0):
    return ViewBatch.random(batch=batch, n_local=0, global_size=(64, 32), local_size=(32, 16), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("terms", [("nce",), ("nce", "gc"), ("nce", "icc"), ("nce", "gc", "icc"), ("gc",), ("icc",)])
def test_each_term_is_switchable_and_has_gradient(terms):
    torch.manual_seed(0)
    method = UPReIDMethod(build_backbone("test_vit", img_size=(64, 32)), terms=terms, global_size=(64, 32), queue_size=24, proj_dim=8)
    loss, metrics = method.training_step(method.student, _views(), k=1)
    assert sorted(metrics) == sorted(terms)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in method.student.backbone.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in method.teacher.parameters())
    assert (method.student.stripe_head is not None) == ("icc" in terms)


def test_queue_is_a_ring_buffer_of_both_views_keys():
    torch.manual_seed(1)
    method = UPReIDMethod(build_backbone("test_vit", img_size=(64, 32)), terms=("nce",), global_size=(64, 32), queue_size=10, proj_dim=8,
                          erase_p=0.0)
    method.training_step(method.student, _views(batch=4), k=1)  # 8 keys
    assert method.queue_ptr.item() == 8
    method.training_step(method.student, _views(batch=4, seed=1), k=1)  # 8 more: wraps around
    assert method.queue_ptr.item() == 6
    torch.testing.assert_close(method.queue.norm(dim=0), torch.ones(10))


def test_icc_ignores_stripes_outside_both_crops():
    torch.manual_seed(2)
    method = UPReIDMethod(build_backbone("test_vit", img_size=(64, 32)), terms=("icc",), global_size=(64, 32), proj_dim=8, erase_p=0.0)
    views = _views(batch=2)
    views.boxes[:, 0] = torch.tensor([0, 0, 16, 32])   # view 1: top quarter of the source
    views.boxes[:, 1] = torch.tensor([48, 0, 16, 32])  # view 2: bottom quarter: no stripe in both
    loss, metrics = method.training_step(method.student, views, k=1)
    assert metrics["icc"].item() == 0.0
    views.boxes[:, 1] = torch.tensor([0, 0, 32, 32])
    _, metrics = method.training_step(method.student, views, k=1)
    assert metrics["icc"].item() > 0.0


def test_bad_terms_and_view_counts():
    with pytest.raises(ValueError, match="terms"):
        UPReIDMethod(build_backbone("test_vit", img_size=(64, 32)), terms=("nce", "xyz"), global_size=(64, 32), queue_size=8)
    method = UPReIDMethod(build_backbone("test_vit", img_size=(64, 32)), global_size=(64, 32), queue_size=8, proj_dim=8)
    views = _views()
    views.global_views = views.global_views[:1]
    with pytest.raises(ValueError, match="2 global views"):
        method.training_step(method.student, views, k=1)
