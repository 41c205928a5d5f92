"""Public kernels. Every function accepts numpy arrays, torch tensors (CPU/CUDA) and cupy arrays,
and returns results in the caller's framework on the caller's device (see DESIGN.md)."""

from cion_fast.ops.multicrop import MultiCropConfig, MultiCropResult, RaggedImages, multicrop
from cion_fast.ops.rank_metrics import RankResult, evaluate_rank, evaluate_rank_from_features

__all__ = [
    "RankResult",
    "evaluate_rank",
    "evaluate_rank_from_features",
    "MultiCropConfig",
    "MultiCropResult",
    "RaggedImages",
    "multicrop",
]
