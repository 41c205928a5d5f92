"""CION's identity-guided self-distillation loss (DINO's loss when K = 1).

Defined in ``docs/ALGORITHMS.md``, "Identity-guided self-distillation". Notation: a per-rank batch
holds P identities x K images, identity-contiguous (row ``n*K + i`` of every crop chunk is image i
of identity n), B = P*K. Student probabilities ``P_s^v = softmax(s_v / student_temp)`` for each of
the C crops v; teacher probabilities ``P_t^g = softmax((t_g - c) / teacher_temp)`` for the 2 global
crops g (no gradient).
With H(p, q) = -sum p log q, for each teacher crop g and student crop v != g::

    l_{g,v} = [ mean_{n,i} H(P_t^g(x_{n,i}), P_s^v(x_{n,i}))
                + sum_{i != j} mean_n H(P_t^g(x_{n,i}), P_s^v(x_{n,j})) ] / (K(K-1) + 1)

and the loss is the mean of l_{g,v} over the 2(C-1) pairs. With K = 1 the second term vanishes
and this is DINO's loss. After the loss, the centre moves towards the batch mean of the teacher
outputs over both global crops and all ranks: ``c <- m c + (1 - m) mean(t)`` (all-reduce under DDP).
"""

from __future__ import annotations


import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["IdentityDINOLoss"]


