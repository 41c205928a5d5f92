"""UP-ReID pre-training (Yang et al., CVPR 2022): MoCo v2 + intra-identity regularisation.

The authors never released code; everything below is **our** implementation of the paper's
description (docs/ALGORITHMS.md, "UP-ReID"). Design choices, all ours:

* **Base (``nce``)**: MoCo v2 with a query encoder (trained) and a momentum key encoder (EMA,
  momentum 0.999), projection MLP d -> d -> 128, a queue of 65,536 keys, temperature 0.1, InfoNCE.
  We use the *symmetric* form: both global views are queries, each against the key of the other
  view, and both keys are enqueued (all ranks' keys under DDP). The queue is a ring buffer, so its
  size need not divide the batch. Optimiser and schedules are the shared trainer's (AdamW, cosine),
  not MoCo's SGD.
* **Shuffle BN**: the key encoder runs on a random permutation of its batch split into
  ``key_bn_splits`` chunks, so BatchNorm statistics of a key never come from the same batch as its
  query (MoCo shuffles across GPUs; we shuffle within each process, which also works on one GPU).
* **Global consistency (``gc``)**: the key encoder embeds the un-augmented original image (resized
  to the global view size with antialiased bilinear interpolation, normalised like the views);
  each augmented view's normalised query embedding is pulled to it with ``1 - cos(q_v, k_orig)``,
  averaged over views and images.
* **Intrinsic contrastive constraint (``icc``)**: the original image is cut into ``n_stripes``
  horizontal stripes. The multicrop op's crop boxes say where each view came from, so each stripe
  maps to a horizontal band of each view; RoI-align (``torchvision.ops.roi_align``, 1x1 output,
  adaptive sampling) pools that band from the last feature map. A stripe is valid in a view when
  the crop covers at least ``stripe_min_overlap`` of its height (horizontal flips do not matter:
  the bands span the view's full width). Pooled stripes go through a small MLP (C -> C -> 128) and
  are L2-normalised. For a query stripe s of view a (query encoder) the positive is stripe s of
  view b from the key encoder, the negatives the other valid stripes of the same image in view b;
  InfoNCE with temperature 0.1, averaged over anchor stripes valid in both views and over both
  directions (a, b).
* **Random erasing** (LUP's recipe, applied to both views after the multicrop op):
  torchvision's ``RandomErasing`` sampling (p 0.5, scale 0.02-0.33, ratio 0.3-3.3, 10 tries) with
  value 0, i.e. the dataset mean after normalisation. No colour jitter by default.
* **Export**: the query encoder's backbone (``student.backbone.*``), as MoCo transfers it.

Total: ``L = L_nce + gc_weight * L_gc + icc_weight * L_icc`` over the enabled terms.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from cion_fast.models import ProjectionMLP, pooled_features
from cion_fast.ops.multicrop import IMAGENET_MEAN, IMAGENET_STD
from cion_fast.pretrain.views import ViewBatch
from cion_fast.training.augment import random_erasing

__all__ = ["UPReIDEncoder", "UPReIDMethod", "stripe_rois"]


def stripe_rois(boxes: torch.Tensor, source_height: int, view_size: tuple[int, int], n_stripes: int,
                min_overlap: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each horizontal stripe of the original image lies in each view.

    Args:
        boxes: int [V, B, 4] crop boxes (top, left, height, width) in source pixels.
        source_height: H of the source images.
        view_size: (Hv, Wv) of the views.
        n_stripes: S equal-height stripes of the source.
        min_overlap: a stripe is valid in a view when the crop covers at least this share of its
            height.

    Returns:
        (rois float32 [V, B, S, 4] as (x1, y1, x2, y2) in view pixels — a dummy full-view box
        where invalid —, valid bool [V, B, S]).

    Example:
        >>> boxes = torch.tensor([[[0, 0, 64, 32]], [[32, 0, 32, 32]]])  # view 2 = bottom half
        >>> rois, valid = stripe_rois(boxes, 64, (64, 32), n_stripes=4)
        >>> valid.tolist()
        [[[True, True, True, True]], [[False, False, True, True]]]
        >>> rois[1, 0, 2].tolist()
        [0.0, 0.0, 32.0, 32.0]
    """
    hv, wv = view_size
    boxes = boxes.to(torch.float32)
    top, height = boxes[..., 0:1], boxes[..., 2:3]
    edges = torch.arange(n_stripes + 1, device=boxes.device, dtype=torch.float32) * (source_height / n_stripes)
    y0 = torch.maximum(edges[:-1], top)
    y1 = torch.minimum(edges[1:], top + height)
    valid = (y1 - y0) >= min_overlap * (source_height / n_stripes) - 1e-6
    vy0 = torch.where(valid, (y0 - top) * hv / height, torch.zeros_like(y0))
    vy1 = torch.where(valid, (y1 - top) * hv / height, torch.full_like(y1, float(hv)))
    rois = torch.stack([torch.zeros_like(vy0), vy0, torch.full_like(vy0, float(wv)), vy1], dim=-1)
    return rois, valid


