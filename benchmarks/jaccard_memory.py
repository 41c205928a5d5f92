"""Peak memory and time of the cluster-contrast drop-in ``compute_jaccard_distance(..., sparse=True)``
at large N (a hand-run figure for NOTES.md: one call takes minutes at 600k items on 2 cores).

The sparse result stores the pairs whose expanded neighbourhoods overlap, so its size is N times a
count that depends on the data: with identities larger than k1 the neighbourhoods stay inside
them (tens of pairs per row), with smaller ones they spill over several identities (thousands).
``--per-identity`` sets that regime.

    python benchmarks/jaccard_memory.py --items 100000 --per-identity 40
    python benchmarks/jaccard_memory.py --items 600000 --per-identity 40     # ~9 min on 2 cores
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from cion_fast.integrations.clustercontrast import compute_jaccard_distance


def clustered_unit_features(items: int, dim: int, per_identity: int, seed: int = 0) -> np.ndarray:
    """float32 [items, dim]: identities of ~per_identity images, a 0.8 spread around each centre,
    L2-normalised as cluster-contrast's models output them."""
    rng = np.random.default_rng(seed)
    identities = max(2, items // per_identity)
    centres = rng.standard_normal((identities, dim), dtype=np.float32)
    x = centres[rng.integers(0, identities, items)] + 0.8 * rng.standard_normal((items, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--per-identity", type=int, default=40)
    parser.add_argument("--k1", type=int, default=30)
    parser.add_argument("--k2", type=int, default=6)
    args = parser.parse_args()
    features = clustered_unit_features(args.items, args.dim, args.per_identity)
    before = resident_bytes()
    start = time.perf_counter()
    result = compute_jaccard_distance(features, k1=args.k1, k2=args.k2, sparse=True, print_flag=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before  # ru_maxrss: KiB on Linux
    stored = result.data.nbytes + result.indices.nbytes + result.indptr.nbytes
    print(f"{args.items} items, D = {args.dim}, ~{args.per_identity} per identity, k1 = {args.k1}, k2 = {args.k2}: "
          f"{seconds:.1f} s, peak {peak / 2**30:.2f} GiB above the inputs, {result.nnz / args.items:.0f} stored "
          f"pairs per row, result {stored / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
