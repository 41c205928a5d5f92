"""Public kernels. Every function accepts numpy arrays, torch tensors (CPU/CUDA) and cupy arrays,
and returns results in the caller's framework on the caller's device (docs/PROTOCOLS.md, "The array
contract").

Also the input checks the kernels share, public for callers that validate the same inputs before
their own work (the denoising does): :func:`as_offsets` (ragged offsets), :func:`as_sorted_video_ids`
(video ids in order) and :func:`check_device_supported` (CUDA arrays need a CUDA build).
"""

from cion_fast.ops._extension import check_device_supported
from cion_fast.ops._ragged import as_offsets, as_sorted_video_ids
from cion_fast.ops.k_reciprocal import (
    GraphRerank,
    jaccard_distance,
    k_reciprocal_rerank,
    k_reciprocal_rerank_from_distances,
    k_reciprocal_rerank_from_graph,
)
from cion_fast.ops.multicrop import IMAGENET_MEAN, IMAGENET_STD, MultiCropConfig, MultiCropResult, RaggedImages, multicrop
from cion_fast.ops.rank_metrics import RankResult, evaluate_rank, evaluate_rank_cuhk03, evaluate_rank_from_features
from cion_fast.ops.sliding_range_link import connected_components, sliding_range_link
from cion_fast.ops.tracklet_prune import tracklet_prune
from cion_fast.ops.tracklet_similarity import tracklet_similarity

__all__ = [
    "RankResult",
    "evaluate_rank",
    "evaluate_rank_cuhk03",
    "evaluate_rank_from_features",
    "connected_components",
    "sliding_range_link",
    "tracklet_prune",
    "tracklet_similarity",
    "GraphRerank",
    "jaccard_distance",
    "k_reciprocal_rerank",
    "k_reciprocal_rerank_from_distances",
    "k_reciprocal_rerank_from_graph",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MultiCropConfig",
    "MultiCropResult",
    "RaggedImages",
    "multicrop",
    "as_offsets",
    "as_sorted_video_ids",
    "check_device_supported",
]
