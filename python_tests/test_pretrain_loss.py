"""IdentityDINOLoss against a direct float64 re-statement of the formula in docs/ALGORITHMS.md
and DINO's loss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cion_fast.pretrain import IdentityDINOLoss


def formula_float64(student, teacher, center, k, n_crops, student_temp, teacher_temp):
    """The formula of docs/ALGORITHMS.md, loop by loop in numpy float64.

    l_{g,v} = [ mean_{n,i} H(Pt^g(x_ni), Ps^v(x_ni)) + sum_{i!=j} mean_n H(Pt^g(x_ni), Ps^v(x_nj)) ] / (K(K-1)+1),
    L = mean over (g, v != g).
    """
    s = np.asarray(student, dtype=np.float64)
    t = np.asarray(teacher, dtype=np.float64)
    batch = s.shape[0] // n_crops
    identities = batch // k

    def softmax(x):
        e = np.exp(x - x.max())
        return e / e.sum()

    def log_softmax(x):
        x = x - x.max()
        return x - np.log(np.exp(x).sum())

    def row(crop, n, i):
        return crop * batch + n * k + i

    terms = []
    for g in range(2):
        for v in range(n_crops):
            if v == g:
                continue
            same = np.mean([-(softmax((t[row(g, n, i)] - center) / teacher_temp) * log_softmax(s[row(v, n, i)] / student_temp)).sum()
                            for n in range(identities) for i in range(k)])
            other = 0.0
            for i, j in itertools.product(range(k), range(k)):
                if i != j:
                    other += np.mean([-(softmax((t[row(g, n, i)] - center) / teacher_temp) * log_softmax(s[row(v, n, j)] / student_temp)).sum()
                                      for n in range(identities)])
            terms.append((same + other) / (k * (k - 1) + 1))
    return float(np.mean(terms))


def dino_reference(student_output, teacher_output, center, n_crops, student_temp, teacher_temp):
    """DINO's DINOLoss.forward (facebookresearch/dino, main_dino.py), verbatim in structure."""
    student_out = (student_output / student_temp).chunk(n_crops)
    teacher_out = F.softmax((teacher_output - center) / teacher_temp, dim=-1).detach().chunk(2)
    total_loss, n_loss_terms = 0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
            total_loss += loss.mean()
            n_loss_terms += 1
    return total_loss / n_loss_terms


@pytest.mark.parametrize("k, identities, n_crops, out_dim", [(1, 3, 2, 7), (2, 3, 4, 16), (3, 2, 3, 5), (4, 2, 10, 9), (8, 1, 4, 6), (6, 3, 2, 11)])
def test_matches_the_formula_in_float64(k, identities, n_crops, out_dim):
    gen = torch.Generator().manual_seed(k * 100 + identities)
    batch = k * identities
    student = torch.randn(n_crops * batch, out_dim, dtype=torch.float64, generator=gen) * 3
    teacher = torch.randn(2 * batch, out_dim, dtype=torch.float64, generator=gen) * 3
    loss_fn = IdentityDINOLoss(out_dim, n_crops, student_temp=0.1, teacher_temp=0.04)
    center = torch.randn(1, out_dim, dtype=torch.float64, generator=gen) * 0.1
    loss_fn.center.copy_(center)
    stored = loss_fn.center.double().numpy()[0]  # the buffer is float32: the reference uses the stored value
    got = loss_fn(student, teacher, k=k)
    expected = formula_float64(student, teacher, stored, k, n_crops, 0.1, 0.04)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("n_crops, batch", [(2, 5), (10, 4), (4, 1)])
def test_k_equal_one_is_dinos_loss(n_crops, batch):
    gen = torch.Generator().manual_seed(n_crops + batch)
    student = torch.randn(n_crops * batch, 32, generator=gen, requires_grad=True)
    teacher = torch.randn(2 * batch, 32, generator=gen)
    ours = IdentityDINOLoss(32, n_crops, teacher_temp=0.07)
    ours.center.normal_(generator=gen)
    center = ours.center.clone()
    got = ours(student, teacher, k=1)
    expected = dino_reference(student, teacher, center, n_crops, 0.1, 0.07)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    grad_ours, = torch.autograd.grad(got, student)
    grad_ref, = torch.autograd.grad(expected, student)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-5, atol=1e-7)