class IdentityDINOLoss(nn.Module):
    """Identity-guided DINO loss with a centred, sharpened teacher.

    Args:
        out_dim: width D of the head outputs.
        n_crops: number of student crops C (2 global + local ones), >= 2.
        student_temp: student softmax temperature (0.1).
        teacher_temp: teacher softmax temperature (0.04); ``forward`` may override it per step
            (temperature warm-up).
        center_momentum: m of the centre update (0.9).

    Buffers:
        center: float32 [1, D] on the module's device, zeros at start (DINO's layout, so an
            official ``dino_loss`` state dict loads).

    Example:
        >>> loss_fn = IdentityDINOLoss(out_dim=16, n_crops=4)
        >>> student = torch.randn(4 * 6, 16, requires_grad=True)  # 4 crops x (3 identities x 2 images)
        >>> teacher = torch.randn(2 * 6, 16)
        >>> loss = loss_fn(student, teacher, k=2)
        >>> loss.backward(); loss.ndim, student.grad.shape
        (0, torch.Size([24, 16]))
    """

    def __init__(self, out_dim: int, n_crops: int, student_temp: float = 0.1, teacher_temp: float = 0.04, center_momentum: float = 0.9):
        super().__init__()
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"out_dim must be a positive int, got {out_dim!r}")
        if isinstance(n_crops, bool) or not isinstance(n_crops, int) or n_crops < 2:
            raise ValueError(f"n_crops must be an int >= 2 (two global crops at least), got {n_crops!r}")
        for name, value in (("student_temp", student_temp), ("teacher_temp", teacher_temp)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum!r}")
        self.out_dim = out_dim
        self.n_crops = n_crops
        self.student_temp = float(student_temp)
        self.teacher_temp = float(teacher_temp)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))
        # The (teacher crop g, student crop v != g) pairs as flat indices into [2, C]: a gather
        # with a fixed index, where a boolean mask would need nonzero (a device sync on a GPU and
        # a graph break under torch.compile). Not part of the state dict (DINO's layout).
        kept = [g * n_crops + v for g in range(2) for v in range(n_crops) if v != g]
        self.register_buffer("kept_pairs", torch.tensor(kept, dtype=torch.int64), persistent=False)

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor, k: int, teacher_temp: float | None = None) -> torch.Tensor:
        """The loss, then the centre update.

        Args:
            student_output: float [n_crops * B, D] head logits, crop-major (rows
                ``v*B:(v+1)*B`` are crop v; crops 0 and 1 are the global crops the teacher saw).
            teacher_output: float [2 * B, D] teacher head logits, crop-major; no gradient flows.
            k: images per identity K (B must be a multiple of K; K = 1 is DINO).
            teacher_temp: overrides the teacher temperature for this call.

        Returns:
            scalar loss (float32, or float64 for float64 inputs) on the inputs' device.

        Raises:
            ValueError: shapes that do not fit, B not divisible by k.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if student_output.ndim != 2 or student_output.shape[1] != self.out_dim:
            raise ValueError(f"student_output must be [n_crops*B, {self.out_dim}], got {tuple(student_output.shape)}")
        if student_output.shape[0] % self.n_crops:
            raise ValueError(f"student_output has {student_output.shape[0]} rows, not a multiple of n_crops={self.n_crops}")
        batch = student_output.shape[0] // self.n_crops
        if tuple(teacher_output.shape) != (2 * batch, self.out_dim):
            raise ValueError(f"teacher_output must be [2*B, D] = [{2 * batch}, {self.out_dim}], got {tuple(teacher_output.shape)}")
        if batch == 0 or batch % k:
            raise ValueError(f"the per-rank batch B={batch} is not divisible by k={k}: each identity needs K images")
        temp = self.teacher_temp if teacher_temp is None else float(teacher_temp)
        dtype = torch.promote_types(student_output.dtype, torch.float32)
        with torch.autocast(device_type=student_output.device.type, enabled=False):
            loss = self._loss(student_output.to(dtype), teacher_output.detach().to(dtype), k, temp)
        self.update_center(teacher_output)
        return loss

    def _loss(self, student: torch.Tensor, teacher: torch.Tensor, k: int, teacher_temp: float) -> torch.Tensor:
        crops, batch = self.n_crops, student.shape[0] // self.n_crops
        identities = batch // k
        log_p_student = F.log_softmax(student / self.student_temp, dim=-1).view(crops, identities, k, -1)
        p_teacher = F.softmax((teacher - self.center.to(teacher.dtype)) / teacher_temp, dim=-1).view(2, identities, k, -1)
        # cross[g, v, n, i, j] = H(P_t^g(x_{n,i}), P_s^v(x_{n,j}))
        cross = -torch.einsum("gnid,vnjd->gvnij", p_teacher, log_p_student)
        same = cross.diagonal(dim1=-2, dim2=-1)  # [2, C, P, K]
        same_mean = same.mean(dim=(-2, -1))
        other_sum = (cross.sum(dim=(-3, -2, -1)) - same.sum(dim=(-2, -1))) / identities
        pair_loss = (same_mean + other_sum) / (k * (k - 1) + 1)  # [2, C]
        return pair_loss.flatten()[self.kept_pairs].sum() / (2 * (crops - 1))

    @torch.no_grad()
    def monitors(self, teacher_output: torch.Tensor, teacher_temp: float | None = None) -> dict[str, torch.Tensor]:
        """Collapse monitors of the centred, sharpened teacher (call before :meth:`forward`, whose
        centre update would otherwise be included).

        Returns (detached 0-d tensors, no host sync):
            ``teacher_entropy``: mean entropy of one image's teacher distribution, in nats; at
                ``ln(out_dim)`` the teacher is uniform (every image gets the same flat target).
            ``prototypes``: exp of the entropy of the batch-mean teacher distribution, the number
                of output dimensions in effective use; a handful means the outputs collapsed
                onto a few prototypes.

        Example:
            >>> import math
            >>> loss_fn = IdentityDINOLoss(out_dim=16, n_crops=2)
            >>> m = loss_fn.monitors(torch.zeros(4, 16))
            >>> round(float(m["teacher_entropy"]), 4) == round(math.log(16), 4), round(float(m["prototypes"]))
            (True, 16)
        """
        temp = self.teacher_temp if teacher_temp is None else float(teacher_temp)
        logits = (teacher_output.detach().float() - self.center) / temp
        log_p = F.log_softmax(logits, dim=-1)
        p = log_p.exp()
        entropy = -(p * log_p).sum(dim=-1).mean()
        mean_p = p.mean(dim=0)
        batch_entropy = -(mean_p * torch.log(mean_p.clamp_min(1e-30))).sum()
        return {"teacher_entropy": entropy, "prototypes": batch_entropy.exp()}

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """``center <- m center + (1 - m) mean(teacher_output)``, the mean over all ranks' rows.

        Args:
            teacher_output: float [2 * B, D] (this rank's teacher logits).
        """
        total = teacher_output.detach().float().sum(dim=0, keepdim=True)
        count = teacher_output.shape[0]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            count *= dist.get_world_size()
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1.0 - self.center_momentum)