class UPReIDEncoder(nn.Module):
    """Backbone + MoCo projection MLP (+ stripe MLP when ICC is on).

    Args:
        backbone: from :func:`cion_fast.models.build_backbone`.
        proj_dim: embedding width (128).
        stripes: build the stripe MLP (C -> C -> proj_dim, C = channels of the last feature map).

    ``forward(x, rois=None)``: x float [N, 3, H, W]; rois float [N, S, 4] (x1, y1, x2, y2) in x's
    pixels. Returns (embeddings float [N, proj_dim], stripe embeddings float [N, S, proj_dim] or
    None), not normalised.

    Example:
        >>> from cion_fast.models import build_backbone
        >>> enc = UPReIDEncoder(build_backbone("resnet18"), proj_dim=16, stripes=True)
        >>> rois = torch.tensor([[0.0, 0.0, 32.0, 32.0], [0.0, 32.0, 32.0, 64.0]]).expand(3, 2, 4)
        >>> emb, st = enc(torch.randn(3, 3, 64, 32), rois)
        >>> emb.shape, st.shape
        (torch.Size([3, 16]), torch.Size([3, 2, 16]))
    """

    def __init__(self, backbone: nn.Module, proj_dim: int = 128, stripes: bool = True):
        super().__init__()
        self.backbone = backbone
        self.projector = ProjectionMLP(backbone.feature_dim, backbone.feature_dim, proj_dim)
        channels = int(backbone.feature_info[-1]["num_chs"]) if getattr(backbone, "feature_info", None) else backbone.feature_dim
        self.stripe_head = ProjectionMLP(channels, channels, proj_dim) if stripes else None

    def forward(self, x: torch.Tensor, rois: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        from torchvision.ops import roi_align

        pooled, fmap = pooled_features(self.backbone, x)
        embeddings = self.projector(pooled)
        if rois is None or self.stripe_head is None:
            return embeddings, None
        n, s = rois.shape[:2]
        index = torch.arange(n, device=x.device, dtype=rois.dtype).repeat_interleave(s)[:, None]
        boxes = torch.cat([index, rois.reshape(n * s, 4).to(rois.dtype)], dim=1)
        scale = fmap.shape[-2] / x.shape[-2]
        pooled_stripes = roi_align(fmap.float(), boxes.float(), output_size=(1, 1), spatial_scale=scale, sampling_ratio=-1, aligned=True)
        return embeddings, self.stripe_head(pooled_stripes.flatten(1).to(pooled.dtype)).view(n, s, -1)


def _info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE; query/positive [N, D] normalised, negatives [D, Q]."""
    pos = (query * positive).sum(dim=1, keepdim=True)
    neg = query @ negatives
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))


class UPReIDMethod(nn.Module):
    """UP-ReID: query encoder (``student``), momentum key encoder (``teacher``), key queue.

    State-dict keys: ``student.*``, ``teacher.*``, ``queue`` [proj_dim, queue_size],
    ``queue_ptr``. See the module docstring for every design choice.

    Args:
        backbone: the query encoder's backbone (the key encoder gets a copy).
        terms: enabled loss terms, a subset of ``("nce", "gc", "icc")``.
        global_size: (H, W) of the global views (the original image is resized to it).
        mean, std: normalisation of the views (3 floats each).
        queue_size, proj_dim, moco_temp, gc_weight, icc_weight, n_stripes, stripe_temp,
        stripe_min_overlap, erase_p, key_bn_splits: see :class:`~cion_fast.pretrain.PretrainConfig`.

    Example:
        >>> from cion_fast.models import build_backbone
        >>> method = UPReIDMethod(build_backbone("resnet18"), global_size=(64, 32), queue_size=32, proj_dim=16)
        >>> views = ViewBatch.random(batch=4, n_local=0, global_size=(64, 32), local_size=(32, 16))
        >>> loss, metrics = method.training_step(method.student, views, k=1)
        >>> sorted(metrics)
        ['gc', 'icc', 'nce']
    """

    export_prefix = "student.backbone."

    def __init__(self, backbone: nn.Module, terms: Sequence[str] = ("nce", "gc", "icc"), global_size: tuple[int, int] = (256, 128),
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 queue_size: int = 65536, proj_dim: int = 128, moco_temp: float = 0.1, gc_weight: float = 1.0,
                 icc_weight: float = 1.0, n_stripes: int = 6, stripe_temp: float = 0.1, stripe_min_overlap: float = 0.5,
                 erase_p: float = 0.5, key_bn_splits: int = 2):
        super().__init__()
        unknown = set(terms) - {"nce", "gc", "icc"}
        if unknown or not terms:
            raise ValueError(f"terms must be a non-empty subset of ('nce', 'gc', 'icc'), got {tuple(terms)!r}")
        self.terms = tuple(terms)
        self.student = UPReIDEncoder(backbone, proj_dim, stripes="icc" in self.terms)
        self.teacher = copy.deepcopy(self.student)
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(proj_dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.global_size = tuple(global_size)
        self.moco_temp, self.gc_weight, self.icc_weight = moco_temp, gc_weight, icc_weight
        self.n_stripes, self.stripe_temp, self.stripe_min_overlap = n_stripes, stripe_temp, stripe_min_overlap
        self.erase_p, self.key_bn_splits = erase_p, key_bn_splits

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """None: there is no DINO head to freeze."""
        return []

    def ema_pairs(self) -> tuple[nn.Module, nn.Module]:
        """(key encoder, query encoder): the key encoder follows the query encoder by EMA."""
        return self.teacher, self.student

    def original_views(self, images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> the un-augmented image resized to the global size, normalised,
        float [B, 3, Hg, Wg] of ``dtype``."""
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=self.global_size, mode="bilinear", antialias=True, align_corners=False)
        return ((x - self.mean) / self.std).to(dtype)

    @torch.no_grad()
    def _keys(self, x: torch.Tensor, rois: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Key encoder over a shuffled batch in ``key_bn_splits`` chunks (shuffle BN), unshuffled."""
        n = x.shape[0]
        order = torch.randperm(n, device=x.device)
        emb_out, stripe_out = None, None
        for part in order.chunk(self.key_bn_splits):
            emb, stripes = self.teacher(x[part], None if rois is None else rois[part])
            if emb_out is None:
                emb_out = emb.new_empty((n,) + emb.shape[1:])
                stripe_out = None if stripes is None else stripes.new_empty((n,) + stripes.shape[1:])
            emb_out[part] = emb
            if stripes is not None:
                stripe_out[part] = stripes
        return emb_out, stripe_out

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        if dist.is_available() and dist.is_initialized():
            gathered = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, keys.contiguous())
            keys = torch.cat(gathered)
        size = self.queue.shape[1]
        keys = keys[-size:]
        index = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[:, index] = keys.t().to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def training_step(self, student: Callable, views: ViewBatch, k: int = 1,
                      teacher_temp: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one batch; the queue is updated.

        Args:
            student: ``self.student`` or its DDP wrapper.
            views: two global views (``local_views`` are ignored) and, for ICC, the crop boxes.
            k, teacher_temp: unused (instance-level method; accepted for the common interface).

        Returns:
            (scalar loss with graph, {term: detached scalar} for every enabled term).
        """
        g = views.global_views
        if g.shape[0] != 2:
            raise ValueError(f"UP-ReID needs exactly 2 global views, got {g.shape[0]}")
        batch = g.shape[1]
        x = g.flatten(0, 1)
        if self.erase_p > 0:
            x = random_erasing(x, p=self.erase_p)
        rois = valid = None
        if "icc" in self.terms:
            if views.boxes is None:
                raise ValueError("the ICC term needs the crop boxes of the views (views.boxes)")
            boxes = views.boxes[:, :2].transpose(0, 1)  # [2, B, 4]
            rois, valid = stripe_rois(boxes, views.images.shape[1], tuple(g.shape[-2:]), self.n_stripes, self.stripe_min_overlap)
            rois = rois.flatten(0, 1)
        q, q_stripes = student(x, rois)
        key_input, key_rois = x, rois
        if "gc" in self.terms:
            key_input = torch.cat([x, self.original_views(views.images, x.dtype)])
            if rois is not None:
                key_rois = torch.cat([rois, rois[:batch]])
        k_all, k_stripes = self._keys(key_input, key_rois)
        q = F.normalize(q.float(), dim=1)
        k_all = F.normalize(k_all.float(), dim=1)
        q1, q2, k1, k2 = q[:batch], q[batch:], k_all[:batch], k_all[batch : 2 * batch]
        metrics: dict[str, torch.Tensor] = {}
        total = q.new_zeros(())
        if "nce" in self.terms:
            negatives = self.queue.clone().float()
            metrics["nce"] = 0.5 * (_info_nce(q1, k2, negatives, self.moco_temp) + _info_nce(q2, k1, negatives, self.moco_temp))
            total = total + metrics["nce"]
        if "gc" in self.terms:
            k_orig = k_all[2 * batch :]
            metrics["gc"] = 1.0 - 0.5 * ((q1 * k_orig).sum(1) + (q2 * k_orig).sum(1)).mean()
            total = total + self.gc_weight * metrics["gc"]
        if "icc" in self.terms:
            metrics["icc"] = self._icc(q_stripes, k_stripes[: 2 * batch], valid, batch)
            total = total + self.icc_weight * metrics["icc"]
        if "nce" in self.terms:
            self._enqueue(torch.cat([k1, k2]))
        return total, {name: value.detach() for name, value in metrics.items()}

    def _icc(self, q_stripes: torch.Tensor, k_stripes: torch.Tensor, valid: torch.Tensor, batch: int) -> torch.Tensor:
        s = self.n_stripes
        qs = F.normalize(q_stripes.float(), dim=-1).view(2, batch, s, -1)
        ks = F.normalize(k_stripes.float(), dim=-1).view(2, batch, s, -1)
        target = torch.arange(s, device=qs.device).repeat(batch)
        total, count = qs.new_zeros(()), qs.new_zeros(())
        for a, b in ((0, 1), (1, 0)):
            logits = torch.einsum("nsd,ntd->nst", qs[a], ks[b]) / self.stripe_temp
            logits = logits.masked_fill(~valid[b][:, None, :], float("-inf"))
            anchors = valid[a] & valid[b]  # [B, S]
            # Rows of non-anchors become all zeros (a finite loss, weighted out below): no host sync.
            logits = torch.where(anchors[:, :, None], logits, torch.zeros_like(logits))
            ce = F.cross_entropy(logits.flatten(0, 1), target, reduction="none")
            total = total + (ce * anchors.flatten()).sum()
            count = count + anchors.sum()
        return total / count.clamp(min=1)