def test_k_equal_one_also_matches_the_formula_with_the_identity_term_vanishing():
    # With K = 1 there are no i != j pairs and the divisor K(K-1)+1 is 1.
    gen = torch.Generator().manual_seed(5)
    student = torch.randn(3 * 4, 8, dtype=torch.float64, generator=gen)
    teacher = torch.randn(2 * 4, 8, dtype=torch.float64, generator=gen)
    got = IdentityDINOLoss(8, 3)(student, teacher, k=1).item()
    assert got == pytest.approx(formula_float64(student, teacher, np.zeros(8), 1, 3, 0.1, 0.04), rel=1e-10)


def test_centre_update_after_the_loss_and_teacher_temperature_override():
    gen = torch.Generator().manual_seed(7)
    loss_fn = IdentityDINOLoss(16, 4, center_momentum=0.9)
    teacher1 = torch.randn(2 * 6, 16, generator=gen)
    student = torch.randn(4 * 6, 16, generator=gen)
    first = loss_fn(student, teacher1, k=3)
    # The first call used the zero centre (update after the loss).
    zero_centre = formula_float64(student, teacher1, np.zeros(16), 3, 4, 0.1, 0.04)
    assert first.item() == pytest.approx(zero_centre, rel=1e-5)
    torch.testing.assert_close(loss_fn.center, 0.1 * teacher1.mean(0, keepdim=True))
    teacher2 = torch.randn(2 * 6, 16, generator=gen)
    loss_fn(student, teacher2, k=3)
    torch.testing.assert_close(loss_fn.center, 0.9 * 0.1 * teacher1.mean(0, keepdim=True) + 0.1 * teacher2.mean(0, keepdim=True))
    centre = loss_fn.center.clone()
    warm = loss_fn(student, teacher2, k=3, teacher_temp=0.07).item()
    assert warm == pytest.approx(formula_float64(student, teacher2, centre.numpy()[0], 3, 4, 0.1, 0.07), rel=1e-5)


def test_no_gradient_reaches_the_teacher():
    student = torch.randn(2 * 4, 8, requires_grad=True)
    teacher = torch.randn(2 * 4, 8, requires_grad=True)
    IdentityDINOLoss(8, 2)(student, teacher, k=2).backward()
    assert student.grad is not None and teacher.grad is None


def test_batch_not_divisible_by_k_is_a_clear_error():
    loss_fn = IdentityDINOLoss(8, 2)
    with pytest.raises(ValueError, match=r"B=6 is not divisible by k=4"):
        loss_fn(torch.randn(12, 8), torch.randn(12, 8), k=4)
    centre = loss_fn.center.clone()
    assert torch.equal(loss_fn.center, centre)  # nothing updated on error


@pytest.mark.parametrize("student_shape, teacher_shape, message", [
    ((12, 9), (12, 8), "student_output"),
    ((11, 8), (12, 8), "multiple of n_crops"),
    ((12, 8), (10, 8), "teacher_output"),
])
def test_shape_errors_name_the_argument(student_shape, teacher_shape, message):
    with pytest.raises(ValueError, match=message):
        IdentityDINOLoss(8, 2)(torch.randn(*student_shape), torch.randn(*teacher_shape), k=1)


@pytest.mark.parametrize("kwargs", [{"out_dim": 0, "n_crops": 2}, {"out_dim": 4, "n_crops": 1}, {"out_dim": 4, "n_crops": 2, "teacher_temp": 0.0},
                                    {"out_dim": 4, "n_crops": 2, "center_momentum": 1.5}])
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError):
        IdentityDINOLoss(**kwargs)


def test_the_training_step_traces_as_one_graph_for_torch_compile():
    """No graph break (and so no hidden device sync such as a boolean mask's nonzero) in the CION
    step: networks, monitors and loss trace as one graph under torch.compile's tracer."""
    from cion_fast.models import build_backbone
    from cion_fast.pretrain.distill import DistillationMethod, ViewBatch

    method = DistillationMethod(build_backbone("test_resnet"), n_crops=4, out_dim=64, hidden_dim=32, bottleneck_dim=16)
    views = ViewBatch.random(batch=6, n_local=2, global_size=(64, 32), local_size=(32, 16))
    explained = torch._dynamo.explain(method.training_step)(method.student, views, 2, 0.04)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    assert list(method.loss.state_dict()) == ["center"]  # DINO's layout: the pair index is not saved
