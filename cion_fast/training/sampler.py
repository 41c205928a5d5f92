"""Identity-contiguous P x K batches, CION's growing-K schedule, and the step plan of a run.

* :class:`KSchedule`: K as a function of training progress (CION: 2, 4, 6, 8 from 0%, 40%, 60%,
  80% of training).
* :class:`IdentityBatchSampler`: for a given epoch and K, every rank's batches of P identities x K
  images, identity-contiguous (rows ``n*K:(n+1)*K`` are identity n). Deterministic from
  (seed, epoch): no hidden state, so resuming needs only the step.
* :class:`TrainingPlan`: the whole run as epochs ("segments") of known K and length; maps a global
  step to (epoch, K, batch within epoch). K never changes inside an epoch: in ``epochs`` mode an
  epoch's K comes from its epoch fraction (CION's rule); in ``steps`` mode an epoch also ends at the
  step where K changes, so the switch happens exactly at 40/60/80% of the steps.

How an epoch is built (our choices, documented):

1. Each identity's images are shuffled and cut into chunks of K distinct images (the remainder is
   left for another epoch). An identity with fewer than K images gives one chunk: all its images
   once, plus K - c drawn with replacement from them.
2. Chunks are ordered by the key ``(j + u_n) / q_n`` (chunk j of identity n, q_n chunks,
   u_n ~ U(0, 1)): every identity's chunks are spread evenly over the epoch, so an identity
   appears twice in one global batch only when it has more chunks than the epoch has batches.
3. Global batches take P x world_size consecutive chunks; rank r takes chunks ``r*P:(r+1)*P``, so
   every rank holds its own identities. The incomplete last global batch is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["IdentityBatchSampler", "KSchedule", "TrainingPlan"]


@dataclass(frozen=True)
class KSchedule:
    """K (images per identity) as a step function of training progress in [0, 1).

    Args:
        values: K for each phase (CION: (2, 4, 6, 8)); ``(1,)`` is instance level (DINO).
        boundaries: progress where each next phase starts, increasing in (0, 1), one fewer than
            ``values`` (CION: (0.4, 0.6, 0.8)).

    Example:
        >>> s = KSchedule.cion()
        >>> [s.k_at(p) for p in (0.0, 0.39, 0.4, 0.6, 0.8, 0.99)]
        [2, 2, 4, 6, 8, 8]
    """

    values: tuple[int, ...] = (2, 4, 6, 8)
    boundaries: tuple[float, ...] = (0.4, 0.6, 0.8)

    def __post_init__(self):
        values, boundaries = tuple(self.values), tuple(float(b) for b in self.boundaries)
        if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in values):
            raise ValueError(f"values must be positive ints, got {self.values!r}")
        if len(boundaries) != len(values) - 1:
            raise ValueError(f"boundaries needs {len(values) - 1} entries for {len(values)} values, got {self.boundaries!r}")
        if any(not 0.0 < b < 1.0 for b in boundaries) or any(b1 >= b2 for b1, b2 in zip(boundaries, boundaries[1:])):
            raise ValueError(f"boundaries must increase strictly inside (0, 1), got {self.boundaries!r}")
        object.__setattr__(self, "values", tuple(int(v) for v in values))
        object.__setattr__(self, "boundaries", boundaries)

    @classmethod
    def cion(cls) -> "KSchedule":
        """2 / 4 / 6 / 8 over 0-40 / 40-60 / 60-80 / 80-100% of training."""
        return cls()

    @classmethod
    def constant(cls, k: int) -> "KSchedule":
        """The same K for the whole run (``constant(1)``: instance-level DINO).

        Example:
            >>> KSchedule.constant(4).k_at(0.9)
            4
        """
        return cls((k,), ())

    def k_at(self, progress: float) -> int:
        """K for a training progress in [0, 1] (a phase starts at its boundary, inclusive)."""
        return self.values[int(np.searchsorted(np.asarray(self.boundaries), progress, side="right"))]

    def first_step_of_phases(self, total_steps: int) -> list[int]:
        """The first step of each phase after the first: ``ceil(boundary * total_steps)``.

        Example:
            >>> KSchedule.cion().first_step_of_phases(10)
            [4, 6, 8]
        """
        return [int(np.ceil(b * total_steps - 1e-9)) for b in self.boundaries]


class IdentityBatchSampler:
    """P x K identity-contiguous batches of frame indices, per epoch, per rank.

    Args:
        labels: int64 [M] identity per frame (numpy or anything ``np.asarray`` takes); -1 marks a
            dropped frame, other values are identity ids (any non-negative ints).
        batch_size: per-rank batch B = P * K (must be divisible by every K used).
        seed: base seed; the batches of epoch e depend only on (seed, e, K, labels, world_size).
        rank, world_size: this process's place in a DDP run (0 and 1 alone).

    Example:
        >>> labels = np.repeat(np.arange(10), 5)           # 10 identities x 5 frames
        >>> sampler = IdentityBatchSampler(labels, batch_size=8, seed=0)
        >>> batches = sampler.epoch_batches(epoch=0, k=4)  # [n_batches, 8] frame indices
        >>> batches.shape
        (5, 8)
        >>> bool((labels[batches].reshape(5, 2, 4) == labels[batches][:, ::4, None]).all())
        True
    """

    def __init__(self, labels: Any, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-D [M], got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"labels must be integers (int64 identity per frame, -1 = dropped), got {labels.dtype}")
        if labels.size and labels.min() < -1:
            raise ValueError(f"labels must be >= -1 (-1 = dropped), found {int(labels.min())}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        kept = np.flatnonzero(labels >= 0)
        if kept.size == 0:
            raise ValueError("labels drop every frame (all -1): nothing to train on")
        order = kept[np.argsort(labels[kept], kind="stable")]
        self._frames = order  # frame indices grouped by identity, ascending within a group
        _, self._counts = np.unique(labels[order], return_counts=True)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]])
        self.num_frames = int(kept.size)
        self.num_identities = int(self._counts.size)

    def check_k(self, k: int, context: str = "") -> None:
        """ValueError unless the per-rank batch is divisible by K."""
        if self.batch_size % k:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by K={k}{context}: a batch holds P identities x K images"
            )

    def _chunks_per_identity(self, k: int) -> np.ndarray:
        return np.maximum(1, self._counts // k)

    def num_batches(self, k: int) -> int:
        """Batches in an epoch with this K (the same on every rank).

        Example:
            >>> IdentityBatchSampler(np.repeat(np.arange(10), 5), batch_size=8).num_batches(2)
            5
        """
        self.check_k(k)
        return int(self._chunks_per_identity(k).sum()) // (self.batch_size // k * self.world_size)

    def epoch_batches(self, epoch: int, k: int) -> np.ndarray:
        """This rank's batches of one epoch.

        Returns:
            int64 [num_batches(k), batch_size] frame indices (into ``labels``); row b is
            identity-contiguous: ``batch[n*k:(n+1)*k]`` share an identity.
        """
        self.check_k(k)
        rng = np.random.default_rng([self.seed, int(epoch), int(k)])
        counts, starts = self._counts, self._starts
        n_ids = counts.size
        # Shuffle each identity's frames: sort by (identity, random key).
        group = np.repeat(np.arange(n_ids), counts)
        shuffled = self._frames[np.lexsort((rng.random(group.size), group))]
        chunks = self._chunks_per_identity(k)
        chunk_id = np.repeat(np.arange(n_ids), chunks)
        chunk_j = np.arange(chunk_id.size) - np.repeat(np.cumsum(chunks) - chunks, chunks)
        local = chunk_j[:, None] * k + np.arange(k)[None, :]
        count_of_chunk = counts[chunk_id][:, None]
        short = count_of_chunk < k  # fewer than K images: all once, then draws with replacement
        drawn = np.floor(rng.random(local.shape) * count_of_chunk).astype(np.int64)
        local = np.where(short & (local >= count_of_chunk), drawn, local)
        members = shuffled[starts[chunk_id][:, None] + local]
        offset = rng.random(n_ids)
        key = (chunk_j + offset[chunk_id]) / chunks[chunk_id]
        members = members[np.lexsort((rng.random(key.size), key))]
        per_rank = self.batch_size // k
        n_batches = members.shape[0] // (per_rank * self.world_size)
        members = members[: n_batches * per_rank * self.world_size].reshape(n_batches, self.world_size, per_rank * k)
        return np.ascontiguousarray(members[:, self.rank])


@dataclass(frozen=True)
class _Segment:
    epoch: int
    k: int
    start: int
    length: int


# A plan holds one record per epoch, built up front: more epochs than this would take minutes and
# gigabytes before the first step (a typo such as --steps 1000000000000), so they are refused.
MAX_PLAN_EPOCHS = 1_000_000


def _step_phases(sampler: "IdentityBatchSampler", schedule: KSchedule, total: int) -> list[tuple[int, int, int, int]]:
    """(K, first step, end step, epoch length) of each K phase of a ``total``-step plan: K changes
    only at :meth:`KSchedule.first_step_of_phases`, and inside a phase every epoch is full but the
    last. The one description both the size check and the segments are built from."""
    bounds = [0] + [b for b in schedule.first_step_of_phases(total) if 0 < b < total] + [total]
    phases = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi > lo:
            k = schedule.k_at(lo / total)
            phases.append((k, lo, hi, sampler.num_batches(k)))
    return phases


def _check_plan_size(count: int, name: str, value: int) -> None:
    """ValueError naming ``steps``/``epochs`` when a plan would hold more than
    :data:`MAX_PLAN_EPOCHS` epochs."""
    if count > MAX_PLAN_EPOCHS:
        raise ValueError(f"{name}={value:,} makes a plan of {count:,} epochs of this data; at most {MAX_PLAN_EPOCHS:,}")


class TrainingPlan:
    """Every step of a run: which epoch, which K, which batch.

    Exactly one of ``steps`` and ``epochs`` is given. ``epochs`` mode: epoch e uses
    ``K = schedule.k_at(e / epochs)`` and runs the sampler's full epoch. ``steps`` mode: K follows
    the step fraction, and an epoch ends early at a K switch (or at the last step).

    Args:
        sampler: the :class:`IdentityBatchSampler`.
        schedule: the :class:`KSchedule`.
        steps: total optimisation steps.
        epochs: total epochs.

    Raises:
        ValueError: a K that does not divide the batch (checked for every K up front), an epoch
            with no batch (too few identities/images for the batch size), both or neither of
            steps/epochs.

    Example:
        >>> labels = np.repeat(np.arange(40), 8)
        >>> plan = TrainingPlan(IdentityBatchSampler(labels, 24), KSchedule.cion(), steps=10)
        >>> [plan.k_at_step(s) for s in range(10)]
        [2, 2, 2, 2, 4, 4, 6, 6, 8, 8]
        >>> plan.batch(4).shape
        (24,)
    """

    def __init__(self, sampler: IdentityBatchSampler, schedule: KSchedule, steps: int | None = None, epochs: int | None = None):
        if (steps is None) == (epochs is None):
            raise ValueError("give exactly one of steps and epochs")
        for name, value in (("steps", steps), ("epochs", epochs)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for k in schedule.values:
            sampler.check_k(k, context=f" (the K schedule uses {list(schedule.values)}; pick a multiple of all)")
        for k in schedule.values:
            if sampler.num_batches(k) == 0:
                raise ValueError(
                    f"an epoch with K={k} has no complete batch: {sampler.num_identities} identities / "
                    f"{sampler.num_frames} images are too few for batch_size {sampler.batch_size} x {sampler.world_size} ranks"
                )
        self.sampler = sampler
        self.schedule = schedule
        self.mode = "steps" if steps is not None else "epochs"
        segments: list[_Segment] = []
        if epochs is not None:
            _check_plan_size(int(epochs), "epochs", epochs)
            start = 0
            for epoch in range(int(epochs)):
                k = schedule.k_at(epoch / epochs)
                length = sampler.num_batches(k)
                segments.append(_Segment(epoch, k, start, length))
                start += length
            self.total_steps = start
        else:
            total = int(steps)
            phases = _step_phases(sampler, schedule, total)
            _check_plan_size(sum(-(-(hi - lo) // length) for _, lo, hi, length in phases), "steps", steps)
            for k, lo, hi, length in phases:
                segments += [_Segment(len(segments) + i, k, start, min(length, hi - start))
                             for i, start in enumerate(range(lo, hi, length))]
            self.total_steps = total
        self.num_epochs = len(segments)
        self._segments = segments
        self._starts = np.array([s.start for s in segments], dtype=np.int64)
        self._cache: tuple[int, np.ndarray] | None = None

    def _segment(self, step: int) -> _Segment:
        if not 0 <= step < self.total_steps:
            raise ValueError(f"step must be in [0, {self.total_steps}), got {step}")
        return self._segments[int(np.searchsorted(self._starts, step, side="right")) - 1]

    def k_at_step(self, step: int) -> int:
        """K used at ``step``."""
        return self._segment(step).k

    def epoch_at_step(self, step: int) -> int:
        """Epoch (segment) index of ``step``."""
        return self._segment(step).epoch

    def epoch_length(self, epoch: int) -> int:
        """Number of steps in epoch ``epoch``."""
        return self._segments[epoch].length

    def batch(self, step: int) -> np.ndarray:
        """int64 [batch_size] frame indices of this rank's batch at ``step`` (identity-contiguous)."""
        segment = self._segment(step)
        cache = self._cache  # one read: read-ahead threads may call this concurrently
        if cache is None or cache[0] != segment.epoch:
            cache = (segment.epoch, self.sampler.epoch_batches(segment.epoch, segment.k))
            self._cache = cache
        return cache[1][step - segment.start]

    def state(self, step: int) -> dict[str, int]:
        """Where the sampler stands before ``step`` runs (stored in checkpoints and compared on resume).

        Example:
            >>> labels = np.repeat(np.arange(40), 8)
            >>> TrainingPlan(IdentityBatchSampler(labels, 24), KSchedule.cion(), steps=10).state(5)["k"]
            4
        """
        info = {"step": int(step), "total_steps": self.total_steps, "seed": self.sampler.seed,
                "world_size": self.sampler.world_size, "batch_size": self.sampler.batch_size}
        if step < self.total_steps:
            segment = self._segment(step)
            info.update(epoch=segment.epoch, k=segment.k, batch_in_epoch=step - segment.start)
        else:
            info.update(epoch=self.num_epochs, k=self._segments[-1].k, batch_in_epoch=0)
        return info
